"""Helpers for testing vaecore and its plugins: tiny configs, datasets, registries and runs."""

from __future__ import annotations

import contextlib
import copy
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import tomli_w
import torch

from vaecore.build import build_model
from vaecore.config import Config, structure_config
from vaecore.data import Dataset, Split
from vaecore.data.loaders import load_binarized_mnist
from vaecore.model import VAE
from vaecore.plugin_manager import PluginRegistry
from vaecore.trainer import Trainer

TINY_CONFIG: dict[str, Any] = {
    "model": {
        "latent_dim": 4,
        "encoder": {"hidden": [32], "activation": "tanh"},
        "decoder": {"hidden": [32], "activation": "tanh"},
    },
    "train": {"epochs": 2, "batch_size": 32, "lr": 1e-3, "seed": 0, "progress": False, "eval_batch_size": 128},
}


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with ``update`` merged in (tables recursively, other values replaced;
    a table choosing another component ``kind`` replaces the table, since options are per kind)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        other_kind = (
            isinstance(value, dict) and "kind" in value and value["kind"] != (out.get(key) or {}).get("kind", "mlp")
        )
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not other_kind:
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_config(plugins: list[dict[str, Any]] | None = None, **sections: dict[str, Any]) -> dict[str, Any]:
    """A raw config for a small, fast model (latent 4, one hidden layer of 32), with a stack."""
    raw = merge(TINY_CONFIG, sections)
    raw["plugins"] = list(plugins or [])
    return raw


def make_registry(plugins: dict[str, type] | None = None, entry_points: bool = True) -> PluginRegistry:
    """The installed plugins (unless ``entry_points`` is False) plus ``plugins`` registered by name."""
    return PluginRegistry(entry_points=entry_points, plugins=plugins)


def synthetic_dataset(n: int = 256, dim: int = 16, seed: int = 0, labels: bool = True) -> Dataset:
    """Binary data from a few random prototypes with flipped bits: structured, tiny and instant."""
    gen = torch.Generator().manual_seed(seed)
    prototypes = (torch.rand(4, dim, generator=gen) < 0.5).float()

    def split(m: int) -> Split:
        y = torch.randint(0, 4, (m,), generator=gen)
        flips = (torch.rand(m, dim, generator=gen) < 0.1).float()
        return Split((prototypes[y] - flips).abs(), y if labels else None)

    return Dataset("synthetic", split(n), split(n // 4), split(n // 4), binary=True)


@contextlib.contextmanager
def streamed_through_the_device() -> Iterator[None]:
    """Inside the block, iterating a :class:`~vaecore.data.Split` other than through
    :func:`vaecore.device_batches` raises: a test that the evaluation loops it wraps move every
    batch to the model's device (they would fail on CUDA otherwise)."""
    from vaecore.streaming import device_batches

    plain = Split.batches

    def guarded(self: Split, *args: Any, **kwargs: Any) -> Any:
        caller = sys._getframe(1).f_code
        if caller is not device_batches.__code__:
            raise AssertionError(
                f"{caller.co_filename}:{caller.co_firstlineno} ({caller.co_name}) iterates a split without "
                "vaecore.device_batches, so its batches never reach the model's device"
            )
        return plain(self, *args, **kwargs)

    with mock.patch.object(Split, "batches", guarded):
        yield


def binarized_mnist(n_train: int = 1000, n_valid: int = 200, n_test: int = 200, seed: int = 0) -> Dataset:
    """Seeded random rows of each split of the shipped binarized MNIST (its test split is sorted
    by class: its first rows are zeros)."""
    ds = load_binarized_mnist()
    return Dataset(
        ds.name,
        ds.train.sample(n_train, seed),
        ds.valid.sample(n_valid, seed + 1),
        ds.test.sample(n_test, seed + 2),
        binary=True,
    )


def shared_data_dir() -> Path | None:
    """The project's shared data folder (``VAECORE_SHARED_DATA``, or ``shared/data`` beside a parent
    of the working directory), or None when it is not there."""
    env = os.environ.get("VAECORE_SHARED_DATA")
    if env:
        return Path(env) if Path(env).is_dir() else None
    for parent in [Path.cwd(), *Path.cwd().parents]:
        candidate = parent.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def load(raw: dict[str, Any], registry: PluginRegistry | None = None) -> Config:
    return structure_config(copy.deepcopy(raw), registry if registry is not None else make_registry())


def make_model(raw: dict[str, Any], dataset: Dataset, registry: PluginRegistry | None = None) -> VAE:
    """Seed with ``train.seed`` and build the model a raw config describes for ``dataset``."""
    config = load(raw, registry)
    torch.manual_seed(config.train.seed)
    return build_model(config, dataset, registry if registry is not None else make_registry())


def run_training(
    raw: dict[str, Any],
    run_dir: str | Path,
    dataset: Dataset,
    registry: PluginRegistry | None = None,
    resume: bool = False,
) -> tuple[Trainer, dict[str, Any]]:
    """Train a raw config on ``dataset`` into ``run_dir``; returns the trainer and the final evaluation."""
    registry = registry if registry is not None else make_registry()
    trainer = Trainer(load(raw, registry), run_dir, registry=registry, dataset=dataset)
    return trainer, trainer.fit(resume=resume)


# the plugin-author kit ------------------------------------------------------------------------


def write_config(path: str | Path, raw: dict[str, Any]) -> Path:
    """Write a raw config dict (as :func:`tiny_config` gives) as a TOML file, for tests that run
    ``vaecore train``/``sweep`` or a subprocess on a config file; returns the path.

    Paths anywhere in ``raw`` (``data.path = tmp_path / "x.npz"``) are written as strings. To test
    malformed TOML or the text itself, write the text instead."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [plain(item) for item in value]
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(tomli_w.dumps(plain(raw)))
    return p


def write_npz(dataset: Dataset, path: str | Path) -> Path:
    """Write ``dataset`` as an ``.npz`` that ``data.name = "npz"`` with ``data.path`` reads back."""
    import numpy as np

    arrays: dict[str, Any] = {}
    for name in ("train", "valid", "test"):
        split = dataset.split(name)
        arrays[f"x_{name}"] = split.x.numpy()
        if split.y is not None:
            arrays[f"y_{name}"] = split.y.numpy()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    np.savez(p, **arrays)
    return p


class StepsResult:
    """What :func:`train_steps` returns: the trainer (and its model) after the steps, and the
    logged means: ``train.<term>`` over the steps, ``valid.<term>`` on the validation split and the
    plugins' ``on_epoch_end`` metrics (``<id>.<name>``)."""

    def __init__(self, trainer: Trainer, metrics: dict[str, float]):
        self.trainer = trainer
        self.model = trainer.model
        self.metrics = metrics

    def __repr__(self) -> str:
        return f"StepsResult(metrics={self.metrics!r})"


def train_steps(
    stack: list[dict[str, Any]] | dict[str, Any],
    dataset: Dataset | None = None,
    steps: int = 4,
    registry: PluginRegistry | None = None,
) -> StepsResult:
    """Train a stack for ``steps`` optimiser steps and validate once, writing no files.

    ``stack`` is a list of ``[[plugins]]`` entries (``[{"name": "ne", "weight": 0.5}]``) put on
    :func:`tiny_config`, or a whole raw config. The training split is cut to ``steps`` batches of
    ``train.batch_size``; the hooks run exactly as in ``vaecore train`` (``setup``, every forward
    hook, ``bound``, ``extra_loss``, ``on_step_end``, ``on_epoch_end``).
    """
    raw = tiny_config(stack) if isinstance(stack, list) else stack
    registry = registry if registry is not None else make_registry()
    config = load(raw, registry)
    data = dataset if dataset is not None else synthetic_dataset()
    n = min(len(data.train), steps * config.train.batch_size)
    data = Dataset(data.name, data.train.head(n), data.valid, data.test, binary=data.binary, meta=data.meta)
    import tempfile

    unused = Path(tempfile.gettempdir()) / "vaecore-train-steps-unused"  # nothing is written
    trainer = Trainer(config, unused, registry=registry, dataset=data)
    trainer.epoch = 1
    metrics: dict[str, float] = {f"train.{k}": v for k, v in trainer.train_epoch().items()}
    metrics.update({f"valid.{k}": v for k, v in trainer.validate().items()})
    plugin_metrics, _ = trainer.model.stack.on_epoch_end(1, dict(metrics), trainer._eval_ctx())
    metrics.update(plugin_metrics)
    return StepsResult(trainer, metrics)
