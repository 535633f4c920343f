"""Datasets as in-memory uint8 tensors, and the federated partitioners.

Datasets are read offline from the data root in the layout torchvision (or LEAF, for FEMNIST)
writes; a missing torchvision dataset is downloaded there by torchvision first, when the machine
is online. Every dataset is checked once loaded (labels in range, the catalog's image shape, a
train split larger than the test split), so a wrong or damaged file is a DataUnavailableError
naming it, never a traceback from deep inside training. On-disk layouts under the root:

- mnist, fashion_mnist, kmnist: <Class>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
  (MNIST, FashionMNIST, KMNIST; IDX files, raw or .gz),
- emnist, emnist_balanced: EMNIST/raw/emnist-{byclass,balanced}-{train,test}-
  {images-idx3,labels-idx1}-ubyte (IDX, raw or .gz; NIST stores the images transposed),
- cifar10: cifar-10-batches-py/{data_batch_1..5,test_batch}; cifar100: cifar-100-python/
  {train,test} (Python pickles: "data" uint8 [N, 3072] channel-major, "labels" / "fine_labels"),
- svhn: svhn/{train,test}_32x32.mat (MATLAB: "X" uint8 [32, 32, 3, N], "y" [N, 1] with 10 for
  the digit 0),
- femnist: femnist/data/{train,test}/*.json (LEAF's JSON, see data/leaf.py).

Partitioners: label-skew `shards` (McMahan et al. 2017), `dirichlet` label proportions
(Hsu et al. 2019), `iid`, and `natural` (one client a writer, for datasets that record writers,
as LEAF does). Every training sample is assigned to exactly one client (with `natural`, every
sample of a picked writer).
"""

from __future__ import annotations

import functools
import gzip
import pickle
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import ConfigError, DataUnavailableError
from ..rng import numpy_generator
from .catalog import DATASETS, DatasetInfo
from .dataset import TensorDataset, normalize  # noqa: F401 - re-exported: data's API
from .files import check_data, femnist_folders, resolve_data_root
from .leaf import load_femnist

@functools.lru_cache(maxsize=4)
def load_dataset(name: str, data_root: str | None = None) -> tuple[TensorDataset, TensorDataset]:
    """(train, test) of a dataset, loaded once per process and checked (see the module's doc)."""
    info = DATASETS[name]
    root = resolve_data_root(data_root).resolve()
    if info.source == "leaf":
        train, test = load_femnist(root, info.num_classes)
        files = {split: [folder] for split, folder in femnist_folders(root).items()}
    else:
        files = check_data(name, data_root)
        train, test = (_read_split(name, info, paths) for paths in files.values())
    _check_loaded(name, info, train, test, files)
    return train, test


def _is_idx(path: Path) -> bool:
    return path.name.endswith(("ubyte", "ubyte.gz"))


def _read_split(name: str, info: DatasetInfo, paths: list[Path]) -> TensorDataset:
    """One split's files as a TensorDataset; any unreadable file is a DataUnavailableError."""
    try:
        if _is_idx(paths[0]):
            images = _read_idx(paths[0], 3)
            labels = _read_idx(paths[1], 1)
            if len(images) != len(labels):
                raise _Malformed(f"{paths[0]} holds {len(images)} images but {paths[1]} holds "
                                 f"{len(labels)} labels")
            images = images[:, None]
            if info.torchvision_class == "EMNIST":
                # NIST stores EMNIST column by column: transposed, a digit lies on its side
                # and mirrored. Upright, it looks like an MNIST digit.
                images = images.transpose(0, 1, 3, 2)
        elif paths[0].suffix == ".mat":
            images, labels = _read_svhn(paths[0])
        else:
            images, labels = _read_cifar(paths)
    except _Malformed as err:
        raise DataUnavailableError(f"dataset {name!r}: {err}") from None
    except Exception as err:  # noqa: BLE001 - pickle, scipy and zlib raise many kinds
        raise DataUnavailableError(
            f"dataset {name!r}: cannot read {', '.join(map(str, paths))} "
            f"({type(err).__name__}: {err}); the file is damaged or not "
            f"{info.torchvision_class}'s format: remove it to download it again") from None
    return TensorDataset(torch.from_numpy(np.ascontiguousarray(images)),
                         torch.from_numpy(np.asarray(labels, dtype=np.int64)))


class _Malformed(Exception):
    """A file that reads but contradicts itself; the message names it."""


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX file (LeCun's MNIST format), raw or gzipped: a big-endian header
    (0, 0, type 0x08, ndim, then ndim uint32 sizes) and the bytes."""
    if path.suffix == ".gz":
        data = bytearray(gzip.decompress(path.read_bytes()))
    else:  # read into a writable buffer: torch.from_numpy needs one, and one copy is enough
        data = bytearray(path.stat().st_size)
        with open(path, "rb") as f:
            f.readinto(data)
    if len(data) < 4 + 4 * ndim or data[:3] != b"\0\0\x08" or data[3] != ndim:
        raise _Malformed(f"{path} is not an unsigned-byte IDX file of {ndim} dimension(s) "
                         f"(header {bytes(data[:4]).hex() or 'empty'})")
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    body = len(data) - 4 - 4 * ndim
    if body != int(np.prod(dims)):
        raise _Malformed(f"{path} claims {' x '.join(map(str, dims))} bytes but holds {body}")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _read_cifar(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Krizhevsky's pickled batches: "data" uint8 [N, 3072] (1024 red, green, blue values each,
    row by row) and "labels" (CIFAR-10) or "fine_labels" (CIFAR-100)."""
    images, labels = [], []
    for path in paths:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        key = "labels" if "labels" in entry else "fine_labels"
        data = np.asarray(entry["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(entry[key]):
            raise _Malformed(f"{path}: 'data' is {data.shape} with {len(entry[key])} labels; "
                             f"expected [N, 3072] and N labels")
        images.append(data.reshape(-1, 3, 32, 32))  # already channel-major: [N, C, H, W]
        labels.append(np.asarray(entry[key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _read_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SVHN's cropped digits: "X" uint8 [32, 32, 3, N] and "y" [N, 1] with 1-10, 10 for the
    digit 0 (mapped to 0, as torchvision does)."""
    import scipy.io

    mat = scipy.io.loadmat(str(path))
    x, y = mat["X"], np.asarray(mat["y"]).astype(np.int64).reshape(-1)
    if x.ndim != 4 or x.shape[3] != len(y):
        raise _Malformed(f"{path}: 'X' is {x.shape} with {len(y)} labels; expected "
                         f"[32, 32, 3, N] and N labels")
    y[y == 10] = 0
    return x.transpose(3, 2, 0, 1), y  # [H, W, C, N] -> [N, C, H, W]


def _check_loaded(name: str, info: DatasetInfo, train: TensorDataset, test: TensorDataset,
                  files: dict[str, list[Path]]) -> None:
    """What every loaded dataset must satisfy, whatever its files claimed."""
    shape = (info.channels, info.image_size, info.image_size)
    for split, data in (("train", train), ("test", test)):
        where = files[split][-1]  # the labels file, the split's one file, or its folder
        if len(data) == 0:
            raise DataUnavailableError(f"dataset {name!r}: no {split} samples in {where}")
        if tuple(data.images.shape[1:]) != shape or data.images.dtype != torch.uint8:
            raise DataUnavailableError(
                f"dataset {name!r}: {split} images in {files[split][0]} are "
                f"{'x'.join(map(str, data.images.shape[1:]))} "
                f"{str(data.images.dtype).removeprefix('torch.')}; expected "
                f"{'x'.join(map(str, shape))} (channels x height x width) uint8")
        labels = data.labels
        outside = torch.unique(labels[(labels < 0) | (labels >= info.num_classes)])
        if len(outside):
            raise DataUnavailableError(
                f"dataset {name!r}: labels out of range 0..{info.num_classes - 1} in {where}: "
                f"found {', '.join(map(str, outside[:5].tolist()))}")
    if len(train) <= len(test):
        raise DataUnavailableError(
            f"dataset {name!r}: the train split ({len(train)} samples, {files['train'][0]}) is "
            f"not larger than the test split ({len(test)} samples, {files['test'][0]}): are "
            f"the train and test files swapped, or one of them truncated?")


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
              classes_per_client: int = 2, alpha: float = 0.5,
              groups: Optional[torch.Tensor] = None) -> list[torch.Tensor]:
    """Split sample indices over clients; every index lands in exactly one client.

    `natural` (needs `groups`, the writer of each sample) gives each client one writer's samples:
    the writers `natural_writers` picks, in their order; the samples of writers not picked
    belong to no client.
    """
    y = labels.numpy()
    rng = numpy_generator(seed, "partition")
    if method == "natural":
        if groups is None or len(groups) != len(y):
            raise ValueError("partition: natural needs the writer of every sample (groups)")
        g = groups.numpy()
        parts = [np.flatnonzero(g == w) for w in natural_writers(groups, num_clients, seed)]
        return [torch.as_tensor(p, dtype=torch.int64) for p in parts]
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
        raise ValueError(f"partition: {method!r} is not allowed; allowed: iid, shards, dirichlet, "
                         f"natural")
    return [torch.as_tensor(np.sort(p), dtype=torch.int64) for p in parts]


def natural_writers(groups: torch.Tensor, num_clients: int, seed: int) -> torch.Tensor:
    """The writers (sorted numbers) of a natural partition's clients, client i the i-th: every
    writer in `groups` when there are num_clients of them, else a seeded sample of num_clients.
    More clients than writers is a ConfigError."""
    writers = np.unique(groups.numpy())
    if num_clients > len(writers):
        raise ConfigError(
            f"num_clients: {num_clients} clients need as many writers (partition natural gives "
            f"each client one writer), but the training data holds {len(writers)} writers; "
            f"allowed: num_clients <= {len(writers)}")
    if num_clients < len(writers):
        writers = np.sort(numpy_generator(seed, "writers").choice(writers, num_clients,
                                                                  replace=False))
    return torch.as_tensor(writers, dtype=torch.int64)


def natural_test_set(test: TensorDataset, writers: torch.Tensor) -> TensorDataset:
    """The test samples of `writers`: LEAF evaluates a federation on the held-out samples of
    its own users (Caldas et al. 2018), so a natural partition tests on its writers' samples."""
    keep = torch.isin(test.groups, writers)
    if not keep.any():
        raise DataUnavailableError(
            "the test files hold no sample of the picked writers: LEAF's -t user split puts "
            "each writer wholly in train or in test; partition natural needs the -t sample "
            "split, where every writer has held-out samples")
    return TensorDataset(test.images[keep], test.labels[keep], test.groups[keep])


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
