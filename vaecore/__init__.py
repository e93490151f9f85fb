"""vaecore: a small, fast VAE trainer whose methods are pluggy plugins stacked from a config.

``from vaecore import hookimpl`` loads only the hook markers (pluggy, no torch, no trainer); every
other public name is imported from its module the first time it is used (PEP 562), so a plugin
module that needs the markers alone stays cheap to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vaecore.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    NonFiniteError,
    PluginError,
    VaecoreError,
)
from vaecore.hookspecs import HOOK_API_VERSION, hookimpl, hookspec
from vaecore.lazy import lazy_getattr

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "Component": "vaecore.components",
    "ComponentRegistry": "vaecore.components",
    "Config": "vaecore.config",
    "load_config": "vaecore.config",
    "DiagonalGaussian": "vaecore.distributions",
    "Posterior": "vaecore.distributions",
    "Prior": "vaecore.distributions",
    "StandardNormal": "vaecore.distributions",
    "evaluate": "vaecore.evaluation",
    "evaluate_checkpoint": "vaecore.evaluation",
    "Batch": "vaecore.hooktypes",
    "Bound": "vaecore.hooktypes",
    "Extras": "vaecore.hooktypes",
    "EpochResult": "vaecore.hooktypes",
    "ModelInfo": "vaecore.hooktypes",
    "StepContext": "vaecore.hooktypes",
    "Term": "vaecore.hooktypes",
    "VAE": "vaecore.model",
    "ForwardOutput": "vaecore.model",
    "PluginRegistry": "vaecore.plugin_manager",
    "PluginStack": "vaecore.plugin_manager",
    "LoadedRun": "vaecore.restore",
    "load_run": "vaecore.restore",
    "load_exported": "vaecore.restore",
    "device_batches": "vaecore.streaming",
    "encode_split": "vaecore.streaming",
    "eval_mode": "vaecore.streaming",
    "Trainer": "vaecore.trainer",
    "train_or_reuse": "vaecore.trainer",
}
"""Public name -> the module it lives in, imported on first use."""

if TYPE_CHECKING:
    from vaecore.components import Component, ComponentRegistry
    from vaecore.config import Config, load_config
    from vaecore.distributions import DiagonalGaussian, Posterior, Prior, StandardNormal
    from vaecore.evaluation import evaluate, evaluate_checkpoint
    from vaecore.hooktypes import Batch, Bound, EpochResult, Extras, ModelInfo, StepContext, Term
    from vaecore.model import VAE, ForwardOutput
    from vaecore.plugin_manager import PluginRegistry, PluginStack
    from vaecore.restore import LoadedRun, load_exported, load_run
    from vaecore.streaming import device_batches, encode_split, eval_mode
    from vaecore.trainer import Trainer, train_or_reuse


__getattr__ = lazy_getattr(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "HOOK_API_VERSION",
    "VAE",
    "Batch",
    "Bound",
    "CheckpointError",
    "Component",
    "ComponentRegistry",
    "Config",
    "ConfigError",
    "DataError",
    "DiagonalGaussian",
    "EpochResult",
    "Extras",
    "ForwardOutput",
    "LoadedRun",
    "ModelInfo",
    "NonFiniteError",
    "PluginError",
    "PluginRegistry",
    "PluginStack",
    "Posterior",
    "Prior",
    "StandardNormal",
    "StepContext",
    "Term",
    "Trainer",
    "VaecoreError",
    "__version__",
    "device_batches",
    "encode_split",
    "eval_mode",
    "evaluate",
    "evaluate_checkpoint",
    "hookimpl",
    "hookspec",
    "load_config",
    "load_exported",
    "load_run",
    "train_or_reuse",
]
