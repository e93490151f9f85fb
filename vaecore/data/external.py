"""Datasets from outside vaecore's formats: torch ``Dataset``s and folders of images.

Both end in :func:`vaecore.data.loaders.dataset_from_arrays`, so they get the same checks and
messages as an ``.npz`` (shapes, labels, NaN). Without a validation split one is held out from
the training rows by a seeded draw, stratified by label (a folder is read class by class, so its
last rows would all be one class).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from vaecore import validators as v
from vaecore.data.loaders import dataset_from_arrays
from vaecore.data.splits import Dataset, Split, draw_rows
from vaecore.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")


def _item_arrays(dataset: Any, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Every item of a torch-style dataset (``len`` and ``[i]``; items ``x`` or ``(x, y)``)."""
    try:
        n = len(dataset)
    except TypeError as exc:
        raise DataError(f"{where}: has no len(); a map-style torch Dataset is needed") from exc
    if n == 0:
        raise DataError(f"{where}: is empty")
    xs, ys = [], []
    for i in range(n):
        item = dataset[i]
        if isinstance(item, (tuple, list)):
            if len(item) != 2:
                raise DataError(
                    f"{where}[{i}]: an item must be x or (x, y), got a {type(item).__name__} of {len(item)}"
                )
            x, y = item
            ys.append(int(y.item() if isinstance(y, torch.Tensor) else y))
        else:
            x = item
        xs.append(x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x))
    if ys and len(ys) != len(xs):
        raise DataError(f"{where}: some items have a label and some do not")
    shapes = {x.shape for x in xs}
    if len(shapes) != 1:
        raise DataError(f"{where}: items have different shapes {sorted(shapes)[:3]}")
    return np.stack(xs), (np.asarray(ys, dtype=np.int64) if ys else None)


def hold_out(arrays: dict[str, np.ndarray], holdout: int | None, seed: int, where: str) -> dict[str, np.ndarray]:
    """``arrays`` with ``x_valid``/``y_valid`` drawn from the training rows when absent:
    ``holdout`` rows (default a sixth, at most 10,000) by :func:`~vaecore.data.splits.draw_rows`
    with ``seed``, stratified by label."""
    if "x_valid" in arrays:
        return arrays
    x, y = arrays["x_train"], arrays.get("y_train")
    n = holdout if holdout is not None else min(10_000, len(x) // 6)
    if not 0 < n < len(x):
        raise DataError(
            f"{where}: cannot hold out {n} validation rows from {len(x)} training rows; give a validation "
            "split or data.valid_holdout"
        )
    rows = draw_rows(len(x), n, seed, None if y is None else torch.from_numpy(y)).numpy()
    rest = np.setdiff1d(np.arange(len(x)), rows)
    out = {**arrays, "x_train": x[rest], "x_valid": x[rows]}
    if y is not None:
        out.update(y_train=y[rest], y_valid=y[rows])
    return out


def from_torch(
    train: Any,
    test: Any,
    valid: Any | None = None,
    *,
    name: str = "torch",
    holdout: int | None = None,
    seed: int = 0,
) -> Dataset:
    """A :class:`Dataset` from torch datasets (any object with ``len`` and ``[i]``) whose items are
    ``x`` or ``(x, y)`` (``y`` an integer class). Without ``valid``, ``holdout`` training items
    (default a sixth, at most 10,000), drawn with ``seed`` and stratified by label, are the
    validation split. The items are read once, into memory: ``uint8`` inputs become [0, 1] floats."""
    arrays: dict[str, np.ndarray] = {}
    for split, source in (("train", train), ("valid", valid), ("test", test)):
        if source is None:
            continue
        x, y = _item_arrays(source, f"{name}: the {split} dataset")
        arrays[f"x_{split}"] = x
        if y is not None:
            arrays[f"y_{split}"] = y
    return dataset_from_arrays(hold_out(arrays, holdout, seed, name), name, name)


def as_dataset(value: Any, where: str, holdout: int | None = None, seed: int = 0) -> Dataset:
    """What a dataset factory returned, as a :class:`Dataset`: a Dataset itself, or a dict of
    torch datasets with ``train`` and ``test`` (and optionally ``valid``)."""
    if isinstance(value, Dataset):
        return value
    if isinstance(value, dict) and {"train", "test"} <= set(value) and set(value) <= {"train", "valid", "test"}:
        return from_torch(value["train"], value["test"], value.get("valid"), name=where, holdout=holdout, seed=seed)
    raise DataError(
        f"{where}: the loader returned {type(value).__name__}; return a vaecore.data.Dataset or a dict of torch "
        "datasets {'train': ..., 'test': ..., optional 'valid': ...}"
    )


# a folder of images -----------------------------------------------------------------------------


@attrs.define(kw_only=True)
class ImageFolderOptions:
    """``image_folder``: ``data.path`` holds ``train/``, ``test/`` and optional ``valid/``, each
    either images or one subfolder of images per class (the sorted folder names are the labels)."""

    channels: int = attrs.field(default=1, validator=v.one_of((1, 3)))
    """1: grayscale (inputs ``(H, W)``); 3: RGB (inputs ``(3, H, W)``)"""
    size: list[int] | None = attrs.field(default=None, validator=[v.each(v.gt(0)), v.nonempty()])
    """resize every image to ``[height, width]`` (default: keep the size; all must then agree)"""


def _images_in(folder: Path) -> tuple[list[Path], list[int] | None, list[str]]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if classes:
        files, labels = [], []
        for label, cls in enumerate(classes):
            found = sorted(p for p in (folder / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            files += found
            labels += [label] * len(found)
        return files, labels, classes
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), None, []


def load_image_folder(data: Any, options: ImageFolderOptions) -> Dataset:
    """The ``image_folder`` dataset (see :class:`ImageFolderOptions`)."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise DataError("data.name = 'image_folder' needs pillow: pip install pillow") from exc
    if not data.path:
        raise DataError("data.path: required when data.name = 'image_folder' (the folder holding train/ and test/)")
    root = Path(data.path)
    if not root.is_dir():
        raise DataError(f"data.path: {root} is not a folder")
    arrays: dict[str, np.ndarray] = {}
    class_lists: dict[str, list[str]] = {}
    for split in ("train", "valid", "test"):
        folder = root / split
        if not folder.is_dir():
            if split != "valid":
                raise DataError(f"{root}: has no {split}/ folder (expected train/, test/ and optional valid/)")
            continue
        files, labels, classes = _images_in(folder)
        if not files:
            raise DataError(f"{folder}: holds no images ({', '.join(IMAGE_SUFFIXES)})")
        class_lists[split] = classes
        images = []
        for path in files:
            try:
                with Image.open(path) as opened:
                    image = opened.convert("L" if options.channels == 1 else "RGB")
                    if options.size is not None:
                        image = image.resize((options.size[-1], options.size[0]))
                    pixels = np.asarray(image, dtype=np.uint8)
            except OSError as exc:
                raise DataError(f"{path}: not a readable image ({exc})") from exc
            images.append(pixels if options.channels == 1 else pixels.transpose(2, 0, 1))
        shapes = {image.shape for image in images}
        if len(shapes) != 1:
            raise DataError(f"{folder}: images have different sizes {sorted(shapes)[:3]}; set size = [height, width]")
        arrays[f"x_{split}"] = np.stack(images)
        if labels is not None:
            arrays[f"y_{split}"] = np.asarray(labels, dtype=np.int64)
    named = {split: classes for split, classes in class_lists.items() if classes}
    if named and len({tuple(c) for c in named.values()}) != 1:
        raise DataError(f"{root}: the splits have different class folders: {named}")
    return dataset_from_arrays(hold_out(arrays, data.valid_holdout, data.seed, str(root)), root.name, str(root))


# a folder of .npy files, memory-mapped -----------------------------------------------------------


def load_npy_folder(data: Any) -> Dataset:
    """``data.path`` holding ``x_train.npy``, ``x_valid.npy``, ``x_test.npy`` and optional
    ``y_*.npy``, memory-mapped: ``uint8`` inputs stay on disk as they are and are read and
    scaled to [0, 1] batch by batch (other dtypes are read into memory as float32). The validation
    split must be its own file: holding rows out of a memory-mapped array would copy it."""
    from vaecore.data.loaders import _check_inputs, _labels, _to_float

    if not data.path:
        raise DataError("data.path: required when data.name = 'npy' (the folder of x_train.npy, x_valid.npy, ...)")
    root = Path(data.path)
    if not root.is_dir():
        raise DataError(f"data.path: {root} is not a folder")
    splits = {}
    for split in ("train", "valid", "test"):
        path = root / f"x_{split}.npy"
        if not path.is_file():
            raise DataError(f"{root}: has no x_{split}.npy (data.name = 'npy' needs x_train, x_valid and x_test)")
        try:
            array = np.load(path, mmap_mode="c", allow_pickle=False)  # copy-on-write: nothing read yet
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable .npy file ({exc})") from exc
        _check_inputs(array, str(path))
        x = torch.from_numpy(array) if array.dtype == np.uint8 else _to_float(np.asarray(array), str(path))
        labels = root / f"y_{split}.npy"
        y = _labels(np.load(labels, allow_pickle=False), str(labels)) if labels.is_file() else None
        if y is not None and len(y) != len(x):
            raise DataError(f"{labels}: has {len(y)} rows but x_{split}.npy has {len(x)}")
        splits[split] = Split(x, y)
    shapes = {tuple(s.x.shape[1:]) for s in splits.values()}
    if len(shapes) != 1:
        raise DataError(f"{root}: splits have different input shapes {sorted(shapes)}")
    binary = all(_is_binary(s.x) for s in splits.values())
    return Dataset(name=root.name, train=splits["train"], valid=splits["valid"], test=splits["test"], binary=binary)


def _is_binary(x: torch.Tensor, chunk: int = 4096) -> bool:
    """Whether every input is 0 or 1 on the model's scale (uint8: 0 or 255), read in chunks."""
    high = 255 if x.dtype == torch.uint8 else 1
    return all(bool(((part == 0) | (part == high)).all()) for part in torch.split(x, chunk))
