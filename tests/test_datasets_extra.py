"""Image-dataset features: static and dynamic binarization, digit subsets, the validation hold-out,
Omniglot in the layout of Burda et al., and verified downloads (from local servers only)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from vaecore import DataError
from vaecore.config import DataConfig
from vaecore.data import Split, images, load_dataset
from vaecore.data.download import Remote, fetch
from vaecore.testing import shared_data_dir


def _intensity_npz(tmp_path: Path, n: int = 60, labels: bool = True, valid: bool = True) -> Path:
    gen = np.random.default_rng(0)
    arrays = {"x_train": gen.random((n, 16), dtype=np.float32), "x_test": gen.random((n // 2, 16), dtype=np.float32)}
    if valid:
        arrays["x_valid"] = gen.random((n // 3, 16), dtype=np.float32)
    if labels:
        arrays["y_train"] = np.arange(n) % 10
        arrays["y_test"] = np.arange(n // 2) % 10
        if valid:
            arrays["y_valid"] = np.arange(n // 3) % 10
    path = tmp_path / "intensities.npz"
    np.savez(path, **arrays)
    return path


def _load(path: Path, **kw) -> object:
    return load_dataset(DataConfig(name="npz", path=str(path), **kw))


# binarization --------------------------------------------------------------------------------


def test_static_binarization_is_fixed_by_the_seed(tmp_path):
    path = _intensity_npz(tmp_path)
    a, b, c = _load(path, binarize="static"), _load(path, binarize="static"), _load(path, binarize="static", seed=1)
    assert a.binary and a.train.probs is None
    for name in ("train", "valid", "test"):
        x = a.split(name).x
        assert set(x.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(x, b.split(name).x)
        assert not torch.equal(x, c.split(name).x)
    # the valid/test draws do not depend on the training subset
    small = _load(path, binarize="static", train_size=5, subset="first")
    assert torch.equal(small.valid.x, a.valid.x) and torch.equal(small.train.x, a.train.x[:5])
    raw = _load(path)
    assert not raw.binary and torch.equal(raw.valid.x, torch.from_numpy(np.load(path)["x_valid"]))


def test_dynamic_binarization_redraws_the_train_split_each_epoch(tmp_path):
    path = _intensity_npz(tmp_path)
    ds = _load(path, binarize="dynamic")
    static = _load(path, binarize="static")
    assert ds.binary and ds.train.probs is not None
    assert torch.equal(ds.valid.x, static.valid.x) and torch.equal(ds.test.x, static.test.x)
    assert torch.equal(ds.train.x, static.train.x)  # the fixed draw, for evaluation on train

    def epoch(seed):
        batches = list(ds.train.batches(16, torch.Generator().manual_seed(seed)))
        x = torch.cat([b.x for b in batches])
        index = torch.cat([b.index for b in batches])
        return x[index.argsort()]

    e0, e0_again, e1 = epoch(0), epoch(0), epoch(1)
    assert set(e0.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(e0, e0_again)
    assert not torch.equal(e0, e1)
    # ordered iteration (evaluation) gives the fixed binarization
    assert torch.equal(torch.cat([b.x for b in ds.train.batches(16)]), ds.train.x)
    # the draws follow the intensities
    draws = torch.stack([epoch(s) for s in range(300)])
    assert float((draws.mean(0) - ds.train.probs).abs().max()) < 0.12
    assert float((draws.mean(0) - ds.train.probs).abs().mean()) < 0.025
    # head keeps the intensities
    assert torch.equal(ds.train.head(7).probs, ds.train.probs[:7])


def test_dynamic_binarization_through_the_trainer_is_deterministic(tmp_path):
    from vaecore.testing import run_training, tiny_config

    path = _intensity_npz(tmp_path, n=96)
    raw = tiny_config(data={"name": "npz", "path": str(path), "binarize": "dynamic"}, train={"epochs": 2})
    raw["eval"] = {"nll_samples": 5, "probes": False}
    ds = load_dataset(DataConfig(name="npz", path=str(path), binarize="dynamic"))
    _, first = run_training(raw, tmp_path / "a", ds)
    _, second = run_training(raw, tmp_path / "b", ds)
    assert first["nll"] == second["nll"]
    import json

    def terms(run):
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert terms("a") == terms("b")


def test_binarize_rejects_data_outside_the_unit_interval(tmp_path):
    path = tmp_path / "wide.npz"
    np.savez(path, x_train=np.full((12, 4), 2.0, np.float32), x_test=np.zeros((3, 4), np.float32))
    with pytest.raises(DataError, match=r"data.binarize = 'dynamic' needs intensities in \[0, 1\]"):
        _load(path, binarize="dynamic")


def test_binarize_and_digits_options_are_validated():
    from vaecore import ConfigError
    from vaecore.testing import load, tiny_config

    with pytest.raises(ConfigError, match=r"data.binarize: must be one of 'none', 'static', 'dynamic', got 'yes'"):
        load(tiny_config(data={"binarize": "yes"}))
    with pytest.raises(ConfigError, match=r"data.digits: must be >= 0, got -1"):
        load(tiny_config(data={"digits": [0, -1]}))
    with pytest.raises(ConfigError, match=r"data.valid_holdout: must be > 0, got 0"):
        load(tiny_config(data={"valid_holdout": 0}))
    with pytest.raises(ConfigError, match=r"data.subset: must be one of 'random', 'first', got 'middle'"):
        load(tiny_config(data={"subset": "middle"}))


# subsets and hold-out ------------------------------------------------------------------------


def test_digit_subsets(tmp_path):
    path = _intensity_npz(tmp_path)
    ds = _load(path, digits=[1, 0], binarize="dynamic")
    for name in ("train", "valid", "test"):
        s = ds.split(name)
        assert set(s.y.tolist()) == {0, 1}
    full = _load(path)
    keep = torch.isin(full.train.y, torch.tensor([0, 1]))
    assert torch.equal(ds.train.probs, full.train.x[keep])
    with pytest.raises(DataError, match=r"data.digits = \[42\]: no train rows with these labels"):
        _load(path, digits=[42])
    with pytest.raises(DataError, match="has no labels to select on"):
        _load(_intensity_npz(tmp_path, labels=False), digits=[0])


def test_random_subsets_are_seeded_and_keep_labels_with_their_rows(tmp_path):
    gen = np.random.default_rng(0)
    arrays = {}
    for name, rows in (("train", 200), ("valid", 60), ("test", 60)):
        arrays[f"x_{name}"] = gen.random((rows, 8), dtype=np.float32)
        arrays[f"y_{name}"] = np.arange(rows)  # a row's label is its place in the file
    path = tmp_path / "rows.npz"
    np.savez(path, **arrays)
    sizes = {"train": 30, "valid": 10, "test": 10}
    kw = {f"{name}_size": n for name, n in sizes.items()}
    full, first = _load(path), _load(path, subset="first", **kw)
    drawn, again = _load(path, subset="random", **kw), _load(path, subset="random", **kw)
    other_seed = _load(path, subset="random", seed=1, **kw)
    for name, n in sizes.items():
        split, rows = drawn.split(name), drawn.split(name).y
        assert len(split) == n
        assert rows.tolist() == sorted(set(rows.tolist()))  # distinct rows, in file order
        assert torch.equal(split.x, full.split(name).x[rows])  # each label stays with its image
        assert torch.equal(rows, again.split(name).y) and torch.equal(split.x, again.split(name).x)
        assert not torch.equal(rows, other_seed.split(name).y)
        assert not torch.equal(rows, first.split(name).y)
        assert torch.equal(first.split(name).y, torch.arange(n))
        assert torch.equal(_load(path, **kw).split(name).y, rows)  # random is the default
    assert not torch.equal(drawn.valid.y, drawn.test.y)  # each split is drawn on its own
    # the intensities of dynamic binarization follow their rows; sizes left unset keep every row
    dynamic = _load(path, subset="random", binarize="dynamic", **kw)
    assert torch.equal(dynamic.train.y, drawn.train.y) and torch.equal(dynamic.train.probs, drawn.train.x)
    assert len(_load(path, subset="random", train_size=30).test) == 60
    assert full.train.sample(None, 0) is full.train and full.train.sample(500, 0) is full.train


def test_valid_holdout(tmp_path):
    path = _intensity_npz(tmp_path, n=60, valid=False)
    raw = np.load(path)
    ds = _load(path, valid_holdout=7)
    assert len(ds.train) == 53 and len(ds.valid) == 7
    assert torch.equal(ds.valid.x, torch.from_numpy(raw["x_train"][-7:]))
    assert len(_load(path).valid) == 10  # default: a sixth
    with pytest.raises(DataError, match="data.valid_holdout = 60: .* has only 60 training rows"):
        _load(path, valid_holdout=60)


def test_mnist01_from_the_shared_folder():
    root = shared_data_dir()
    if root is None or not (root / "mnist.npz").is_file():
        pytest.skip("shared/data/mnist.npz is not available here")
    ds = load_dataset(DataConfig(name="mnist", root=str(root), digits=[0, 1], binarize="dynamic", test_size=500))
    assert set(ds.train.y.unique().tolist()) == {0, 1}
    assert len(ds.train) + len(ds.valid) == 5923 + 6742  # every 0 and 1 of the 60000 training images
    assert ds.input_shape == (28, 28) and ds.binary and ds.train.probs.max() == 1.0


# Omniglot ------------------------------------------------------------------------------------


def _omniglot_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(seed)
    imgs = gen.random((n, 28, 28)).astype(np.float32)
    imgs[:, :, :5] = 0.0  # an asymmetric stroke-free band on the left, to pin down orientation
    labels = gen.integers(0, 50, n)
    return imgs, labels


def _burda_layout(imgs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """784 x N, each image column-major (what Burda et al. undo with order='F'), one-hot 50 x N."""
    data = imgs.transpose(0, 2, 1).reshape(len(imgs), 784).T
    onehot = np.zeros((50, len(imgs)))
    onehot[labels, np.arange(len(imgs))] = 1
    return data, onehot


@pytest.mark.parametrize("fmt", ["mat", "npz"])
def test_omniglot_in_the_burda_layout(tmp_path, fmt):
    train, ytrain = _omniglot_images(40, 0)
    test, ytest = _omniglot_images(12, 1)
    data, target = _burda_layout(train, ytrain)
    testdata, testtarget = _burda_layout(test, ytest)
    arrays = {"data": data, "target": target, "testdata": testdata, "testtarget": testtarget}
    if fmt == "mat":
        scipy_io = pytest.importorskip("scipy.io")
        scipy_io.savemat(tmp_path / "chardata.mat", arrays)
    else:
        np.savez(tmp_path / "omniglot.npz", **arrays)
    # Burda et al.'s own reading of the file, for reference
    reference = data.T.reshape((-1, 28, 28)).reshape((-1, 28 * 28), order="F")
    ds = load_dataset(DataConfig(name="omniglot", root=str(tmp_path), valid_holdout=8, binarize="dynamic"))
    assert ds.input_shape == (784,)
    assert len(ds.train) == 32 and len(ds.valid) == 8 and len(ds.test) == 12
    torch.testing.assert_close(ds.train.probs, torch.from_numpy(train[:32].reshape(32, 784)))
    torch.testing.assert_close(ds.train.probs, torch.from_numpy(reference[:32]).float())
    assert float(ds.train.probs.view(-1, 28, 28)[:, :, :5].abs().sum()) == 0.0
    assert torch.equal(ds.valid.y, torch.from_numpy(ytrain[32:]).long())
    assert torch.equal(ds.test.y, torch.from_numpy(ytest).long())


def test_omniglot_messages_say_which_file_goes_where(tmp_path, monkeypatch):
    monkeypatch.delenv("VAECORE_DATA", raising=False)
    with pytest.raises(DataError, match="set data.root or VAECORE_DATA, and put chardata.mat"):
        load_dataset(DataConfig(name="omniglot"))
    with pytest.raises(
        DataError, match=rf"put chardata.mat \(Burda et al. 2016, from https://\S+\) or omniglot.npz .* in {tmp_path}"
    ):
        load_dataset(DataConfig(name="omniglot", root=str(tmp_path)))
    np.savez(tmp_path / "omniglot.npz", data=np.zeros((784, 3)))
    with pytest.raises(DataError, match="missing testdata"):
        load_dataset(DataConfig(name="omniglot", root=str(tmp_path)))


# downloads -----------------------------------------------------------------------------------


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


@pytest.fixture
def http_folder(tmp_path):
    """A folder served over HTTP on 127.0.0.1 (a local stand-in for a mirror)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_verifies_the_checksum_of_the_content(tmp_path, http_folder):
    served, url = http_folder
    payload = b"vaecore" * 1000
    (served / "blob.gz").write_bytes(gzip.compress(payload))
    good = Remote("blob", hashlib.sha256(payload).hexdigest(), "blob.gz", (url,))
    out = fetch(good, tmp_path / "cache")
    assert out.read_bytes() == payload and not (tmp_path / "cache" / "blob.part").exists()
    # already there and intact: no network needed (a dead mirror is never contacted)
    assert fetch(good, tmp_path / "cache", mirrors=["http://127.0.0.1:9"]) == out
    # a mirror serving other bytes is refused and nothing is left behind
    bad = Remote("other", "0" * 64, "blob.gz", (url,))
    with pytest.raises(DataError, match="checksum mismatch: got sha256 .* expected 0000"):
        fetch(bad, tmp_path / "cache")
    assert not (tmp_path / "cache" / "other").exists() and not (tmp_path / "cache" / "other.part").exists()
    # a damaged local copy is reported, not silently replaced
    out.write_bytes(b"damaged")
    with pytest.raises(DataError, match="checksum mismatch .* delete the file to download it again"):
        fetch(good, tmp_path / "cache")


def test_fetch_from_a_file_url_and_falls_through_mirrors(tmp_path):
    src = tmp_path / "mirror"
    src.mkdir()
    payload = b"\x00\x01" * 500
    (src / "plain.bin").write_bytes(payload)
    remote = Remote(
        "plain.bin",
        hashlib.sha256(payload).hexdigest(),
        "plain.bin",
        ("http://127.0.0.1:9", src.as_uri()),
        gzipped=False,
    )
    assert fetch(remote, tmp_path / "cache", timeout=2).read_bytes() == payload


def test_offline_download_says_which_file_to_put_where(tmp_path):
    remote = Remote("train-images-idx3-ubyte", "ab" * 32, "train-images-idx3-ubyte.gz", ("http://127.0.0.1:9",))
    with pytest.raises(DataError) as err:
        fetch(remote, tmp_path / "cache", timeout=2)
    text = str(err.value)
    assert "could not download train-images-idx3-ubyte: tried http://127.0.0.1:9/train-images-idx3-ubyte.gz" in text
    what = f"the gunzipped content of train-images-idx3-ubyte.gz, sha256 {'ab' * 32}"
    assert f"Offline? Put train-images-idx3-ubyte ({what}) in {tmp_path / 'cache'}" in text


def test_mnist_download_pipeline_against_a_local_mirror(tmp_path, http_folder, monkeypatch):
    """The real MNIST checksums (checked against shared/data, whose md5s are the published ones)
    and the whole path: IDX .gz from a mirror -> verified -> mnist.npz -> the dataset."""
    root = shared_data_dir()
    if root is None or not (root / "mnist.npz").is_file():
        pytest.skip("shared/data/mnist.npz is not available here")
    served, url = http_folder
    with np.load(root / "mnist.npz") as archive:
        arrays = {k: archive[k] for k in archive.files}
    for key, stem in images.IDX_KEYS.items():
        content = _idx(arrays[key])
        assert hashlib.sha256(content).hexdigest() == images.IDX_SHA256["mnist"][key]
        (served / f"{stem}.gz").write_bytes(gzip.compress(content, compresslevel=1))
    monkeypatch.setitem(images.MIRRORS, "mnist", ("http://127.0.0.1:9", url))
    cache = tmp_path / "data"
    ds = load_dataset(
        DataConfig(name="mnist", root=str(cache), download=True, valid_size=10, test_size=10, subset="first")
    )
    assert (cache / "mnist.npz").is_file() and len(ds.train) == 50000
    assert ds.train.y[:5].tolist() == [5, 0, 4, 1, 9]
    assert torch.equal(ds.test.x, torch.from_numpy(arrays["x_test"][:10]).float() / 255)
    # without download, a missing file gets the message that says where to put it
    with pytest.raises(DataError, match=r"put fashion_mnist.npz in .*; or set data.download = true"):
        load_dataset(DataConfig(name="fashion_mnist", root=str(cache)))


def test_read_idx_rejects_other_files(tmp_path):
    (tmp_path / "x").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x02ab")
    with pytest.raises(DataError, match="not an unsigned-byte IDX file"):
        images.read_idx(tmp_path / "x")
    (tmp_path / "y").write_bytes(_idx(np.zeros((2, 3), np.uint8))[:-1])
    with pytest.raises(DataError, match=r"expected 6 values for shape \(2, 3\), found 5"):
        images.read_idx(tmp_path / "y")


def test_split_batches_without_probs_is_unchanged():
    s = Split(torch.arange(10.0).view(5, 2), torch.arange(5))
    batches = list(s.batches(2, torch.Generator().manual_seed(0)))
    assert torch.equal(torch.cat([b.x for b in batches])[:, 0] / 2, torch.cat([b.index for b in batches]).float())
