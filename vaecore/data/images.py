"""Image-dataset features: binarization, class subsets, Omniglot and the MNIST downloads.

* ``data.binarize``: ``static`` draws every split once, x ~ Bernoulli(intensities), from a
  generator seeded by ``data.seed`` and the split's name (so the valid/test binarization does not
  depend on subset sizes or on the train split). ``dynamic`` does the same for valid/test and keeps
  the train intensities in :attr:`Split.probs`: ``Split.batches`` then re-draws the train images
  from the trainer's per-epoch generator, so every epoch sees a new binarization (Burda et al. 2016;
  He et al. 2019), deterministically and resumably. The fixed draw stays in ``train.x`` for
  evaluation on the train split.
* ``data.digits``: keep the rows whose label is listed (``[0, 1]``: MNIST-01 of InteL-VAE).
* ``omniglot``: the 28x28 Omniglot of Burda et al. (2016), file ``chardata.mat`` (MATLAB v5,
  needs scipy) or ``omniglot.npz`` with the same keys, in the data folder: ``data`` (784 x 24345)
  and ``testdata`` (784 x 8070) with intensities in [0, 1], each column an image stored column-major
  (Burda et al. read it with ``reshape((-1, 28*28), order='F')``), and optional one-hot alphabet
  labels ``target`` / ``testtarget`` (50 x N). The validation split is held out from the end of the
  training rows (``data.valid_holdout``).
* downloads (``data.download = true``): ``mnist`` and ``fashion_mnist`` are fetched from their
  public mirrors as the four IDX files, verified against the sha256 of their uncompressed content
  and converted to ``<name>.npz`` in the data folder. Omniglot is not downloaded: its checksum could
  not be verified here, so the loader says where to get the file and where to put it.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vaecore.config import DataConfig
from vaecore.data.download import Remote, fetch
from vaecore.data.splits import Dataset, Split
from vaecore.errors import DataError

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist",
    "https://storage.googleapis.com/cvdf-datasets/mnist",
    "http://yann.lecun.com/exdb/mnist",
)
FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",)
IDX_KEYS = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
# sha256 of the uncompressed IDX files; their md5s equal the published ones (shared/data/README.md)
IDX_SHA256 = {
    "mnist": {
        "x_train": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "y_train": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "x_test": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "y_test": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion_mnist": {
        "x_train": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "y_train": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "x_test": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "y_test": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}
MIRRORS = {"mnist": MNIST_MIRRORS, "fashion_mnist": FASHION_MIRRORS}
OMNIGLOT_FILES = ("chardata.mat", "omniglot.npz")
OMNIGLOT_URL = "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat"


def remotes(name: str) -> dict[str, Remote]:
    """The four IDX files of ``mnist`` or ``fashion_mnist`` (key -> remote file)."""
    return {
        key: Remote(filename=stem, sha256=IDX_SHA256[name][key], source=stem + ".gz", mirrors=MIRRORS[name])
        for key, stem in IDX_KEYS.items()
    }


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX file (the MNIST format) as an array."""
    data = Path(path).read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: expected {int(np.prod(dims))} values for shape {dims}, found {body.size}")
    return body.reshape(dims)


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vaecore"


def download_folder(cfg: DataConfig) -> Path:
    """Where downloads go: ``data.root``, else ``VAECORE_DATA``, else ``~/.cache/vaecore``."""
    root = cfg.root or os.environ.get("VAECORE_DATA")
    return Path(root).expanduser() if root else default_cache()


def download_npz(name: str, folder: Path, mirrors: tuple[str, ...] | None = None, timeout: float | None = None) -> Path:
    """Fetch ``name``'s IDX files into ``folder/<name>-idx/`` and write ``folder/<name>.npz``."""
    raw = folder / f"{name}-idx"
    kwargs = {} if timeout is None else {"timeout": timeout}
    arrays = {key: read_idx(fetch(remote, raw, mirrors=mirrors, **kwargs)) for key, remote in remotes(name).items()}
    dest = folder / f"{name}.npz"
    part = folder / f"{name}.npz.part.npz"
    np.savez_compressed(part, **arrays)  # type: ignore[arg-type]
    os.replace(part, dest)
    return dest


def labelled_file(filename: str) -> Callable[[DataConfig], Path]:
    """The path of ``filename`` in the data folder, downloaded first when missing and allowed."""
    name = filename.removesuffix(".npz")

    def locate(cfg: DataConfig) -> Path:
        root = cfg.root or os.environ.get("VAECORE_DATA")
        if cfg.download:
            folder = download_folder(cfg)
            path = folder / filename
            return path if path.is_file() else download_npz(name, folder)
        if not root:
            raise DataError(
                f"data.name = {cfg.name!r} is read from a data folder: set data.root in the config "
                "or the VAECORE_DATA environment variable (or data.download = true to fetch it)"
            )
        path = Path(root).expanduser() / filename
        if not path.is_file():
            raise DataError(
                f"data.name = {cfg.name!r}: put {filename} in {path.parent} (file not found: {path}); "
                "or set data.download = true to fetch it from its public source"
            )
        return path

    return locate


# Omniglot --------------------------------------------------------------------------------------


def _omniglot_arrays(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # pragma: no cover - scipy is present where the tests run
        raise DataError(
            f"{path}: reading a .mat file needs scipy (pip install scipy), or convert it to omniglot.npz "
            "with the same keys (data, testdata, target, testtarget)"
        ) from exc
    try:
        return {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
    except (ValueError, OSError, NotImplementedError) as exc:
        raise DataError(f"{path}: not a readable MATLAB file ({exc})") from exc


def _omniglot_images(array: np.ndarray, where: str) -> np.ndarray:
    if array.ndim != 2 or array.shape[0] != 784:
        raise DataError(f"{where}: expected 784 rows (one 28x28 image per column), got shape {array.shape}")
    # columns are images stored column-major (Fortran order): transpose each image back
    images = np.asarray(array, dtype=np.float32).T.reshape(-1, 28, 28).transpose(0, 2, 1)
    return np.ascontiguousarray(images.reshape(-1, 784))


def _omniglot_labels(array: np.ndarray | None, n: int, where: str) -> np.ndarray | None:
    if array is None:
        return None
    if array.ndim != 2 or array.shape[1] != n:
        raise DataError(f"{where}: expected one-hot labels of shape (classes, {n}), got {array.shape}")
    return array.argmax(axis=0).astype(np.int64)


def load_omniglot(cfg: DataConfig) -> dict[str, np.ndarray]:
    """The Omniglot arrays (``x_train``, ``x_test``, optional ``y_*``) from the data folder."""
    root = cfg.root or os.environ.get("VAECORE_DATA")
    if not root:
        raise DataError(
            "data.name = 'omniglot' is read from a data folder: set data.root or VAECORE_DATA, and put "
            f"chardata.mat (Burda et al. 2016, {OMNIGLOT_URL}) there"
        )
    folder = Path(root).expanduser()
    path = next((folder / f for f in OMNIGLOT_FILES if (folder / f).is_file()), None)
    if path is None:
        raise DataError(
            f"data.name = 'omniglot': put chardata.mat (Burda et al. 2016, from {OMNIGLOT_URL}) "
            f"or omniglot.npz with the same keys in {folder} (file not found: {folder / OMNIGLOT_FILES[0]})"
        )
    arrays = _omniglot_arrays(path)
    missing = [k for k in ("data", "testdata") if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing {', '.join(missing)} (found: {', '.join(sorted(arrays)) or 'none'})")
    out = {
        "x_train": _omniglot_images(arrays["data"], f"{path}: data"),
        "x_test": _omniglot_images(arrays["testdata"], f"{path}: testdata"),
    }
    for split, key in (("train", "target"), ("test", "testtarget")):
        labels = _omniglot_labels(arrays.get(key), len(out[f"x_{split}"]), f"{path}: {key}")
        if labels is not None:
            out[f"y_{split}"] = labels
    if len(out["x_train"]) and (out["x_train"].min() < 0 or out["x_train"].max() > 1):
        raise DataError(f"{path}: intensities must lie in [0, 1]")
    return out


# binarization and subsets ----------------------------------------------------------------------


def split_generator(seed: int, split: str) -> torch.Generator:
    """The generator of the fixed binarization of one split, from ``data.seed`` and the split name."""
    return torch.Generator().manual_seed(zlib.crc32(f"vaecore-binarize:{seed}:{split}".encode()))


def binarize(ds: Dataset, mode: str, seed: int) -> Dataset:
    """``ds`` binarized ``static``ally or ``dynamic``ally (see the module docstring)."""
    if mode == "none":
        return ds
    for name in ("train", "valid", "test"):
        lo, hi = ds.split(name).value_range()
        if lo < 0 or hi > 1:
            raise DataError(
                f"data.binarize = {mode!r} needs intensities in [0, 1]; the {name} split of {ds.name!r} "
                f"spans [{lo:g}, {hi:g}]"
            )
    fixed = {
        name: torch.bernoulli(ds.split(name).inputs(), generator=split_generator(seed, name))
        for name in ("train", "valid", "test")
    }
    train = Split(fixed["train"], ds.train.y, probs=ds.train.inputs() if mode == "dynamic" else None)
    return Dataset(
        name=ds.name,
        train=train,
        valid=Split(fixed["valid"], ds.valid.y),
        test=Split(fixed["test"], ds.test.y),
        binary=True,
        meta=ds.meta,
    )


def select_labels(ds: Dataset, keep: list[int]) -> Dataset:
    """Only the rows whose label is in ``keep`` (labels unchanged)."""
    if not ds.has_labels:
        raise DataError(f"data.digits: dataset {ds.name!r} has no labels to select on")
    wanted = torch.tensor(sorted(set(keep)), dtype=torch.int64)
    splits = {}
    for name in ("train", "valid", "test"):
        s = ds.split(name)
        if s.y is None:
            raise DataError(f"data.digits: the {name} split of {ds.name!r} has no labels")
        rows = torch.isin(s.y, wanted).nonzero().squeeze(1)
        if len(rows) == 0:
            present = sorted(set(s.y.tolist()))
            raise DataError(f"data.digits = {keep}: no {name} rows with these labels (labels present: {present})")
        splits[name] = Split(s.x[rows], s.y[rows], probs=None if s.probs is None else s.probs[rows])
    return Dataset(
        name=ds.name, train=splits["train"], valid=splits["valid"], test=splits["test"], binary=ds.binary, meta=ds.meta
    )
