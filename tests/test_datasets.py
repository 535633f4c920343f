"""The benchmark datasets beyond MNIST, each read from tiny files in its real on-disk format, the
natural (one client a writer) partition, and the checks that turn bad files into clear errors."""

import gzip
import json
import pickle
import socket
import struct

import numpy as np
import pytest
import torch

from fedprune_core.config import ConfigError, ExperimentConfig
from fedprune_core.data.catalog import DATASETS
from fedprune_core.data.loading import (DataUnavailableError, TensorDataset, load_dataset,
                                        natural_test_set, natural_writers, partition)

# An upright, asymmetric 28x28 glyph: an "L" (a bar down the left, a foot to the right at the
# bottom) plus a dot at the top right. Transposed or mirrored it looks different.
GLYPH = np.zeros((28, 28), dtype=np.uint8)
GLYPH[4:24, 6] = 255
GLYPH[23, 6:20] = 255
GLYPH[3, 22] = 200


def write_idx(path, array, gz=False):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_mnist(root, train_n=30, test_n=10, train_labels=None, size=28):
    raw = root / "MNIST" / "raw"
    rng = np.random.default_rng(0)
    for split, n in (("train", train_n), ("t10k", test_n)):
        write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, size, size)))
        labels = np.arange(n) % 10 if split == "t10k" or train_labels is None else train_labels
        write_idx(raw / f"{split}-labels-idx1-ubyte", np.asarray(labels))
    return raw


@pytest.fixture
def offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network is unreachable (test)")
    monkeypatch.setattr(socket.socket, "connect", no_network)


# --- CIFAR-100 --------------------------------------------------------------------------------

def write_cifar100(root, n_train=12, n_test=4, fine=None):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = list(range(90, 90 + n)) if fine is None or split == "test" else fine
        entry = {"filenames": [f"img{i}.png" for i in range(n)], "batch_label": f"{split} batch",
                 "fine_labels": [int(v) % 100 if fine is None else int(v) for v in labels],
                 "coarse_labels": [0] * n,
                 "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        with open(folder / split, "wb") as f:
            pickle.dump(entry, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)],
                     "coarse_label_names": [f"s{i}" for i in range(20)]}, f)
    return folder


def test_cifar100_loads_fine_labels_channel_major(tmp_path):
    folder = write_cifar100(tmp_path)
    train, test = load_dataset("cifar100", str(tmp_path))
    with open(folder / "train", "rb") as f:
        raw = pickle.load(f)
    assert train.images.shape == (12, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == raw["fine_labels"]
    assert max(train.labels.tolist()) == 99 and test.labels.tolist() == [90, 91, 92, 93]
    # the pickle holds 1024 red values row by row, then green, then blue
    assert train.images[5, 1, 2, 3] == raw["data"][5, 1024 + 2 * 32 + 3]
    assert train.groups is None and DATASETS["cifar100"].num_classes == 100


def test_cifar100_label_out_of_range_names_the_file(tmp_path):
    write_cifar100(tmp_path, fine=[0] * 11 + [100])
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("cifar100", str(tmp_path))
    text = str(err.value)
    assert "labels out of range 0..99" in text and "found 100" in text
    assert str(tmp_path / "cifar-100-python" / "train") in text


# --- SVHN -------------------------------------------------------------------------------------

def write_svhn(root, y_train=(1, 2, 10, 10, 5, 9), y_test=(10, 3)):
    import scipy.io

    folder = root / "svhn"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    xs = {}
    for split, y in (("train", y_train), ("test", y_test)):
        x = rng.integers(0, 256, (32, 32, 3, len(y)), dtype=np.uint8)  # [H, W, C, N]
        scipy.io.savemat(folder / f"{split}_32x32.mat",
                         {"X": x, "y": np.asarray(y, dtype=np.uint8).reshape(-1, 1)})
        xs[split] = x
    return xs


def test_svhn_maps_ten_to_zero_and_keeps_orientation(tmp_path):
    xs = write_svhn(tmp_path)
    train, test = load_dataset("svhn", str(tmp_path))
    assert train.images.shape == (6, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [1, 2, 0, 0, 5, 9] and test.labels.tolist() == [0, 3]
    # X[h, w, c, n] is image n's pixel (h, w) of channel c
    assert torch.equal(train.images[4], torch.from_numpy(xs["train"][..., 4]).permute(2, 0, 1))


def test_svhn_label_out_of_range_names_the_file(tmp_path):
    write_svhn(tmp_path, y_train=(1, 2, 11, 4))
    with pytest.raises(DataUnavailableError, match=r"labels out of range 0\.\.9 in .*svhn/"
                                                  r"train_32x32\.mat: found 11"):
        load_dataset("svhn", str(tmp_path))


# --- EMNIST -----------------------------------------------------------------------------------

def write_emnist(root, split, train_labels, test_labels, gz=False):
    raw = root / "EMNIST" / "raw"
    for part, labels in (("train", train_labels), ("test", test_labels)):
        # NIST stores each EMNIST image transposed
        stored = np.stack([GLYPH.T if i == 0 else np.roll(GLYPH, i, axis=1).T
                           for i in range(len(labels))])
        write_idx(raw / f"emnist-{split}-{part}-images-idx3-ubyte", stored, gz=gz)
        write_idx(raw / f"emnist-{split}-{part}-labels-idx1-ubyte", np.asarray(labels), gz=gz)
    return raw


@pytest.mark.parametrize("name, split, top, gz", [("emnist", "byclass", 61, False),
                                                  ("emnist_balanced", "balanced", 46, True)])
def test_emnist_is_held_upright_like_mnist(tmp_path, name, split, top, gz):
    write_emnist(tmp_path, split, [0, 10, 36, top, 5], [top, 1], gz=gz)
    train, test = load_dataset(name, str(tmp_path))
    assert train.images.shape == (5, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [0, 10, 36, top, 5] and test.labels.tolist() == [top, 1]
    assert torch.equal(train.images[0, 0], torch.from_numpy(GLYPH))  # the "L" stands upright
    assert torch.equal(train.images[2, 0], torch.from_numpy(np.roll(GLYPH, 2, axis=1)))
    assert DATASETS[name].num_classes == top + 1


def test_emnist_balanced_rejects_byclass_labels(tmp_path):
    write_emnist(tmp_path, "balanced", [0, 1, 50, 3], [0, 1])
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("emnist_balanced", str(tmp_path))
    assert "labels out of range 0..46" in str(err.value) and "found 50" in str(err.value)
    assert "emnist-balanced-train-labels-idx1-ubyte" in str(err.value)


# --- FEMNIST (LEAF) ---------------------------------------------------------------------------

def leaf_pixels(image_uint8):
    """LEAF's x: NIST's scan (dark ink on white) / 255, row by row."""
    return ((255 - image_uint8.astype(np.float64)) / 255).reshape(-1).tolist()


def write_leaf(root, writers, split_files=2):
    """writers: {name: (train_labels, test_labels)}; written as LEAF's -t sample output, the
    writers spread over `split_files` pairs of files."""
    names = list(writers)
    for split, col in (("train", 0), ("test", 1)):
        folder = root / "femnist" / "data" / split
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(split_files):
            chunk = names[k::split_files]
            user_data = {w: {"x": [leaf_pixels(np.roll(GLYPH, j, axis=0))
                                   for j in range(len(writers[w][col]))],
                             "y": list(writers[w][col])} for w in chunk}
            (folder / f"all_data_{k}_niid_05_keep_0_{split}_9.json").write_text(json.dumps(
                {"users": chunk, "num_samples": [len(writers[w][col]) for w in chunk],
                 "user_data": user_data}))


# writer i writes class i in train and test (so a test label tells whose sample it is)
WRITERS = {f"f{i:04d}_{i % 7:02d}": ([i] * (3 + i % 3), [i] * (1 + i % 2)) for i in range(8)}


def test_femnist_reads_leaf_json_with_ink_bright_and_writer_ids(tmp_path):
    write_leaf(tmp_path, WRITERS)
    train, test = load_dataset("femnist", str(tmp_path))
    assert train.images.shape == (sum(len(a) for a, _ in WRITERS.values()), 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert train.groups.dtype == torch.int64 and len(train.groups) == len(train)
    # LEAF's 1.0 (white paper) becomes 0 and its ink 255: the glyph as MNIST would hold it
    first = int(torch.nonzero(train.labels == 0)[0])
    assert torch.equal(train.images[first, 0], torch.from_numpy(GLYPH))
    # writers numbered in their ids' sorted order, the same number in train and test
    names = sorted(WRITERS)
    for split in (train, test):
        for label, writer in zip(split.labels.tolist(), split.groups.tolist()):
            assert names[writer] == f"f{label:04d}_{label % 7:02d}"
    assert sorted(set(test.groups.tolist())) == list(range(8))
    assert DATASETS["femnist"].source == "leaf" and DATASETS["femnist"].writers == 3550


def test_natural_partition_gives_each_writer_one_client(tmp_path):
    write_leaf(tmp_path, WRITERS)
    train, _ = load_dataset("femnist", str(tmp_path))
    parts = partition(train.labels, "natural", 8, seed=0, groups=train.groups)
    assert torch.equal(torch.sort(torch.cat(parts))[0], torch.arange(len(train)))
    assert [set(train.groups[p].tolist()) for p in parts] == [{w} for w in range(8)]
    # fewer clients: a seeded sample of writers, the same for the same seed
    some = partition(train.labels, "natural", 3, seed=5, groups=train.groups)
    again = partition(train.labels, "natural", 3, seed=5, groups=train.groups)
    assert all(torch.equal(a, b) for a, b in zip(some, again))
    picked = natural_writers(train.groups, 3, seed=5)
    assert [train.groups[p].unique().tolist() for p in some] == [[w] for w in picked.tolist()]
    draws = {tuple(natural_writers(train.groups, 3, seed=s).tolist()) for s in range(6)}
    assert len(draws) > 1
    with pytest.raises(ConfigError, match=r"^num_clients: 9 clients .* holds 8 writers"):
        partition(train.labels, "natural", 9, seed=0, groups=train.groups)
    with pytest.raises(ValueError, match="groups"):
        partition(train.labels, "natural", 3, seed=0)


def test_natural_federation_tests_on_the_picked_writers(tmp_path):
    write_leaf(tmp_path, WRITERS)
    from fedprune_core.run.federation import build_federation

    cfg = ExperimentConfig(dataset="femnist", partition="natural", num_clients=3,
                           clients_per_round=2, data_root=str(tmp_path), progress="off",
                           results_dir=str(tmp_path / "results"), seed=1)
    fed = build_federation(cfg)
    picked = natural_writers(load_dataset("femnist", str(tmp_path))[0].groups, 3, seed=1)
    # writer w wrote class w: each client holds one class, the test set only the picked ones
    assert [c.labels.unique().tolist() for c in fed.client_data] == [[w] for w in picked.tolist()]
    expected = sum(len(WRITERS[sorted(WRITERS)[w]][1]) for w in picked.tolist())
    assert len(fed.test) == expected and set(fed.test.labels.tolist()) == set(picked.tolist())


def test_natural_test_set_without_shared_writers_is_an_error():
    test = TensorDataset(torch.zeros(3, 1, 28, 28, dtype=torch.uint8),
                         torch.zeros(3, dtype=torch.int64), torch.tensor([4, 5, 5]))
    assert len(natural_test_set(test, torch.tensor([5]))) == 2
    with pytest.raises(DataUnavailableError, match="-t sample"):
        natural_test_set(test, torch.tensor([0, 1]))


def test_natural_partition_is_validated_before_loading():
    with pytest.raises(ConfigError) as err:
        ExperimentConfig(dataset="mnist", partition="natural")
    assert str(err.value).startswith("partition:") and "femnist" in str(err.value)
    with pytest.raises(ConfigError, match=r"^num_clients: .*3550"):
        ExperimentConfig(dataset="femnist", partition="natural", num_clients=4000,
                         clients_per_round=10)
    assert ExperimentConfig(dataset="femnist", partition="natural").partition == "natural"


@pytest.mark.parametrize("break_it, expected", [
    (lambda d: d["user_data"]["f0000_00"]["y"].__setitem__(0, 62), "labels out of range 0..61"),
    (lambda d: d["num_samples"].__setitem__(0, 99), "num_samples says 99"),
    (lambda d: d["user_data"]["f0000_00"]["x"][0].__setitem__(5, 2.0), "outside [0, 1]"),
    (lambda d: d["user_data"]["f0000_00"]["x"][0].pop(), "lists of 784 numbers"),
    (lambda d: d.pop("user_data"), "not a LEAF file"),
])
def test_malformed_leaf_files_name_the_file(tmp_path, break_it, expected):
    write_leaf(tmp_path, WRITERS)
    path = tmp_path / "femnist" / "data" / "train" / "all_data_0_niid_05_keep_0_train_9.json"
    data = json.loads(path.read_text())
    break_it(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("femnist", str(tmp_path))
    assert expected in str(err.value) and str(path) in str(err.value)


def test_leaf_file_that_is_not_json(tmp_path):
    write_leaf(tmp_path, WRITERS)
    path = tmp_path / "femnist" / "data" / "test" / "all_data_1_niid_05_keep_0_test_9.json"
    path.write_text('{"users": [')
    with pytest.raises(DataUnavailableError, match="cannot be read as JSON") as err:
        load_dataset("femnist", str(tmp_path))
    assert str(path) in str(err.value)


def test_missing_femnist_says_how_to_make_it(tmp_path):
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("femnist", str(tmp_path / "nothing"))
    text = str(err.value)
    assert str(tmp_path / "nothing" / "femnist" / "data" / "train") in text
    assert "preprocess.sh -s niid --sf 0.05 -k 0 -t sample" in text and "TalwalkarLab/leaf" in text
    assert not (tmp_path / "nothing").exists()


# --- checks every dataset gets ----------------------------------------------------------------

def test_mnist_label_out_of_range_names_the_labels_file(tmp_path):
    raw = write_mnist(tmp_path, train_labels=[1, 2, 11] + [0] * 27)
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("mnist", str(tmp_path))
    assert (f"labels out of range 0..9 in {raw / 'train-labels-idx1-ubyte'}: found 11"
            in str(err.value))


def test_swapped_mnist_train_and_test_files_are_caught(tmp_path):
    raw = write_mnist(tmp_path, train_n=10, test_n=30)
    with pytest.raises(DataUnavailableError, match="swapped") as err:
        load_dataset("mnist", str(tmp_path))
    assert str(raw / "train-images-idx3-ubyte") in str(err.value)
    assert str(raw / "t10k-images-idx3-ubyte") in str(err.value)


def test_wrong_image_size_and_truncated_idx_files(tmp_path):
    raw = write_mnist(tmp_path / "a", size=20)
    with pytest.raises(DataUnavailableError, match=r"20x20 uint8; expected 1x28x28") as err:
        load_dataset("mnist", str(tmp_path / "a"))
    assert str(raw / "train-images-idx3-ubyte") in str(err.value)
    raw = write_mnist(tmp_path / "b")
    images = raw / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DataUnavailableError, match="claims 10 x 28 x 28 bytes but holds") as err:
        load_dataset("mnist", str(tmp_path / "b"))
    assert str(images) in str(err.value)
    raw = write_mnist(tmp_path / "c")
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(DataUnavailableError, match="t10k-labels-idx1-ubyte is not an "
                                                   "unsigned-byte IDX file"):
        load_dataset("mnist", str(tmp_path / "c"))


def test_mismatched_image_and_label_counts(tmp_path):
    raw = write_mnist(tmp_path)
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(29, dtype=np.uint8))
    with pytest.raises(DataUnavailableError, match="holds 30 images but .* holds 29 labels"):
        load_dataset("mnist", str(tmp_path))


@pytest.mark.parametrize("name, expected", [
    ("cifar100", "cifar-100-python/train"),
    ("svhn", "svhn/train_32x32.mat"),
    ("emnist", "EMNIST/raw/emnist-byclass-train-images-idx3-ubyte"),
])
def test_missing_torchvision_dataset_names_the_files(tmp_path, offline, name, expected):
    root = tmp_path / "empty"
    with pytest.raises(DataUnavailableError) as err:
        load_dataset(name, str(root))
    text = str(err.value)
    assert str(root / expected) in text and "--data_root" in text and "FEDPRUNE_DATA_ROOT" in text
    assert not root.exists()  # the failed download leaves no empty tree behind


def test_every_catalog_entry_is_complete():
    for name, info in DATASETS.items():
        assert len(info.mean) == len(info.std) == info.channels, name
        assert info.source in ("torchvision", "leaf") and info.train_size > 0
        assert bool(info.torchvision_class) == (info.source == "torchvision"), name
    assert [n for n, i in DATASETS.items() if i.writers] == ["femnist"]
