"""A plugin written as a third party would, against the public API only: it registers one
component of every role (an encoder, a decoder, a likelihood and a dataset) and a KL schedule,
the hooks added in hook API version 2."""

from __future__ import annotations

import math

import attrs
import torch
from torch import nn

import vaecore
from vaecore import validators as v
from vaecore.data import Dataset, Split
from vaecore.likelihoods import Likelihood


@attrs.define(kw_only=True)
class GatedOptions:
    width: int = attrs.field(default=16, validator=v.gt(0))
    """units of the gated hidden layer"""


class GatedEncoder(nn.Module):
    """x -> a gated hidden layer (tanh times sigmoid) -> q(y|x)."""

    Options = GatedOptions

    def __init__(self, options: GatedOptions, input_shape: tuple[int, ...], latent_dim: int):
        super().__init__()
        n_in = math.prod(input_shape)
        self.value, self.gate = nn.Linear(n_in, options.width), nn.Linear(n_in, options.width)
        self.head = nn.Linear(options.width, 2 * latent_dim)
        self.feature_dim = options.width

    def forward(self, x):
        x = x.flatten(1)
        h = torch.tanh(self.value(x)) * torch.sigmoid(self.gate(x))
        loc, log_var = self.head(h).chunk(2, dim=-1)
        return loc, log_var, h


class LinearDecoder(nn.Module):
    """z -> one linear layer -> the likelihood's parameters (no options)."""

    autoregressive = False

    def __init__(self, latent_dim: int, param_shape: tuple[int, ...]):
        super().__init__()
        self.param_shape = param_shape
        self.net = nn.Linear(latent_dim, math.prod(param_shape))

    def forward(self, z):
        return self.net(z).view(z.shape[0], *self.param_shape)


def log_normaliser(lam: torch.Tensor) -> torch.Tensor:
    """log C(lambda) of the continuous Bernoulli, C = 2 artanh(1 - 2 lambda) / (1 - 2 lambda),
    with its limit log 2 near lambda = 1/2 (Taylor: log 2 + (4/3) d^2, d = lambda - 1/2)."""
    d = lam - 0.5
    safe = torch.where(d.abs() < 1e-3, torch.full_like(lam, 0.25), lam)
    exact = torch.log(2 * torch.atanh(1 - 2 * safe) / (1 - 2 * safe))
    return torch.where(d.abs() < 1e-3, math.log(2.0) + 4.0 / 3.0 * d * d, exact)


class ContinuousBernoulli(Likelihood):
    """The continuous Bernoulli of Loaiza-Ganem & Cunningham (2019) on each pixel, for data in [0, 1]."""

    name = "continuous_bernoulli"

    def __init__(self, input_shape: tuple[int, ...]):
        super().__init__()

    def log_prob_pixels(self, x, params):
        lam = torch.sigmoid(params).clamp(1e-6, 1 - 1e-6)
        x = x.expand_as(params)
        return x * torch.log(lam) + (1 - x) * torch.log1p(-lam) + log_normaliser(lam)

    def mean(self, params):
        lam = torch.sigmoid(params).clamp(1e-6, 1 - 1e-6)
        near = (lam - 0.5).abs() < 1e-3
        safe = torch.where(near, torch.full_like(lam, 0.25), lam)
        exact = safe / (2 * safe - 1) + 1 / (2 * torch.atanh(1 - 2 * safe))
        return torch.where(near, torch.full_like(lam, 0.5), exact)

    def sample(self, params):  # inverse CDF
        lam = torch.sigmoid(params).clamp(1e-3, 1 - 1e-3)
        u = torch.rand_like(lam)
        return torch.log1p(u * (2 * lam - 1) / (1 - lam)) / torch.log(lam / (1 - lam))

    def check_data(self, binary, lo, hi):
        return None if 0 <= lo and hi <= 1 else f"continuous_bernoulli needs inputs in [0, 1], got [{lo:g}, {hi:g}]"


@attrs.define(kw_only=True)
class StripesOptions:
    rows: int = attrs.field(default=240, validator=v.gt(5))
    """training rows (validation and test get a quarter each)"""
    side: int = attrs.field(default=4, validator=v.gt(1))
    """images are side x side, flattened"""


def stripes(data, options: StripesOptions) -> Dataset:
    """Images with one bright row or column (labels: which of the 2 * side stripes), soft noise."""
    gen = torch.Generator().manual_seed(data.seed)
    s = options.side
    patterns = torch.zeros(2 * s, s, s)
    for i in range(s):
        patterns[i, i, :] = 1
        patterns[s + i, :, i] = 1

    def split(n):
        y = torch.randint(0, 2 * s, (n,), generator=gen)
        x = (0.8 * patterns[y] + 0.1 + 0.1 * torch.rand(n, s, s, generator=gen)).flatten(1)
        return Split(x, y)

    n = options.rows
    return Dataset("stripes", split(n), split(n // 4), split(n // 4), binary=False)


class Toykit:
    """Registers the components above and halves the KL weight (a trivial schedule)."""

    api_version = vaecore.HOOK_API_VERSION

    def __init__(self):
        self.weights: list[float] = []

    @staticmethod
    @vaecore.hookimpl
    def components():
        return [
            vaecore.Component("encoder", "gated", GatedEncoder),
            vaecore.Component("decoder", "linear", LinearDecoder, doc="one linear layer"),
            vaecore.Component("likelihood", "continuous_bernoulli", ContinuousBernoulli),
            vaecore.Component("dataset", "stripes", stripes, options=StripesOptions),
        ]

    @vaecore.hookimpl
    def kl_weight(self, weight, ctx):
        self.weights.append(weight / 2)
        return weight / 2
