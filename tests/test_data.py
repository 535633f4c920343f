import numpy as np
import pytest
import torch

from fedprune_core.data.loading import DataUnavailableError, class_counts, load_dataset, partition, subsample


@pytest.mark.parametrize("method", ["iid", "shards", "dirichlet"])
@pytest.mark.parametrize("clients", [3, 20, 37])
def test_every_sample_in_exactly_one_client(method, clients):
    labels = torch.as_tensor(np.random.default_rng(0).integers(0, 10, 6007))
    parts = partition(labels, method, clients, seed=3, classes_per_client=2, alpha=0.3)
    assert len(parts) == clients and all(len(p) > 0 for p in parts)
    together = torch.cat(parts)
    assert len(together) == len(labels)
    assert torch.equal(torch.sort(together)[0], torch.arange(len(labels)))


def test_shards_give_label_skew_without_repeated_classes_on_real_mnist():
    train, _ = load_dataset("mnist")
    parts = partition(train.labels, "shards", 20, seed=0, classes_per_client=2)
    counts = class_counts(train.labels, parts, 10)
    assert counts.sum() == 60_000 and set(counts.sum(1)) == {3000}
    for row in counts:  # two shards of different classes: at most 3 classes (shard edges)
        assert (row > 0).sum() <= 3 and sorted(row)[-2] > 0
    # the same seed deals the same shards; another seed deals others
    again = partition(train.labels, "shards", 20, seed=0, classes_per_client=2)
    other = partition(train.labels, "shards", 20, seed=1, classes_per_client=2)
    assert all(torch.equal(a, b) for a, b in zip(parts, again))
    assert not all(torch.equal(a, b) for a, b in zip(parts, other))


def test_real_mnist_is_loaded_as_uint8_tensors():
    train, test = load_dataset("mnist")
    assert train.images.shape == (60_000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(train.labels.numpy()).tolist()[:3] == [5923, 6742, 5958]


def test_subsample_is_stratified_and_seeded():
    labels = torch.arange(1000) % 10
    idx = subsample(labels, 0.1, seed=0)
    assert len(idx) == 100 and np.bincount(labels[idx].numpy()).tolist() == [10] * 10
    assert torch.equal(idx, subsample(labels, 0.1, seed=0))


def test_missing_data_says_where_it_looked(tmp_path, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable (test)")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("kmnist", str(tmp_path / "empty"))
    text = str(err.value)
    assert str(tmp_path / "empty") in text and "FEDPRUNE_DATA_ROOT" in text and "--data_root" in text


def _write_idx(path, array):
    import struct
    dtype_code = {np.uint8: 0x08}[array.dtype.type]
    header = struct.pack(">HBB", 0, dtype_code, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


@pytest.mark.parametrize("name, folder", [("fashion_mnist", "FashionMNIST"), ("kmnist", "KMNIST")])
def test_mnist_family_loads_from_torchvision_layout(tmp_path, name, folder):
    """fashion_mnist and kmnist go through the same torchvision path as MNIST (tiny fake files)."""
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 50), ("t10k", 20)):
        _write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28), dtype=np.uint8))
        _write_idx(raw / f"{split}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    train, test = load_dataset(name, str(tmp_path))
    assert train.images.shape == (50, 1, 28, 28) and test.labels.tolist()[:3] == [0, 1, 2]
