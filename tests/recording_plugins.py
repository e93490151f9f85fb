"""Test plugins for the core suite: every hook implemented, calls recorded per instance."""

from __future__ import annotations

import attrs
import torch
from torch import nn

from vaecore import HOOK_API_VERSION, Bound, EpochResult, Term, hookimpl
from vaecore import validators as v
from vaecore.distributions import DiagonalGaussian, StandardNormal


@attrs.define(kw_only=True)
class RecorderOptions:
    tag: str = "r"
    shift: float = 0.0
    scale: float = attrs.field(default=1.0, validator=v.gt(0))
    weight: float = 1.0
    stop_at_epoch: int | None = None


LOG: list[tuple[str, str]] = []
"""(hook, tag) of every call, across instances, in call order."""


class Recorder(nn.Module):
    """Implements every non-claimed hook; its effect on each value is traceable by tag."""

    api_version = HOOK_API_VERSION
    Options = RecorderOptions

    def __init__(self, options: RecorderOptions):
        super().__init__()
        self.options = options
        self.calls: dict[str, int] = {}
        self.info = None

    def _note(self, hook: str) -> None:
        self.calls[hook] = self.calls.get(hook, 0) + 1
        LOG.append((hook, self.options.tag))

    @hookimpl
    def setup(self, info):
        self._note("setup")
        self.info = info
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @hookimpl
    def pre_encode(self, x, ctx):
        self._note("pre_encode")
        return x * self.options.scale

    @hookimpl
    def post_posterior(self, posterior, features, ctx):
        self._note("post_posterior")
        return DiagonalGaussian(posterior.loc + self.options.shift, posterior.var)

    @hookimpl
    def latent_map(self, y, ctx):
        self._note("latent_map")
        return y * self.options.scale

    @hookimpl
    def extra_loss(self, out, ctx):
        self._note("extra_loss")
        return {"l2": Term(out.z.pow(2).sum(-1).mean(), weight=self.options.weight)}

    @hookimpl
    def on_step_end(self, ctx):
        self._note("on_step_end")
        self.steps += 1

    @hookimpl
    def on_epoch_end(self, epoch, metrics, ctx):
        self._note("on_epoch_end")
        stop = self.options.stop_at_epoch is not None and epoch >= self.options.stop_at_epoch
        return EpochResult(metrics={"steps": float(self.steps)}, stop=stop, reason="asked by test")

    @hookimpl
    def eval_metrics(self, model, split, ctx):
        self._note("eval_metrics")
        return {"n": len(split)}


class ScaledBound:
    """Claims the bound: minus the mean log-weight, times a factor (2 makes it distinguishable)."""

    api_version = HOOK_API_VERSION

    @hookimpl
    def bound(self, out, ctx):
        return Bound(loss=-2.0 * out.log_w.mean(), terms={"half": out.log_w.mean()})

    @hookimpl
    def forward_samples(self, training):
        return 3 if training else 2


class OtherBound:
    api_version = HOOK_API_VERSION

    @hookimpl
    def bound(self, out, ctx):
        return Bound(loss=-out.log_w.mean())


class WidePrior:
    """Claims the prior: N(0, 4 I), so the KL must become a Monte Carlo estimate."""

    api_version = HOOK_API_VERSION

    @hookimpl
    def prior(self, info, model):
        self.dim = info.latent_dim
        self.encoder_seen = model.encoder
        return self

    def log_prob(self, y):
        return torch.distributions.Normal(0.0, 2.0).log_prob(y).sum(-1)

    def sample(self, n):
        return 2.0 * torch.randn(n, self.dim)


class DecoderOnly:
    """Claims the training step: only decoder-side parameters move, on an extra random batch too."""

    api_version = HOOK_API_VERSION

    def __init__(self):
        self.steps = 0

    @hookimpl
    def train_step(self, batch, ctx, loop):
        self.steps += 1
        extra = loop.sample_batch()
        assert extra.x.shape == batch.x.shape or extra.x.shape[0] <= batch.x.shape[0]
        names, values, loss = loop.objective(batch, ctx)
        loop.update(loss, names, values, loop.decoder_parameters)
        return names, values


class BadName:
    api_version = HOOK_API_VERSION

    @hookimpl
    def extra_loss(self, out):
        return {"elbo.rec": out.z.sum()}


class ExtraArgument:
    api_version = HOOK_API_VERSION

    @hookimpl
    def latent_map(self, y, ctx, temperature):
        return y


class DefaultArgument:
    api_version = HOOK_API_VERSION

    @hookimpl
    def latent_map(self, y, ctx=None):
        return y


class UnknownHook:
    api_version = HOOK_API_VERSION

    @hookimpl
    def before_everything(self, ctx):
        return None


class TryFirstFold:
    api_version = HOOK_API_VERSION

    @hookimpl(tryfirst=True)
    def pre_encode(self, x):
        return x


class OldApi:
    api_version = HOOK_API_VERSION + 1

    @hookimpl
    def pre_encode(self, x):
        return x


class NaNLoss:
    """Produces a NaN term at a chosen training step."""

    api_version = HOOK_API_VERSION

    @attrs.define(kw_only=True)
    class Options:
        at_step: int = 0

    def __init__(self, options):
        self.options = options

    @hookimpl
    def extra_loss(self, out, ctx):
        value = out.z.sum() * 0
        if ctx.training and ctx.step >= self.options.at_step:
            value = value + float("nan")
        return {"boom": value}


@attrs.define(kw_only=True)
class ScheduleOptions:
    factor: float = 0.5


class Schedule:
    """A KL schedule: multiplies the weight it receives by ``factor`` in training and records
    each (step, weight received, weight returned)."""

    api_version = HOOK_API_VERSION
    Options = ScheduleOptions

    def __init__(self, options: ScheduleOptions):
        self.factor = options.factor
        self.seen: list[tuple[int, float, float]] = []

    @hookimpl
    def kl_weight(self, weight, ctx):
        self.seen.append((ctx.step, weight, weight * self.factor))
        return weight * self.factor


ALL = {
    "recorder": Recorder,
    "schedule": Schedule,
    "scaled_bound": ScaledBound,
    "other_bound": OtherBound,
    "wide_prior": WidePrior,
    "decoder_only": DecoderOnly,
    "bad_name": BadName,
    "extra_argument": ExtraArgument,
    "default_argument": DefaultArgument,
    "unknown_hook": UnknownHook,
    "tryfirst_fold": TryFirstFold,
    "old_api": OldApi,
    "nan_loss": NaNLoss,
}

__all__ = ["ALL", "LOG", "StandardNormal"]
