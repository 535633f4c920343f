"""Static facts about the supported datasets (no torch import: config uses them).

Papers: MNIST (LeCun et al. 1998), Fashion-MNIST (Xiao et al. 2017), KMNIST (Clanuwat et al.
2018), CIFAR-10 and CIFAR-100 (Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny
Images"), SVHN (Netzer et al. 2011, "Reading Digits in Natural Images with Unsupervised Feature
Learning"), EMNIST (Cohen et al. 2017, "EMNIST: an extension of MNIST to handwritten letters"),
FEMNIST (Caldas et al. 2018, "LEAF: A Benchmark for Federated Settings").

Normalisation statistics (per channel, of training pixels scaled to [0, 1]):
- MNIST family, CIFAR-10/100, SVHN: the commonly published training-set values (CIFAR's std is
  the per-pixel one, not the often-copied 0.2023 batch-averaged figure).
- EMNIST (both splits): 0.1751 / 0.3332, the widely used EMNIST statistics. They describe EMNIST's
  own preprocessing (characters cropped, centred and scaled to a 20x20 box, as MNIST), so they are
  close to MNIST's 0.1307 / 0.3081 but not equal.
- FEMNIST: LEAF's images are NIST's 128x128 character boxes shrunk whole to 28x28 (no crop to
  the character), so characters are smaller and the ink mean lower than EMNIST's. 0.0382 / 0.1644
  is 1 - 0.9618 / 0.1644, the statistics a published LEAF FEMNIST loader (FedLSD's, Lee et al.)
  normalises LEAF's white-background pixels with, mirrored for the ink-bright pixels loaded here
  (x -> 1 - x keeps the std). Not recomputed here: no copy of the full data was at hand.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    torchvision_class: str  # the class in torchvision.datasets ("" when not from torchvision)
    channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]  # per channel, of pixels scaled to [0, 1]
    std: tuple[float, ...]
    train_size: int  # the full training split (an estimate for checks, not a promise)
    source: str = "torchvision"  # who defines the files: "torchvision" or "leaf"
    # Writers in the full dataset, for datasets whose samples carry their writer (a natural
    # federated partition, partition=natural); 0 = no writers.
    writers: int = 0
    torchvision_split: str = ""  # the `split` argument of the torchvision class (EMNIST)


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("MNIST", 1, 28, 10, (0.1307,), (0.3081,), 60_000),
    "fashion_mnist": DatasetInfo("FashionMNIST", 1, 28, 10, (0.2860,), (0.3530,), 60_000),
    "kmnist": DatasetInfo("KMNIST", 1, 28, 10, (0.1918,), (0.3483,), 60_000),
    "cifar10": DatasetInfo("CIFAR10", 3, 32, 10, (0.4914, 0.4822, 0.4465),
                           (0.2470, 0.2435, 0.2616), 50_000),
    # 100 fine classes (the 20 coarse superclasses are not used)
    "cifar100": DatasetInfo("CIFAR100", 3, 32, 100, (0.5071, 0.4865, 0.4409),
                            (0.2673, 0.2564, 0.2762), 50_000),
    # the train split only (73,257 digits; the 531,131 "extra" ones are not used)
    "svhn": DatasetInfo("SVHN", 3, 32, 10, (0.4377, 0.4438, 0.4728),
                        (0.1980, 0.2010, 0.1970), 73_257),
    # byclass: digits, upper- and lower-case letters, the 62 classes of FEMNIST in the same order
    "emnist": DatasetInfo("EMNIST", 1, 28, 62, (0.1751,), (0.3332,), 697_932,
                          torchvision_split="byclass"),
    # balanced: 47 classes (15 letters whose cases look alike merged), 2,400 train images each
    "emnist_balanced": DatasetInfo("EMNIST", 1, 28, 47, (0.1751,), (0.3332,), 112_800,
                                   torchvision_split="balanced"),
    # LEAF's full FEMNIST: 805,263 samples of 3,550 writers, before LEAF's per-writer train/test
    # split (-t sample keeps about 90% for training). A run usually reads a LEAF sample (--sf),
    # far smaller: the size only bounds _check_enough_samples' estimate from above.
    "femnist": DatasetInfo("", 1, 28, 62, (0.0382,), (0.1644,), 805_263, source="leaf",
                           writers=3_550),
}
