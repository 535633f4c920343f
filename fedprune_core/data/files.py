"""Where each dataset's files lie under the data root, and fetching the missing ones
(torchvision's datasets, when the machine is online). No torch: the command line checks its
inputs with this before anything else, and before a kernel or a long import starts."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import socket
from pathlib import Path

from ..errors import DataUnavailableError
from .catalog import DATASETS, DatasetInfo

DATA_ROOT_ENV = "FEDPRUNE_DATA_ROOT"


def resolve_data_root(data_root: str | None) -> Path:
    return Path(data_root or os.environ.get(DATA_ROOT_ENV) or "./data").expanduser()


def femnist_folders(root: Path) -> dict[str, Path]:
    return {split: root / "femnist" / "data" / split for split in ("train", "test")}


def check_data(name: str, data_root: str | None = None) -> dict[str, list[Path]]:
    """The dataset's files under the data root, downloaded there first if they are missing
    (torchvision's datasets, when the machine is online); a DataUnavailableError naming the
    root and the files if they cannot be had. Reads nothing: a command checks its inputs with
    it before anything else (its run folder, a long import)."""
    info = DATASETS[name]
    root = resolve_data_root(data_root).resolve()
    if info.source == "leaf":
        folders = femnist_folders(root)
        if not all(folder.is_dir() and any(folder.glob("*.json")) for folder in folders.values()):
            from .leaf import load_femnist

            load_femnist(root, info.num_classes)  # its error says where LEAF's files go
        return {split: [folder] for split, folder in folders.items()}
    files = dataset_files(info, root)
    if any(_find(p) is None for paths in files.values() for p in paths):
        _download(name, info, root, files)
    missing = [str(p) for paths in files.values() for p in paths if _find(p) is None]
    if missing:  # torchvision found an old processed/ cache and downloaded nothing
        raise DataUnavailableError(
            f"dataset {name!r} is not under {root}: missing {', '.join(missing)}; provide "
            f"the files there, or point --data_root / ${DATA_ROOT_ENV} at a folder that "
            f"holds them")
    return {split: [_find(p) for p in paths] for split, paths in files.items()}


def dataset_files(info: DatasetInfo, root: Path) -> dict[str, list[Path]]:
    """The files of each split ("train", "test") a torchvision dataset is read from; for the
    IDX datasets [images, labels] (either may also be there gzipped)."""
    cls = info.torchvision_class
    if cls in ("MNIST", "FashionMNIST", "KMNIST", "EMNIST"):
        raw = root / cls / "raw"
        prefix = {"train": "train", "test": "t10k"}
        if cls == "EMNIST":
            prefix = {s: f"emnist-{info.torchvision_split}-{s}" for s in ("train", "test")}
        return {s: [raw / f"{p}-images-idx3-ubyte", raw / f"{p}-labels-idx1-ubyte"]
                for s, p in prefix.items()}
    if cls == "CIFAR10":
        folder = root / "cifar-10-batches-py"
        return {"train": [folder / f"data_batch_{i}" for i in range(1, 6)],
                "test": [folder / "test_batch"]}
    if cls == "CIFAR100":
        return {s: [root / "cifar-100-python" / s] for s in ("train", "test")}
    if cls == "SVHN":
        return {s: [root / "svhn" / f"{s}_32x32.mat"] for s in ("train", "test")}
    raise ValueError(f"no file layout for {cls}")


def _find(path: Path) -> Path | None:
    """The file, or its gzipped copy (IDX files), or None."""
    gz = path.with_name(path.name + ".gz")
    return path if path.is_file() else gz if path.name.endswith("ubyte") and gz.is_file() else None


def _download(name: str, info: DatasetInfo, root: Path, files: dict[str, list[Path]]) -> None:
    """Let torchvision fetch missing files into the layout `dataset_files` reads."""
    import torchvision

    cls = getattr(torchvision.datasets, info.torchvision_class)
    folder = files["train"][0].parent
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # an offline machine must fail, not hang
    # torchvision creates <root>/<Class>/raw before it looks for the files: a mistyped root
    # must not be left behind as an empty dataset tree.
    new_dir = next((p for p in reversed([folder, *folder.parents]) if not p.exists()), None)
    noise = io.StringIO()  # torchvision prints every URL it tries and each failure
    try:
        with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
            for split, paths in files.items():
                if all(_find(p) is not None for p in paths):
                    continue  # one download often brings both splits (MNIST, CIFAR, EMNIST)
                if info.torchvision_class == "SVHN":
                    cls(root=str(folder), split=split, download=True)
                else:
                    extra = {"split": info.torchvision_split} if info.torchvision_split else {}
                    cls(root=str(root), train=split == "train", download=True, **extra)
    except BaseException as err:  # torchvision raises RuntimeError, URLError, OSError...
        if new_dir is not None:
            shutil.rmtree(new_dir, ignore_errors=True)
        if not isinstance(err, Exception):
            raise
        missing = [str(p) for paths in files.values() for p in paths if _find(p) is None]
        raise DataUnavailableError(
            f"dataset {name!r} is not under {root} and could not be downloaded "
            f"({_why_not(err)}); missing {', '.join(missing)}; allowed: the files there (on "
            f"a connected machine torchvision downloads them on first use), or --data_root / "
            f"${DATA_ROOT_ENV} naming a folder that holds them") from err
    finally:
        socket.setdefaulttimeout(previous_timeout)


def _why_not(err: Exception) -> str:
    """One line for a failed download: the network's own words (torchvision's message lists
    every mirror it tried, one line each), else the error's first line."""
    text = str(err).strip()
    reasons = re.findall(r"<urlopen error ([^>]*)>", text)
    return reasons[-1] if reasons else f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


