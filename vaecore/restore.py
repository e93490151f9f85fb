"""Rebuilding a trained model from a run folder or a checkpoint."""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import attrs
import torch

from vaecore.build import build_model, build_sized_model
from vaecore.checkpoint import load_checkpoint
from vaecore.config import Config, config_to_dict, load_config, structure_config
from vaecore.data import Dataset, load_dataset
from vaecore.errors import CheckpointError, DataError
from vaecore.model import VAE
from vaecore.plugin_manager import PluginRegistry
from vaecore.provenance import read_manifest, read_sample
from vaecore.runs import RunDir, atomic_write_bytes


def plugin_states(model: VAE) -> dict[str, Any]:
    """The state of the stack's plugins that are not modules of the model but keep a
    ``state_dict`` (a module plugin's state is in the model's own)."""
    return {
        pid: cast(Any, plugin).state_dict()
        for pid, plugin in model.stack.plugins.items()
        if pid not in model.plugins and callable(getattr(plugin, "state_dict", None))
    }


def restore_model(model: VAE, state: dict[str, Any], source: Path | str) -> None:
    """Load a checkpoint's model and plugin state into ``model``; a mismatch names the checkpoint."""
    try:
        model.load_state_dict(state["model"])
        for pid, plugin_state in state.get("plugin_state", {}).items():
            cast(Any, model.stack.plugins[pid]).load_state_dict(plugin_state)
    except (KeyError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{source}: does not match the model this config builds: {first}") from exc


@attrs.frozen
class LoadedRun:
    """A run folder's resolved config, dataset and model with a checkpoint's weights.

    ``data_source`` is ``config`` when the dataset is the one the config names, ``sample`` when
    that data could not be loaded and ``dataset`` is the run's stored test sample
    (``data_sample.npz``, the same rows as every split)."""

    run: RunDir
    config: Config
    dataset: Dataset
    model: VAE
    state: dict[str, Any]
    source: Path
    data_source: str = "config"

    def budget(self) -> dict[str, Any]:
        """What a results table states of this run beside its numbers (the columns a sweep's
        ``results.csv`` has and ``docs/gen_tables.py`` reads): the checkpoint's ``epoch``, the
        training and test rows, and the training wall time in seconds."""
        return {
            "epoch": self.state.get("epoch"),
            "train_rows": len(self.dataset.train),
            "split_rows": len(self.dataset.test),
            "train_seconds": self.run.train_seconds(),
        }


def load_run(
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    checkpoint: str | Path | None = None,
    registry: PluginRegistry | None = None,
    allow_sample: bool = True,
) -> LoadedRun:
    """The model of a run folder with ``checkpoint`` (default: the config's ``eval.checkpoint``,
    ``best``, falling back to ``last``), in eval mode, on the configured device.

    The model is sized from the run's ``run.json``, so it loads without its training data; when
    the config's data cannot be loaded, the dataset is the run's stored test sample (with a
    warning; ``allow_sample=False`` raises the data's error instead)."""
    run = RunDir(run_dir)
    if not run.config.is_file():
        raise CheckpointError(f"{run.path} is not a run folder: {run.config} does not exist")
    registry = registry if registry is not None else PluginRegistry()
    config = load_config(run.config, overrides, registry)
    if checkpoint is not None:
        source = Path(checkpoint)
    else:
        source = run.chosen_checkpoint(config.eval.checkpoint)
    state = load_checkpoint(source)
    recorded = read_manifest(run.manifest)
    dataset, data_source = _dataset_of(run, config, recorded if allow_sample else None)
    n_train = recorded["n_train"] if recorded is not None else None
    data_meta = recorded.get("data_meta") if recorded is not None else None
    if data_meta is not None and data_source == "config" and dataset.meta != data_meta:
        raise CheckpointError(
            f"{run.manifest}: the data metadata the model was built with (data_meta: "
            f"{', '.join(sorted(data_meta)) or 'empty'}) differs from what data {dataset.name!r} gives now "
            "(its vocabulary changed?); restore the run's data, or move it away to use the stored sample"
        )
    model = build_model(config, dataset, registry, n_train=n_train, data_meta=data_meta)
    restore_model(model, state, source)
    model.to(config.train.device).eval()
    return LoadedRun(
        run=run, config=config, dataset=dataset, model=model, state=state, source=source, data_source=data_source
    )


def _dataset_of(run: RunDir, config: Config, recorded: dict[str, Any] | None) -> tuple[Dataset, str]:
    """The config's dataset, or the run's stored test sample when that data is gone."""
    try:
        return load_dataset(config.data), "config"
    except DataError as exc:
        if recorded is None or not run.data_sample.is_file():
            raise
        dataset = read_sample(
            run.data_sample, f"{recorded['data']} (stored sample)", bool(recorded["binary"]), recorded.get("data_meta")
        )
        if tuple(dataset.input_shape) != tuple(recorded["input_shape"]):
            raise CheckpointError(f"{run.data_sample}: its inputs do not have the run's shape") from exc
        print(
            f"vaecore: warning: {exc}; using the run's stored sample of {len(dataset.test)} test inputs "
            f"({run.data_sample}); input indices refer to that sample",
            file=sys.stderr,
        )
        return dataset, "sample"


EXPORT_FORMAT = "vaecore-export-1"


def export_run(loaded: LoadedRun, target: Path) -> Path:
    """Write ``loaded``'s model as a weights-only file (``torch.load(..., weights_only=True)``
    reads it: tensors and plain data only) with the resolved config and the sizes that rebuild
    it; :func:`load_exported` rebuilds the model from it alone."""
    model = loaded.model
    content = {
        "format": EXPORT_FORMAT,
        "config": config_to_dict(loaded.config),
        "input_shape": list(model.input_shape),
        "n_train": model.info.n_train,
        "data_meta": model.data_meta,
        "epoch": loaded.state.get("epoch"),
        "checkpoint": str(loaded.source),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "plugin_state": plugin_states(model),
    }
    buffer = io.BytesIO()
    torch.save(content, buffer)
    atomic_write_bytes(target, buffer.getvalue())
    return target


def load_exported(path: str | Path, registry: PluginRegistry | None = None) -> VAE:
    """The model of a file written by ``vaecore export``, in eval mode on the CPU (read with
    ``weights_only=True``: no code in the file runs)."""
    source = Path(path)
    try:
        content = torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"exported model not found: {source}") from exc
    except Exception as exc:
        raise CheckpointError(f"{source}: not a vaecore export ({type(exc).__name__}: {exc})") from exc
    if not isinstance(content, dict) or content.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{source}: not a vaecore export (format {EXPORT_FORMAT!r} expected)")
    registry = registry if registry is not None else PluginRegistry()
    config = structure_config(dict(content["config"]), registry)
    model = build_sized_model(
        config,
        tuple(content["input_shape"]),
        int(content["n_train"]),
        registry,
        data_meta=dict(content.get("data_meta") or {}),
    )
    restore_model(model, {"model": content["model"], "plugin_state": content["plugin_state"]}, source)
    return model.eval()
