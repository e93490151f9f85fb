"""One device-aware way to stream a split through a model: every evaluation loop, the core's and
the plugins', goes through :func:`device_batches` (and :func:`encode_split` for posteriors)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from vaecore.hooktypes import Batch, StepContext, set_context

if TYPE_CHECKING:
    from vaecore.data import Split
    from vaecore.distributions import Posterior
    from vaecore.model import VAE


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's parameters (the CPU for a model without any)."""
    param = next(model.parameters(), None)
    return torch.device("cpu") if param is None else param.device


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """The model in eval mode for the block, its previous mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def device_batches(model: VAE, split: Split, batch_size: int, ctx: StepContext | None = None) -> Iterator[Batch]:
    """The split's batches in order, moved to the model's device (inputs, indices and labels).
    With ``ctx``, ``ctx.batch`` is each batch in turn while it is being used (None after)."""
    device = model_device(model)
    try:
        for batch in split.batches(batch_size):
            moved = batch if device.type == "cpu" else batch.to(device)
            if ctx is not None:
                set_context(ctx, batch=moved)
            yield moved
    finally:
        if ctx is not None:
            set_context(ctx, batch=None)


@torch.no_grad()
def encode_split(
    model: VAE, split: Split, batch_size: int = 500, ctx: StepContext | None = None
) -> Iterator[tuple[Batch, Posterior]]:
    """``(batch, q(y|batch))`` for every batch of the split, on the model's device, in eval mode
    (the model's mode is restored when the iteration ends)."""
    ctx = ctx if ctx is not None else model.context(training=False)
    with eval_mode(model):
        for batch in device_batches(model, split, batch_size, ctx):
            yield batch, model.encode(batch.x, ctx)[0]
