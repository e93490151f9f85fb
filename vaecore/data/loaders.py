"""The built-in datasets and the generic ``.npz`` loader.

Statically binarized MNIST (Larochelle & Murray split, 50k/10k/10k) ships inside the package,
bit-packed, so a fresh install trains offline. Any ``.npz`` with the layout of ``x_train``,
``x_valid`` (optional), ``x_test`` and optional ``y_*`` labels loads through ``name = "npz"`` with
``path``; ``mnist`` and ``fashion_mnist`` are read from the data folder (``data.root`` or the
``VAECORE_DATA`` environment variable) as ``mnist.npz`` / ``fashion_mnist.npz``.
"""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from vaecore.config import DataConfig
from vaecore.data.images import binarize, labelled_file, load_omniglot, select_labels
from vaecore.data.splits import Dataset, Split
from vaecore.data.synthetic import make_synthetic
from vaecore.errors import DataError

PACKED_MNIST = "binarized_mnist_packed.npz"
PACKED_MNIST_SHA256 = "11e42d2ac71af04981bd9e38068f8ba256912851e2ab92bb9f15b2329a992ef1"
VALID_HOLDOUT = 10_000
"""Rows taken from the end of ``x_train`` as the validation split when a file has no ``x_valid``."""


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_inputs(array: np.ndarray, where: str) -> None:
    """Refuse inputs that are not rows of real numbers: text, complex, 0-d/1-D, empty."""
    if array.dtype.kind in "USO":
        raise DataError(f"{where}: holds {_kind_name(array)} (dtype {array.dtype}); inputs must be numbers")
    if array.dtype.kind not in "biuf":
        raise DataError(f"{where}: holds {_kind_name(array)} (dtype {array.dtype}); inputs must be real numbers")
    if array.ndim < 2:
        raise DataError(
            f"{where}: has shape {array.shape}; expected one row per example (at least 2 dimensions, "
            "e.g. (rows, features))"
        )
    if array.shape[0] == 0:
        raise DataError(f"{where}: has no rows (shape {array.shape})")
    if 0 in array.shape[1:]:
        raise DataError(f"{where}: its rows are empty (shape {array.shape})")


def _kind_name(array: np.ndarray) -> str:
    names = {"U": "text", "S": "bytes", "O": "Python objects", "c": "complex numbers", "M": "dates", "m": "durations"}
    return names.get(array.dtype.kind, f"{array.dtype} values")


def _to_float(array: np.ndarray, where: str) -> torch.Tensor:
    _check_inputs(array, where)
    if array.dtype == np.uint8 and array.max(initial=0) > 1:
        return torch.from_numpy(array.astype(np.float32) / 255.0)
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x.flatten(1))).any(1).nonzero()[0, 0])
        overflow = array.dtype.kind != "f" or bool(np.isfinite(array[bad]).all())
        what = "values too large for float32" if overflow else "NaN or Inf"
        raise DataError(f"{where}: contains {what} (first at row {bad})")
    return x


def _labels(array: np.ndarray | None, where: str = "labels") -> torch.Tensor | None:
    """Labels as int64 class indices: one per row, whole numbers >= 0 (floats only when integral)."""
    if array is None:
        return None
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise DataError(f"{where}: has shape {array.shape}; expected one label per row (a 1-D array)")
    kind = array.dtype.kind
    if kind == "b":
        return torch.from_numpy(array.astype(np.int64))
    if kind == "f":
        bad = np.flatnonzero(~np.isfinite(array) | (array != np.round(array)))
        if len(bad):
            raise DataError(f"{where}: labels must be integers, found {array[bad[0]]:g} at row {bad[0]}")
    elif kind not in "iu":
        raise DataError(f"{where}: labels must be integers, found {_kind_name(array)} (dtype {array.dtype})")
    if kind == "u" and len(array) and array.max() > np.iinfo(np.int64).max:
        row = int(array.argmax())
        raise DataError(f"{where}: labels must be class indices, found {array[row]} at row {row}")
    if len(array) and array.min() < 0:
        row = int(array.argmin())
        raise DataError(f"{where}: labels must be class indices >= 0, found {array[row]:g} at row {row}")
    return torch.from_numpy(array.astype(np.int64))


def load_npz(path: str | Path, name: str = "npz", holdout: int | None = None) -> Dataset:
    """Load a dataset file with keys ``x_train``, ``x_test``, optional ``x_valid`` and ``y_*``.

    Without ``x_valid`` the last ``holdout`` training rows (default: 10000, at most a sixth of
    them) become the validation split."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"dataset file not found: {p}")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: not a readable .npz file (the file is empty, 0 bytes)")
    try:
        loaded = np.load(p, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataError(
                f"{p}: holds a single array (.npy format), not an .npz archive of named arrays "
                "(x_train, x_test, optional x_valid and y_*)"
            )
        with loaded as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{p}: not a readable .npz file ({exc})") from exc
    return dataset_from_arrays(arrays, name, str(p), holdout)


def dataset_from_arrays(arrays: dict[str, np.ndarray], name: str, where: str, holdout: int | None = None) -> Dataset:
    """A :class:`Dataset` from arrays in the ``.npz`` layout (see :func:`load_npz`)."""
    p = where
    missing = [key for key in ("x_train", "x_test") if key not in arrays]
    if missing:
        raise DataError(f"{p}: missing arrays {', '.join(missing)} (found: {', '.join(sorted(arrays)) or 'none'})")
    labels: dict[str, torch.Tensor | None] = {}
    for split in ("train", "valid", "test"):
        x, y = arrays.get(f"x_{split}"), arrays.get(f"y_{split}")
        if x is not None:
            _check_inputs(x, f"{p}: x_{split}")
        labels[split] = _labels(y, f"{p}: y_{split}")  # checked on the file's rows, before any hold-out
        if y is not None and x is not None and len(y) != len(x):
            raise DataError(f"{p}: y_{split} has {len(y)} rows but x_{split} has {len(x)}")
    shapes = {arrays[key].shape[1:] for key in ("x_train", "x_valid", "x_test") if key in arrays}
    if len(shapes) != 1:
        raise DataError(f"{p}: splits have different input shapes {sorted(shapes)}")
    x_train, y_train = arrays["x_train"], labels["train"]
    if "x_valid" in arrays:
        x_valid, y_valid = arrays["x_valid"], labels["valid"]
    else:
        if holdout is None:
            holdout = min(VALID_HOLDOUT, len(x_train) // 6)
            if holdout == 0:
                raise DataError(
                    f"{p}: x_train has only {len(x_train)} rows and there is no x_valid; the validation split "
                    "is held out from the training rows (a sixth of them): give at least 6 rows, an x_valid "
                    "array, or data.valid_holdout"
                )
        elif holdout >= len(x_train):
            raise DataError(f"data.valid_holdout = {holdout}: {p} has only {len(x_train)} training rows")
        x_train, x_valid = x_train[:-holdout], x_train[-holdout:]
        if y_train is not None:
            y_train, y_valid = y_train[:-holdout], y_train[-holdout:]
        else:
            y_valid = None
    train = Split(_to_float(x_train, f"{p}: x_train"), y_train)
    valid = Split(_to_float(x_valid, f"{p}: x_valid"), y_valid)
    test = Split(_to_float(arrays["x_test"], f"{p}: x_test"), labels["test"])
    binary = all(bool(((s.x == 0) | (s.x == 1)).all()) for s in (train, valid, test))
    return Dataset(name=name, train=train, valid=valid, test=test, binary=binary)


def load_binarized_mnist() -> Dataset:
    """The statically binarized MNIST shipped with vaecore, verified against its checksum."""
    ref = resources.files("vaecore.data") / "files" / PACKED_MNIST
    with resources.as_file(ref) as path:
        if sha256_file(path) != PACKED_MNIST_SHA256:
            raise DataError(f"{path}: checksum mismatch; the vaecore installation is damaged, reinstall it")
        with np.load(path, allow_pickle=False) as archive:
            splits = {
                k: torch.from_numpy(np.unpackbits(archive[k], axis=1)[:, :784].astype(np.float32))
                for k in archive.files
            }
    return Dataset(
        name="binarized_mnist",
        train=Split(splits["x_train"]),
        valid=Split(splits["x_valid"]),
        test=Split(splits["x_test"]),
        binary=True,
    )


def from_root(filename: str) -> Callable[..., Dataset]:
    """The loader of ``filename`` in the data folder (downloaded first when allowed)."""
    locate = labelled_file(filename)

    def load(data: DataConfig) -> Dataset:
        return load_npz(locate(data), name=data.name, holdout=data.valid_holdout)

    return load


def omniglot(data: DataConfig) -> Dataset:
    return dataset_from_arrays(load_omniglot(data), "omniglot", "omniglot", data.valid_holdout)


def from_path(data: DataConfig) -> Dataset:
    if not data.path:
        raise DataError("data.path: required when data.name = 'npz' (the .npz file to load)")
    return load_npz(Path(data.path).expanduser(), name=Path(data.path).stem, holdout=data.valid_holdout)


def shipped(data: DataConfig) -> Dataset:
    return load_binarized_mnist()


def synthetic(name: str) -> Callable[..., Dataset]:
    """The loader of the synthetic 2-D set ``name``."""

    def load(data: DataConfig) -> Dataset:
        return make_synthetic(name, data.n_points, data.noise, data.seed)

    return load


def load_dataset(cfg: DataConfig) -> Dataset:
    """The dataset a config names (a registered dataset component), with the configured label
    selection, binarization and subsets applied."""
    from vaecore.data.external import as_dataset

    where = f"data.name = {cfg.name!r} ({cfg.chosen.origin})"
    ds = as_dataset(cfg.build(data=cfg), where, cfg.valid_holdout, cfg.seed)
    if cfg.digits is not None:
        ds = select_labels(ds, cfg.digits)
    ds = binarize(ds, cfg.binarize, cfg.seed)
    return Dataset(
        name=ds.name,
        train=subset(ds.train, cfg.train_size, cfg, "train"),
        valid=subset(ds.valid, cfg.valid_size, cfg, "valid"),
        test=subset(ds.test, cfg.test_size, cfg, "test"),
        binary=ds.binary,
        meta=ds.meta,
    )


def subset(split: Split, n: int | None, cfg: DataConfig, name: str) -> Split:
    """The ``data.subset`` of n rows of one split: n drawn at random (stratified by label where
    the data has labels) with a seed made from ``data.seed`` and the split's name (so each split
    is drawn on its own), or the first n."""
    if cfg.subset == "random":
        return split.sample(n, zlib.crc32(f"vaecore-subset:{cfg.seed}:{name}".encode()))
    return split.head(n)
