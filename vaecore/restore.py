"""Rebuilding a trained model from a run folder or a checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import attrs

from vaecore.build import build_model
from vaecore.checkpoint import load_checkpoint
from vaecore.config import Config, load_config
from vaecore.data import Dataset, load_dataset
from vaecore.errors import CheckpointError
from vaecore.model import VAE
from vaecore.plugin_manager import PluginRegistry
from vaecore.runs import RunDir


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
    """A run folder's resolved config, dataset and model with a checkpoint's weights."""

    run: RunDir
    config: Config
    dataset: Dataset
    model: VAE
    state: dict[str, Any]
    source: Path


def load_run(
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    checkpoint: str | Path | None = None,
    registry: PluginRegistry | None = None,
) -> LoadedRun:
    """The model of a run folder with ``checkpoint`` (default: the config's ``eval.checkpoint``,
    ``best``, falling back to ``last``), in eval mode, on the configured device."""
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
    dataset = load_dataset(config.data)
    model = build_model(config, dataset, registry)
    restore_model(model, state, source)
    model.to(config.train.device).eval()
    return LoadedRun(run=run, config=config, dataset=dataset, model=model, state=state, source=source)
