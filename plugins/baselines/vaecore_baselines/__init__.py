"""Baselines the papers compare against: aggressive encoder training, MoG and VampPrior priors,
and cyclical KL annealing (Fu et al. 2019)."""

from vaecore_baselines.aggressive import Aggressive, AggressiveOptions
from vaecore_baselines.priors import MixturePrior, MixturePriorOptions, VampPrior, VampPriorOptions
from vaecore_baselines.schedules import CyclicKL, CyclicOptions, cyclic_factor

__all__ = [
    "Aggressive",
    "AggressiveOptions",
    "CyclicKL",
    "CyclicOptions",
    "MixturePrior",
    "MixturePriorOptions",
    "VampPrior",
    "VampPriorOptions",
    "cyclic_factor",
]
