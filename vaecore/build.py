"""Assemble a run's pieces from its config: the dataset, the plugin stack and the model."""

from __future__ import annotations

from typing import Any

from vaecore.config import Config
from vaecore.data import Dataset
from vaecore.errors import ConfigError, DataError, PluginError, VaecoreError
from vaecore.model import VAE
from vaecore.objectives import ELBO
from vaecore.plugin_manager import PluginRegistry, PluginStack


def build_stack(config: Config, registry: PluginRegistry) -> PluginStack:
    """One instance per ``[[plugins]]`` entry, in config order, plus the built-in ELBO fallback."""
    instances = []
    for entry in config.plugins:
        cls = registry.load(entry.name)
        try:
            plugin = cls(entry.options) if getattr(cls, "Options", None) is not None else cls()
        except Exception as exc:
            origin = registry.info(entry.name).origin
            raise PluginError(f"plugin {entry.id!r} ({origin}) failed to start: {type(exc).__name__}: {exc}") from exc
        instances.append((entry.id, plugin))
    stack = PluginStack(instances, fallbacks=[("elbo", ELBO(config.train.free_bits))])
    check_ignored_settings(config, stack)
    return stack


def check_ignored_settings(config: Config, stack: PluginStack) -> None:
    """Refuse core settings that a claiming plugin makes meaningless, rather than ignore them."""
    problems = []
    bound = [pid for pid in stack.implementers("bound") if pid != "elbo"]
    if bound and config.train.free_bits > 0:
        problems.append(
            f"train.free_bits: applies to the built-in ELBO only; plugin {bound[0]!r} provides the bound (set it to 0)"
        )
    samples = stack.implementers("forward_samples")
    if samples and config.train.samples != 1:
        problems.append(
            f"train.samples: plugin {samples[0]!r} sets the number of samples; use its own option (set this to 1)"
        )
    if problems:
        raise ConfigError(problems)


def check_fit(config: Config, dataset: Dataset, data_meta: dict[str, Any] | None = None) -> None:
    """Refuse a dataset that the configured likelihood cannot model."""
    ranges = [split.value_range() for split in (dataset.train, dataset.valid, dataset.test)]
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    meta = dataset.meta if data_meta is None else data_meta
    likelihood = config.model.likelihood.build(input_shape=dataset.input_shape, data_meta=meta)
    problem = likelihood.check_data(dataset.binary, lo, hi)
    if problem:
        raise DataError(f"data {dataset.name!r} does not fit model.likelihood: {problem}")


def build_model(
    config: Config,
    dataset: Dataset,
    registry: PluginRegistry,
    n_train: int | None = None,
    data_meta: dict[str, Any] | None = None,
) -> VAE:
    """The model for ``config`` sized to ``dataset`` (``n_train``: the training-set size the run
    was built for, when ``dataset`` is not its training data; ``data_meta``: the data metadata it
    was built with, default ``dataset.meta``), with the config's plugin stack."""
    meta = dataset.meta if data_meta is None else data_meta
    check_fit(config, dataset, meta)
    n = len(dataset.train) if n_train is None else n_train
    return build_sized_model(config, dataset.input_shape, n, registry, f"data {dataset.name!r}", meta)


def build_sized_model(
    config: Config,
    input_shape: tuple[int, ...],
    n_train: int,
    registry: PluginRegistry,
    what: str = "inputs",
    data_meta: dict[str, Any] | None = None,
) -> VAE:
    """The model for ``config`` given only the sizes it depends on (no data needed) and the
    data metadata its components take (:attr:`vaecore.data.Dataset.meta`)."""
    stack = build_stack(config, registry)
    try:
        return VAE(config.model, tuple(input_shape), n_train, stack, config.train, data_meta)
    except VaecoreError:
        raise
    except Exception as exc:  # a network that cannot take this data's shape
        raise DataError(
            f"model: cannot be built for {what} of input shape {tuple(input_shape)}: {type(exc).__name__}: {exc}"
        ) from exc
