"""Static facts about the supported torchvision datasets (no torch import: config uses them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    torchvision_class: str  # the class in torchvision.datasets
    channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]  # per channel, of pixels scaled to [0, 1]
    std: tuple[float, ...]
    train_size: int


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("MNIST", 1, 28, 10, (0.1307,), (0.3081,), 60_000),
    "fashion_mnist": DatasetInfo("FashionMNIST", 1, 28, 10, (0.2860,), (0.3530,), 60_000),
    "kmnist": DatasetInfo("KMNIST", 1, 28, 10, (0.1918,), (0.3483,), 60_000),
    "cifar10": DatasetInfo("CIFAR10", 3, 32, 10, (0.4914, 0.4822, 0.4465),
                           (0.2470, 0.2435, 0.2616), 50_000),
}
