"""Cyclical KL annealing (Fu et al. 2019, "Cyclical Annealing Schedule: A Simple Approach to
Mitigating KL Vanishing", NAACL), through the ``kl_weight`` hook, so it stacks with any bound.

The T training steps of the run are split into M = ``cycles`` cycles of P = T / M steps (or P is
set directly by ``period_epochs``). With tau = mod(t, ceil(P)) / P the position of step t (0-based)
in its cycle, the schedule is

    beta_t = f(tau / R)  for tau <= R,      beta_t = 1  otherwise,

R = ``ratio`` the part of each cycle spent increasing and f an increasing map of [0, 1] onto
[``start``, 1]: ``linear`` (Fu et al.'s main schedule), ``sigmoid`` (1 / (1 + exp(-x)) for x from
-6 to 6, as in their released code) or ``cosine`` (1/2 - cos(pi u) / 2). The weight the step uses
is the core's weight (``train.beta`` times the KL warm-up) multiplied by beta_t: ``train.beta``
sets the top of each cycle; leave ``train.kl_warmup`` at its default (none) unless both are meant.
Validation and evaluation use the core's weight (1), as for every schedule.

T is ``train.epochs`` x steps per epoch, so resuming a run with more epochs stretches the cycles
of ``cycles``; with ``period_epochs`` the cycles keep their length however long the run trains.
"""

from __future__ import annotations

import math

import attrs

from vaecore import HOOK_API_VERSION, ConfigError, hookimpl
from vaecore import validators as v

SHAPES = ("linear", "sigmoid", "cosine")


@attrs.define(kw_only=True)
class CyclicOptions:
    cycles: int = attrs.field(default=4, validator=v.gt(0))
    """M, the number of cycles over the run (Fu et al.: 4)."""
    ratio: float = attrs.field(default=0.5, validator=v.between(0.0, 1.0))
    """R, the part of each cycle in which the weight increases (Fu et al.: 0.5); the rest stays at 1."""
    shape: str = attrs.field(default="linear", validator=v.one_of(SHAPES))
    """How the weight increases within a cycle: linear, sigmoid or cosine."""
    start: float = attrs.field(default=0.0, validator=v.between(0.0, 1.0))
    """The weight at the start of each cycle (Fu et al.: 0)."""
    total_steps: int | None = attrs.field(default=None, validator=v.gt(0))
    """T, the steps the cycles span (None: the run's, ``train.epochs`` x steps per epoch)."""
    period_epochs: float | None = attrs.field(default=None, validator=v.gt(0, finite=True))
    """The length of one cycle in epochs, instead of ``cycles`` cycles over T (cycles then repeat
    for as long as the run trains)."""


def cyclic_factor(step: int, period: float, options: CyclicOptions) -> float:
    """beta_t of the 0-based training step ``step`` in cycles of ``period`` steps (see the module
    docstring)."""
    tau = (step % math.ceil(period)) / period
    if options.ratio == 0 or tau > options.ratio:
        return 1.0
    u = tau / options.ratio
    if options.shape == "sigmoid":
        rise = 1.0 / (1.0 + math.exp(-(12.0 * u - 6.0)))
    elif options.shape == "cosine":
        rise = 0.5 - 0.5 * math.cos(math.pi * u)
    else:
        rise = u
    return options.start + (1.0 - options.start) * rise


class CyclicKL:
    """Multiplies the core's KL weight by Fu et al.'s cyclical schedule during training."""

    api_version = HOOK_API_VERSION
    Options = CyclicOptions

    def __init__(self, options: CyclicOptions):
        self.options = options
        self.period = 0.0

    @hookimpl
    def setup(self, info):
        opts = self.options
        if opts.period_epochs is not None:
            self.period = opts.period_epochs * info.steps_per_epoch
        else:
            self.period = (opts.total_steps or info.epochs * info.steps_per_epoch) / opts.cycles
        if self.period <= 0:
            raise ConfigError(
                "plugins: kl_cyclic needs the run's length: train it through vaecore train, or set total_steps"
            )

    @hookimpl
    def kl_weight(self, weight, ctx):
        if not ctx.training:
            return None
        return weight * cyclic_factor(ctx.step, self.period, self.options)
