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


class Extras:
    """Scratch space that one forward pass gives each plugin: what a plugin's ``pre_encode``,
    ``post_posterior`` or ``latent_map`` stores in ``ctx.extras.of(self)`` during
    ``model.forward`` is in ``out.extras.of(self)`` for its ``extra_loss`` and ``bound`` on that
    output, and nowhere else (the next forward pass starts empty; calls outside a forward pass,
    such as prior sampling or another plugin's re-encoding, write to the context's own space)."""

    __slots__ = ("_by_plugin",)

    def __init__(self) -> None:
        self._by_plugin: dict[int, dict[str, Any]] = {}

    def of(self, plugin: object) -> dict[str, Any]:
        """The dict of ``plugin`` (pass ``self``), created empty on first use."""
        return self._by_plugin.setdefault(id(plugin), {})


@attrs.frozen(slots=True)
class StepContext:
    """The state of the run at the current hook call, read-only to plugins.

    Fields, as the trainer sets them:

    * ``model``: the VAE (``model.encode``, ``model.decode``, ``model.prior``), without reaching
      into the trainer.
    * ``training``: True in training steps (and in ``on_step_end``); False in validation, in the
      final evaluation and in analysis; ``on_epoch_end`` sees the validation context (False).
    * ``epoch``: 1-based epoch being trained or validated (0 before the first epoch, and in a
      context made by ``model.context()`` outside the trainer).
    * ``step``: optimiser steps taken so far in the run (0-based index of the current step in
      training; unchanged by validation; resumed exactly).
    * ``kl_weight``: in training, the step's KL weight after every ``kl_weight`` hook (``train.beta``
      times the warm-up factor without one); 1 in validation and evaluation.
    * ``warmup``: the warm-up factor alone, in [0, 1] (1 when warm-up ends and outside training).
    * ``batch``: the minibatch being processed, on the model's device (None outside a step, e.g.
      in prior sampling and in ``on_epoch_end``).
    * ``extras``: the current forward pass's :class:`Extras` (see there).

    Assigning a field raises: a plugin keeps its own state on itself, and per forward pass in
    ``ctx.extras``. The core updates a context with :func:`set_context`.
    """

    model: VAE
    training: bool = True
    epoch: int = 0
    step: int = 0
    kl_weight: float = 1.0
    warmup: float = 1.0
    batch: Batch | None = None
    extras: Extras = attrs.field(factory=Extras, eq=False)


def _read_only(self: StepContext, name: str, value: Any) -> None:
    raise AttributeError(
        f"StepContext.{name} is read-only to plugins: the core sets the step's state; keep your own state "
        "on the plugin, or per forward pass in ctx.extras.of(self)"
    )


StepContext.__setattr__ = _read_only  # type: ignore[assignment,method-assign]
_write = object.__setattr__


def set_context(ctx: StepContext, **fields: Any) -> None:
    """Update ``ctx`` in place: for the core only (the trainer, the evaluation loops)."""
    for name, value in fields.items():
        _write(ctx, name, value)


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
