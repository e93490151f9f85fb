"""Datasets held as tensors, split into train/valid/test, batched with their sample indices."""

from vaecore.data.external import from_torch
from vaecore.data.loaders import load_dataset, load_npz
from vaecore.data.splits import Dataset, Split

__all__ = ["Dataset", "Split", "from_torch", "load_dataset", "load_npz"]
