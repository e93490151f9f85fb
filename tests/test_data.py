"""Datasets: the shipped binarized MNIST, the generic .npz loader, batching with indices."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from vaecore import ConfigError, DataError
from vaecore.config import DataConfig
from vaecore.data import load_dataset, load_npz
from vaecore.data.loaders import load_binarized_mnist
from vaecore.testing import shared_data_dir

# sha256 of the uint8 array bytes, from shared/data/README.md
BINARIZED_MNIST = {
    "train": "43490d4d6ac9002727af4426d8748609fdb7e4094fa65ad8d681ea60082a7a5a",
    "valid": "069b4f0beb389b776478c3e872b4df71c95ac4be64d7cbe6d32e24ebac8e6d5e",
    "test": "ca0294c3b8d984c7a1dc891015a8eea6f37bae59a34e35ea0fc8c47110a8dd86",
}


def test_shipped_binarized_mnist_is_the_larochelle_split():
    ds = load_binarized_mnist()
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (50_000, 10_000, 10_000)
    assert ds.input_shape == (784,) and ds.binary and not ds.has_labels
    for name, digest in BINARIZED_MNIST.items():
        array = ds.split(name).x.numpy().astype(np.uint8)
        assert hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest() == digest
    assert ds.train.x.mean().item() == pytest.approx(0.1306, abs=1e-4)


def test_damaged_install_is_detected(monkeypatch):
    monkeypatch.setattr("vaecore.data.loaders.PACKED_MNIST_SHA256", "0" * 64)
    with pytest.raises(DataError, match="checksum mismatch"):
        load_binarized_mnist()


def test_batches_carry_indices_and_cover_the_split_once():
    ds = load_dataset(DataConfig(train_size=250))
    seen = []
    for batch in ds.train.batches(100, torch.Generator().manual_seed(0)):
        torch.testing.assert_close(batch.x, ds.train.x[batch.index])
        seen.append(batch.index)
    order = torch.cat(seen)
    assert sorted(order.tolist()) == list(range(250)) and order.tolist() != list(range(250))
    sizes = [len(b.index) for b in ds.train.batches(100)]
    assert sizes == [100, 100, 50]


def test_subsets_are_random_rows_by_default_and_the_first_rows_on_request():
    full = load_binarized_mnist()
    ds = load_dataset(DataConfig(train_size=10, valid_size=5, test_size=300))
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (10, 5, 300)
    assert not torch.equal(ds.test.x, full.test.x[:300])
    # the shipped test split is sorted by class: its first rows hold fewer pixels than the rest
    # (zeros and ones); a random draw has the split's mean ink, the first rows do not
    ink = full.test.x.mean()
    assert abs(float(ds.test.x.mean() - ink)) < 0.01 < abs(float(full.test.x[:300].mean() - ink))
    first = load_dataset(DataConfig(test_size=3, subset="first"))
    torch.testing.assert_close(first.test.x, full.test.x[:3])


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_npz_with_labels_and_holdout(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(120, 4, 4), dtype=np.uint8)
    y = rng.integers(0, 10, size=120, dtype=np.uint8)
    path = write_npz(tmp_path / "d.npz", x_train=x[:100], y_train=y[:100], x_test=x[100:], y_test=y[100:])
    ds = load_npz(path)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (84, 16, 20)
    assert ds.input_shape == (4, 4) and ds.has_labels and not ds.binary
    torch.testing.assert_close(ds.valid.x, torch.from_numpy(x[84:100].astype(np.float32) / 255))
    assert ds.valid.y.dtype == torch.int64 and ds.valid.y.tolist() == y[84:100].tolist()


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x_train": np.zeros((4, 2))}, r"missing arrays x_test \(found: x_train\)"),
        ({"x_train": np.zeros((4, 2)), "x_test": np.zeros((2, 3))}, r"different input shapes"),
        (
            {"x_train": np.zeros((4, 2)), "y_train": np.zeros(3), "x_test": np.zeros((2, 2))},
            r"y_train has 3 rows but x_train has 4",
        ),
        ({"x_train": np.full((6, 2), np.nan), "x_test": np.zeros((2, 2))}, r"x_train: contains NaN or Inf"),
    ],
)
def test_bad_npz_files_are_named(tmp_path, arrays, message):
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_npz(path)


def test_unreadable_and_missing_files(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz file"):
        load_npz(junk)
    with pytest.raises(DataError, match="dataset file not found"):
        load_dataset(DataConfig(name="npz", path=str(tmp_path / "none.npz")))
    with pytest.raises(DataError, match=r"data.path: required when data.name = 'npz'"):
        load_dataset(DataConfig(name="npz"))
    with pytest.raises(ConfigError, match=r"unknown dataset 'cifar'; available: binarized_mnist, "):
        load_dataset(DataConfig(name="cifar"))


def test_data_folder_datasets(tmp_path, monkeypatch):
    monkeypatch.delenv("VAECORE_DATA", raising=False)
    with pytest.raises(DataError, match="set data.root in the config or the VAECORE_DATA"):
        load_dataset(DataConfig(name="mnist"))
    with pytest.raises(DataError, match=r"put mnist.npz in .*\(file not found"):
        load_dataset(DataConfig(name="mnist", root=str(tmp_path)))


def test_real_mnist_from_the_shared_folder():
    root = shared_data_dir()
    if root is None:
        pytest.skip("shared/data is not beside this checkout")
    ds = load_dataset(DataConfig(name="mnist", root=str(root), valid_size=100))
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (50_000, 100, 10_000)
    assert ds.input_shape == (28, 28) and ds.has_labels
    assert ds.train.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert 0.0 <= float(ds.train.x.min()) and float(ds.train.x.max()) <= 1.0
