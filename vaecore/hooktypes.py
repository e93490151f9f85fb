"""The values that cross the hook boundary: what the core passes to plugins and what they return."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import torch

if TYPE_CHECKING:
    from vaecore.model import VAE


@attrs.frozen(slots=True)
class Batch:
    """One minibatch: inputs, their row indices in the split, and labels when the data has them."""

    x: torch.Tensor
    index: torch.Tensor
    y: torch.Tensor | None = None

    def to(self, device: torch.device) -> Batch:
        """The same batch on ``device``."""
        y = None if self.y is None else self.y.to(device, non_blocking=True)
        return Batch(self.x.to(device, non_blocking=True), self.index.to(device, non_blocking=True), y)


@attrs.frozen
class ModelInfo:
    """What a plugin needs to build its own modules, given to the ``setup`` hook once."""

    latent_dim: int
    feature_dim: int
    input_shape: tuple[int, ...]
    n_train: int
    likelihood: str
    batch_size: int = 0
    """``train.batch_size`` (0 for a model built outside a training config)."""
    epochs: int = 0
    """``train.epochs``: the epochs the run is configured for (0 outside a training config)."""
    steps_per_epoch: int = 0
    """Optimiser steps per epoch, ceil(n_train / batch_size): with ``epochs``, the length of a
    schedule in steps (0 outside a training config)."""


@attrs.define(slots=True)
class StepContext:
    """The state of the run at the current hook call.

    ``training`` is False during validation and evaluation. ``kl_weight`` is the KL weight of the
    current iteration (``train.beta`` times the warm-up factor); ``warmup`` is the warm-up factor
    alone, in [0, 1], reaching 1 when warm-up ends. ``batch`` is the minibatch being processed (None outside
    a step, for example during prior sampling). ``model`` gives plugins the encoder and decoder
    (``model.encode``, ``model.decode``) without reaching into the trainer.
    """

    model: VAE
    training: bool = True
    epoch: int = 0
    step: int = 0
    kl_weight: float = 1.0
    warmup: float = 1.0
    batch: Batch | None = None


@attrs.frozen
class Term:
    """A loss term returned by ``extra_loss``: the value (a scalar, batch mean) and its weight.

    The core adds ``weight * value`` to the loss and logs ``value`` unweighted.
    """

    value: torch.Tensor
    weight: float = 1.0


@attrs.frozen
class Bound:
    """What an objective (the ``bound`` hook) returns: the loss to minimise and the terms to log.

    ``loss`` is a scalar (mean over the batch); ``terms`` are scalars logged under their names
    (for the ELBO: ``elbo``, ``rec``, ``kl``).
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = attrs.field(factory=dict)


@attrs.frozen
class EpochResult:
    """What ``on_epoch_end`` may return: metrics to log for the epoch and a request to stop."""

    metrics: dict[str, float] = attrs.field(factory=dict)
    stop: bool = False
    reason: str = ""


def as_epoch_result(value: Any) -> EpochResult:
    """Accept an ``EpochResult``, a plain metrics dict, or None from ``on_epoch_end``."""
    if value is None:
        return EpochResult()
    if isinstance(value, EpochResult):
        return value
    if isinstance(value, dict):
        return EpochResult(metrics=dict(value))
    raise TypeError(f"on_epoch_end must return EpochResult, dict or None, not {type(value).__name__}")
