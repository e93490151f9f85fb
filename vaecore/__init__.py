"""vaecore: a small, fast VAE trainer whose methods are pluggy plugins stacked from a config."""

__version__ = "0.1.0"

from vaecore.config import Config, load_config
from vaecore.distributions import DiagonalGaussian, Posterior, Prior, StandardNormal
from vaecore.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    NonFiniteError,
    PluginError,
    VaecoreError,
)
from vaecore.hookspecs import HOOK_API_VERSION, hookimpl, hookspec
from vaecore.hooktypes import Batch, Bound, EpochResult, ModelInfo, StepContext, Term
from vaecore.model import VAE, ForwardOutput
from vaecore.plugin_manager import PluginRegistry, PluginStack
from vaecore.restore import LoadedRun, load_run
from vaecore.streaming import device_batches, encode_split, eval_mode
from vaecore.trainer import Trainer, train_or_reuse

__all__ = [
    "HOOK_API_VERSION",
    "VAE",
    "Batch",
    "Bound",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DataError",
    "DiagonalGaussian",
    "EpochResult",
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
    "hookimpl",
    "hookspec",
    "load_config",
    "load_run",
    "train_or_reuse",
]
