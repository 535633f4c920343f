"""Datasets as in-memory uint8 tensors, and the federated partitioners.

Partitioners: label-skew `shards` (McMahan et al. 2017), `dirichlet` label proportions
(Hsu et al. 2019) and `iid`. Every training sample is assigned to exactly one client.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .catalog import DATASETS, DatasetInfo
from ..config import ConfigError
from ..rng import numpy_generator

DATA_ROOT_ENV = "FEDPRUNE_DATA_ROOT"


class DataUnavailableError(RuntimeError):
    """The dataset is neither on disk nor downloadable."""


@dataclass(frozen=True)
class TensorDataset:
    """Images as uint8 [N, C, H, W] and labels as int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def resolve_data_root(data_root: str | None) -> Path:
    return Path(data_root or os.environ.get(DATA_ROOT_ENV) or "./data").expanduser()


@functools.lru_cache(maxsize=4)
def load_dataset(name: str, data_root: str | None = None) -> tuple[TensorDataset, TensorDataset]:
    """(train, test) of a torchvision dataset, loaded once per process."""
    info = DATASETS[name]
    root = resolve_data_root(data_root)
    import torchvision

    cls = getattr(torchvision.datasets, info.torchvision_class)
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # an offline machine must fail, not hang
    # torchvision creates <root>/<Class>/raw before it looks for the files: a mistyped root
    # must not be left behind as an empty dataset tree.
    new_dir = next((p for p in reversed([root, *root.parents]) if not p.exists()), None)
    try:
        splits = [cls(root=str(root), train=train, download=True) for train in (True, False)]
    except BaseException as err:  # torchvision raises RuntimeError, URLError, OSError...
        if new_dir is not None:
            shutil.rmtree(new_dir, ignore_errors=True)
        if not isinstance(err, Exception):
            raise
        raise DataUnavailableError(
            f"dataset {name!r} is not under {root.resolve()} and could not be downloaded "
            f"({type(err).__name__}: {err}). Looked for {root.resolve() / info.torchvision_class}"
            f"/raw (MNIST family) or {root.resolve()} (CIFAR-10). Provide the files there, or "
            f"point --data_root / ${DATA_ROOT_ENV} at a folder that holds them.") from err
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return tuple(_to_tensors(split, info) for split in splits)  # type: ignore[return-value]


def _to_tensors(split, info: DatasetInfo) -> TensorDataset:
    images = torch.as_tensor(np.asarray(split.data))
    if images.ndim == 3:  # MNIST family: [N, H, W]
        images = images.unsqueeze(1)
    else:  # CIFAR: [N, H, W, C]
        images = images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(split.targets), dtype=torch.int64)
    return TensorDataset(images.contiguous(), labels)


def normalize(images: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """uint8 batch -> normalised float32, channels-last (the fast layout for the CNN on CPU)."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in info.std], device=images.device)
    shift = torch.tensor([m / s for m, s in zip(info.mean, info.std)], device=images.device)
    x = images.to(torch.float32, memory_format=torch.channels_last)
    return x.mul_(scale.view(1, -1, 1, 1)).sub_(shift.view(1, -1, 1, 1))


def subsample(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Indices of a stratified, seeded fraction of the samples (all of them at 1.0)."""
    if fraction >= 1.0:
        return torch.arange(len(labels))
    rng = numpy_generator(seed, "subsample")
    y = labels.numpy()
    keep = [rng.permutation(np.flatnonzero(y == c))[: max(1, round(fraction * (y == c).sum()))]
            for c in np.unique(y)]
    return torch.as_tensor(np.sort(np.concatenate(keep)))


def partition(labels: torch.Tensor, method: str, num_clients: int, seed: int, *,
              classes_per_client: int = 2, alpha: float = 0.5) -> list[torch.Tensor]:
    """Split sample indices over clients; every index lands in exactly one client."""
    y = labels.numpy()
    rng = numpy_generator(seed, "partition")
    if len(y) < num_clients:
        raise ConfigError(f"num_clients: {num_clients} clients need at least as many samples "
                         f"({len(y)} available)")
    if method == "iid":
        parts = np.array_split(rng.permutation(len(y)), num_clients)
    elif method == "shards":
        if len(y) < num_clients * classes_per_client:
            raise ConfigError(f"num_clients: {num_clients} clients x {classes_per_client} shards "
                              f"need at least as many samples ({len(y)} available)")
        parts = _shards(y, num_clients, classes_per_client, rng)
    elif method == "dirichlet":
        parts = _dirichlet(y, num_clients, alpha, rng)
    else:
        raise ValueError(f"partition: {method!r} is not allowed; allowed: iid, shards, dirichlet")
    return [torch.as_tensor(np.sort(p), dtype=torch.int64) for p in parts]


def _shards(y: np.ndarray, num_clients: int, per_client: int, rng) -> list[np.ndarray]:
    """Sort by label, cut into num_clients * per_client near-equal shards, deal them out.

    A deal that gives some client two shards of the same (majority) class is redrawn: the
    seed's original allowed that, and dropped the leftover samples. Uniform deals are tried
    first; when many classes per client make a clean uniform deal unlikely, shards are dealt
    layer by layer (the l-th block of label-sorted shards to each client), which keeps a
    client's shards in different label ranges.
    """
    order = np.argsort(y, kind="stable")
    num_shards = num_clients * per_client
    shards = np.array_split(order, num_shards)
    majority = np.array([np.bincount(y[s]).argmax() for s in shards])

    def clean(picks: np.ndarray) -> bool:
        return all(len(set(majority[p])) == per_client for p in picks)

    for _ in range(200):
        picks = rng.permutation(num_shards).reshape(num_clients, per_client)
        if clean(picks):
            break
    else:
        for _ in range(200):
            picks = np.stack([rng.permutation(num_clients) + layer * num_clients
                              for layer in range(per_client)], axis=1)
            if clean(picks):
                break
    return [np.concatenate([shards[s] for s in p]) for p in picks]


def _dirichlet(y: np.ndarray, num_clients: int, alpha: float, rng) -> list[np.ndarray]:
    """Per-class client proportions ~ Dir(alpha); redraw until every client has a sample."""
    for _ in range(1000):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(num_clients, alpha)))[:-1] * len(idx))
            for client, chunk in enumerate(np.split(idx, cuts.astype(int))):
                parts[client].append(chunk)
        out = [np.concatenate(p) for p in parts]
        if min(len(p) for p in out) > 0:
            return out
    raise ConfigError(f"dirichlet_alpha: {alpha} leaves some client without data after 1000 "
                     f"draws; allowed: a larger alpha or fewer clients")


def class_counts(labels: torch.Tensor, parts: list[torch.Tensor], num_classes: int) -> np.ndarray:
    """[num_clients, num_classes] sample counts: the partition as a table."""
    return np.stack([np.bincount(labels[p].numpy(), minlength=num_classes) for p in parts])
