"""A user's own data: torch Datasets (named as module:factory, or passed from Python) and folders
of images, each trained in a test, with the errors a user makes reported in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from vaecore import DataError
from vaecore.data import from_torch, load_dataset
from vaecore.data.splits import draw_rows
from vaecore.testing import load, tiny_config
from vaecore.trainer import Trainer

Image = pytest.importorskip("PIL.Image", reason="pillow comes with the test extra (matplotlib)")


def _stripes(n: int, seed: int) -> TensorDataset:
    """(x, y) items: 4x4 images with one bright row (y = the row), soft noise."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=gen)
    x = torch.full((n, 4, 4), 0.1) + 0.1 * torch.rand(n, 4, 4, generator=gen)
    x[torch.arange(n), y] = 0.9
    return TensorDataset(x.flatten(1), y)


def torch_splits(data):
    """A dataset factory returning torch datasets (``data.name = "tests.test_own_data:torch_splits"``)."""
    return {"train": _stripes(120, data.seed), "test": _stripes(30, data.seed + 1)}


def not_a_dataset(data):
    return [1, 2, 3]


def _fit(raw, tmp_path, dataset=None):
    trainer = Trainer(load(raw), tmp_path / "run", dataset=dataset)
    return trainer, trainer.fit()


def test_a_torch_dataset_factory_named_in_the_config_trains(tmp_path):
    raw = tiny_config(
        data={"name": "tests.test_own_data:torch_splits"},
        model={"likelihood": {"kind": "gaussian", "scale": 0.1}},
        eval={"nll_samples": 5},
    )
    trainer, results = _fit(raw, tmp_path)
    data = trainer.dataset
    assert (len(data.train), len(data.valid), len(data.test)) == (100, 20, 30)  # a sixth held out
    x, y = _stripes(120, 0).tensors
    rows = draw_rows(120, 20, 0, y)  # a seeded draw, stratified by label: not the last rows
    torch.testing.assert_close(data.valid.x, x[rows])
    assert torch.equal(data.valid.y, y[rows]) and len(set(data.valid.y.tolist())) == 4
    assert np.isfinite(results["nll"]) and "probe_g_mean" in results


def test_torch_datasets_passed_from_python_train(tmp_path):
    dataset = from_torch(_stripes(60, 3), _stripes(20, 4), valid=_stripes(20, 5), name="stripes")
    assert dataset.input_shape == (16,) and dataset.has_labels and len(dataset.valid) == 20
    trainer, results = _fit(tiny_config(model={"likelihood": {"kind": "laplace", "scale": 0.1}}), tmp_path, dataset)
    assert trainer.dataset is dataset and np.isfinite(results["elbo"])


def test_bad_torch_data_is_one_line(tmp_path):
    with pytest.raises(DataError, match=r"the loader returned list; return a vaecore.data.Dataset or a dict"):
        _fit(tiny_config(data={"name": "tests.test_own_data:not_a_dataset"}), tmp_path)
    triple = TensorDataset(torch.zeros(3, 2), torch.zeros(3), torch.zeros(3))
    with pytest.raises(DataError, match=r"the train dataset\[0\]: an item must be x or \(x, y\), got a tuple of 3"):
        from_torch(triple, _stripes(4, 0))
    with pytest.raises(DataError, match=r"torch: the test dataset: is empty"):
        from_torch(_stripes(12, 0), TensorDataset(torch.zeros(0, 16)))
    ragged = [torch.zeros(4), torch.zeros(5)]
    with pytest.raises(DataError, match=r"the train dataset: items have different shapes"):
        from_torch(ragged, _stripes(4, 0))


def _write_folder(root, split, classes, n, size=(8, 8), mode="L"):
    rng = np.random.default_rng(len(split))
    for label in classes:
        folder = root / split / label
        folder.mkdir(parents=True)
        for i in range(n):
            shape = (*size, 3) if mode == "RGB" else size
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(folder / f"{i}.png")


def test_an_image_folder_trains_with_labels_from_its_class_folders(tmp_path):
    root = tmp_path / "pictures"
    _write_folder(root, "train", ["cat", "dog"], 12)
    _write_folder(root, "test", ["cat", "dog"], 4)
    raw = tiny_config(data={"name": "image_folder", "path": str(root)}, eval={"nll_samples": 5})
    trainer, results = _fit(raw, tmp_path)
    data = trainer.dataset
    assert data.input_shape == (8, 8) and (len(data.train), len(data.valid), len(data.test)) == (20, 4, 8)
    assert sorted(data.valid.y.tolist()) == [0, 0, 1, 1]  # held out by a stratified draw, both classes
    assert sorted(data.test.y.tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert 0.0 <= float(data.train.x.min()) and float(data.train.x.max()) <= 1.0
    with Image.open(root / "test" / "dog" / "0.png") as first_dog:
        expected = np.asarray(first_dog, dtype=np.float32) / 255
    np.testing.assert_allclose(data.test.x[4].numpy(), expected)  # classes in sorted order, files sorted
    assert np.isfinite(results["nll"])


def test_an_rgb_image_folder_resized(tmp_path):
    root = tmp_path / "rgb"
    _write_folder(root, "train", ["a"], 8, size=(10, 12), mode="RGB")
    _write_folder(root, "valid", ["a"], 2, size=(10, 12), mode="RGB")
    _write_folder(root, "test", ["a"], 2, size=(10, 12), mode="RGB")
    config = load(tiny_config(data={"name": "image_folder", "path": str(root), "channels": 3, "size": [6, 5]}))
    data = load_dataset(config.data)
    assert data.input_shape == (3, 6, 5) and len(data.valid) == 2


def test_bad_image_folders_are_one_line(tmp_path):
    def loaded(root, **options):
        return load_dataset(load(tiny_config(data={"name": "image_folder", "path": str(root), **options})).data)

    root = tmp_path / "pics"
    _write_folder(root, "train", ["a", "b"], 3)
    with pytest.raises(DataError, match=r"pics: has no test/ folder \(expected train/, test/ and optional valid/\)"):
        loaded(root)
    _write_folder(root, "test", ["a", "c"], 1)
    with pytest.raises(DataError, match=r"the splits have different class folders"):
        loaded(root)
    (root / "test" / "c" / "0.png").unlink()
    (root / "test" / "c").rmdir()
    (root / "test" / "b").mkdir()
    (root / "test" / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken.png: not a readable image"):
        loaded(root)
    (root / "test" / "b" / "broken.png").unlink()
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(root / "test" / "b" / "small.png")
    with pytest.raises(DataError, match=r"images have different sizes .*; set size = \[height, width\]"):
        loaded(root)
    with pytest.raises(DataError, match=r"data.path: .*nowhere is not a folder"):
        loaded(tmp_path / "nowhere")


def _anonymous_mib() -> float:
    """This process's anonymous resident memory (file-backed pages of a memory map excluded)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("RssAnon:")) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/self/status (Linux)")
def test_a_large_uint8_file_stays_on_disk_and_is_read_batch_by_batch(tmp_path):
    rng = np.random.default_rng(0)
    sizes = {"train": 30_000, "valid": 1_000, "test": 1_000}
    for split, n in sizes.items():
        np.save(tmp_path / f"x_{split}.npy", rng.integers(0, 256, (n, 784), dtype=np.uint8))
        np.save(tmp_path / f"y_{split}.npy", rng.integers(0, 10, n))
    first_rows = np.load(tmp_path / "x_train.npy", mmap_mode="r")[:100].astype(np.float32) / 255
    config = load(tiny_config(data={"name": "npy", "path": str(tmp_path)}, train={"epochs": 1, "batch_size": 500}))
    before = _anonymous_mib()
    data = load_dataset(config.data)
    grown = _anonymous_mib() - before
    as_float32 = 30_000 * 784 * 4 / 2**20  # 90 MiB
    assert data.train.x.dtype == torch.uint8 and grown < 10, f"{grown:.1f} MiB read into memory"
    assert as_float32 > 80
    batch = next(data.train.batches(100))
    assert batch.x.dtype == torch.float32
    np.testing.assert_allclose(batch.x.numpy(), first_rows, rtol=0, atol=1e-7)
    trainer = Trainer(config, tmp_path / "run", dataset=data)
    results = trainer.fit()
    assert np.isfinite(results["elbo"]) and data.train.x.dtype == torch.uint8  # never converted as a whole


def test_a_npy_folder_without_its_validation_file_is_refused(tmp_path):
    np.save(tmp_path / "x_train.npy", np.zeros((10, 4), dtype=np.uint8))
    np.save(tmp_path / "x_test.npy", np.zeros((10, 4), dtype=np.uint8))
    with pytest.raises(DataError, match=r"has no x_valid.npy \(data.name = 'npy' needs x_train, x_valid and x_test\)"):
        load_dataset(load(tiny_config(data={"name": "npy", "path": str(tmp_path)})).data)
    np.save(tmp_path / "x_valid.npy", np.zeros((10, 5), dtype=np.uint8))
    with pytest.raises(DataError, match=r"splits have different input shapes"):
        load_dataset(load(tiny_config(data={"name": "npy", "path": str(tmp_path)})).data)
