"""FEMNIST from LEAF's JSON files (Caldas et al. 2018, "LEAF: A Benchmark for Federated Settings").

LEAF's `./preprocess.sh` (in leaf/data/femnist) writes, for `-t sample`, a train and a test file
for each file of writers it sampled:

    <root>/femnist/data/train/*.json
    <root>/femnist/data/test/*.json

each one JSON object

    {"users": [writer, ...], "num_samples": [n, ...],
     "user_data": {writer: {"x": [[784 floats], ...], "y": [class, ...]}, ...}}

`x` is a 28x28 image flattened row by row; LEAF's data_to_json.py stores each pixel of NIST's
greyscale scan divided by 255, so 1.0 is the white paper and the ink is dark. `y` is 0-9 for the
digits, 10-35 for 'A'-'Z' and 36-61 for 'a'-'z' (EMNIST byclass's order). With `-t sample` every
writer keeps about 90% of its samples in train and the rest in test (`-t user` instead puts each
writer wholly in train or in test).

Pixels are loaded as uint8 255 * (1 - x): ink bright on a black background as in MNIST and
EMNIST, so a convolution's zero padding is background, the normalisation statistics are
comparable across the handwriting datasets, and an EMNIST-trained model sees the same polarity.
Writers are numbered 0.. in the sorted order of their ids over both splits, so one writer has one
number in train and test.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import torch

from ..errors import DataUnavailableError
from .dataset import TensorDataset
from .files import femnist_folders

PIXELS = 28 * 28


def missing_message(root: Path) -> str:
    folders = femnist_folders(root)
    return (f"expected LEAF's JSON files in {folders['train']}/*.json and "
            f"{folders['test']}/*.json. FEMNIST does not come with torchvision: on a connected "
            f"machine clone github.com/TalwalkarLab/leaf, run `./preprocess.sh -s niid --sf 0.05 "
            f"-k 0 -t sample` in leaf/data/femnist (a 5% sample of the writers' data; --sf 1.0 "
            f"for all of it; -t sample keeps every writer in both splits), then copy its "
            f"data/train and data/test folders into {root / 'femnist' / 'data'}")


def load_femnist(root: Path, num_classes: int) -> tuple[TensorDataset, TensorDataset]:
    """(train, test) with `groups` = the writer number of each sample."""
    folders = femnist_folders(root)
    files = {split: sorted(folder.glob("*.json")) if folder.is_dir() else []
             for split, folder in folders.items()}
    empty = [str(folders[s]) for s, f in files.items() if not f]
    if empty:
        raise DataUnavailableError(
            f"dataset 'femnist' is not under {root}: no *.json file in {' or '.join(empty)}; "
            + missing_message(root))
    splits = {split: [_read_file(f, num_classes) for f in paths] for split, paths in files.items()}
    names = sorted({w for parts in splits.values() for _, _, writers, _ in parts for w in writers})
    number = {w: i for i, w in enumerate(names)}
    out = []
    for parts in splits.values():
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        groups = np.concatenate([np.repeat([number[w] for w in p[2]], p[3]).astype(np.int64)
                                 for p in parts])
        out.append(TensorDataset(torch.from_numpy(images).view(-1, 1, 28, 28),
                                 torch.from_numpy(labels), torch.from_numpy(groups)))
    return out[0], out[1]


def _read_file(path: Path, num_classes: int):
    """(uint8 images [N, 784], int64 labels [N], writers, samples per writer) of one file."""
    def bad(what: str) -> DataUnavailableError:
        return DataUnavailableError(f"dataset 'femnist': {path}: {what}")

    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise bad(f"cannot be read as JSON ({err})") from None
    if not isinstance(data, dict) or not {"users", "num_samples", "user_data"} <= set(data):
        raise bad("not a LEAF file: expected an object with 'users', 'num_samples' and "
                  "'user_data'")
    users, counts, user_data = data["users"], data["num_samples"], data["user_data"]
    if (not isinstance(users, list) or not isinstance(counts, list)
            or not isinstance(user_data, dict) or len(users) != len(counts)):
        raise bad("'users' and 'num_samples' must be lists of the same length and 'user_data' "
                  "an object")
    xs, ys = [], []
    for user, count in zip(users, counts):
        entry = user_data.get(user) if isinstance(user, str) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("x"), list) \
                or not isinstance(entry.get("y"), list):
            raise bad(f"writer {user!r} has no 'x' and 'y' lists in 'user_data'")
        if not len(entry["x"]) == len(entry["y"]) == count:
            raise bad(f"writer {user!r} has {len(entry['x'])} images and {len(entry['y'])} "
                      f"labels, but num_samples says {count}")
        xs.append(entry["x"])
        ys.append(entry["y"])
    try:
        x = np.asarray(list(itertools.chain.from_iterable(xs)), dtype=np.float32)
        y = np.asarray(list(itertools.chain.from_iterable(ys)))
    except (TypeError, ValueError) as err:  # ragged rows, strings
        raise bad(f"images must be lists of {PIXELS} numbers and labels integers ({err})") from None
    if len(y) and y.dtype.kind not in "iu":
        raise bad(f"labels must be integers, found {y.dtype} values such as {y.flat[0]!r}")
    x = x.reshape(len(y), -1) if len(y) else np.zeros((0, PIXELS), np.float32)
    if x.shape[1] != PIXELS:
        raise bad(f"images have {x.shape[1]} pixels; FEMNIST's are 28x28 = {PIXELS}")
    if len(x) and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
        raise bad(f"pixel values outside [0, 1] (found {x.min():g}..{x.max():g}); LEAF stores "
                  f"pixel/255")
    outside = np.unique(y[(y < 0) | (y >= num_classes)])
    if len(outside):
        raise bad(f"labels out of range 0..{num_classes - 1}: found "
                  f"{', '.join(map(str, outside[:5].tolist()))}")
    images = np.rint((1.0 - x) * 255.0).astype(np.uint8)  # ink bright, as MNIST (see above)
    return images, y.astype(np.int64), users, np.asarray(counts, dtype=np.int64)
