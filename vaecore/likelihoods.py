"""Decoder distributions p(x|z): log-likelihood, mean and samples from the decoder's output."""

from __future__ import annotations

import math

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from vaecore import validators as v


class Likelihood(nn.Module):
    """The decoder outputs one parameter tensor of the input's shape; ``log_prob`` sums over pixels."""

    name = "base"

    def param_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of the decoder output for one example: the input's own shape here (one
        parameter per input dimension); a likelihood with several parameters per dimension
        (a categorical over a vocabulary) returns its own."""
        return tuple(input_shape)

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x|z), summed over the input dimensions: ``params`` ``(K, B, *shape)`` -> ``(K, B)``."""
        return _sum_pixels(self.log_prob_pixels(x, params), x.dim() - 1)

    def log_prob_pixels(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x_i|z) of every input dimension, broadcast to ``params``' shape (not summed).

        Every likelihood here has one parameter per pixel, so an autoregressive decoder can
        score and sample pixel by pixel with the same object."""
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mode(self, params: torch.Tensor) -> torch.Tensor:
        """The most probable value of each pixel (greedy decoding of an autoregressive decoder)."""
        return self.mean(params)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def draw_pixel(self, params: torch.Tensor, index: int, greedy: bool = False) -> torch.Tensor:
        """A sample (the mode when ``greedy``) of input dimension ``index`` (flat, raster order)
        of each example, ``(B,)``, given ``params`` ``(B, *param_shape)`` of which that dimension's
        entries are set: how an autoregressive decoder draws pixel by pixel. The default draws
        the whole input and keeps one dimension (right for any likelihood whose dimensions are
        independent given their parameters); a likelihood without per-dimension state overrides
        it with the one draw."""
        drawn = self.mode(params) if greedy else self.sample(params)
        return drawn.flatten(1)[:, index]

    def check_data(self, binary: bool, lo: float, hi: float) -> str | None:
        """Why data with these properties does not fit this likelihood, or None when it does."""
        return None

    def units(self, x: torch.Tensor) -> torch.Tensor | None:
        """The number of units each example of ``x`` ``(B, *shape)`` is scored on, ``(B,)``
        (the tokens of a sentence, its end token included), or None (the default) when a per-unit
        figure means nothing. When given, the evaluation also reports ``nll_per_unit`` (the
        importance-sampled NLL summed over the split over the units summed) and
        ``ppl = exp(nll_per_unit)``, the perplexity per word of the text-VAE papers."""
        return None

    def render(self, x: torch.Tensor) -> list[str] | None:
        """Each example of ``x`` ``(B, *shape)`` as text (token ids to a sentence), or None (the
        default) when the inputs are not text. The analysis commands print and store what this
        returns instead of drawing image grids."""
        return None


def _sum_pixels(t: torch.Tensor, ndim: int) -> torch.Tensor:
    return t.flatten(start_dim=t.dim() - ndim).sum(-1)


class Bernoulli(Likelihood):
    """Bernoulli on each pixel, parameterised by logits; targets in [0, 1]."""

    name = "bernoulli"

    def __init__(self, input_shape: tuple[int, ...]):
        super().__init__()

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        # negated after the sum: one sign flip per example, not per pixel (the training step's hot path)
        return -_sum_pixels(self._nll_pixels(x, params), x.dim() - 1)

    def log_prob_pixels(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return -self._nll_pixels(x, params)

    @staticmethod
    def _nll_pixels(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(params, x.expand_as(params), reduction="none")

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)

    def mode(self, params: torch.Tensor) -> torch.Tensor:
        return (params > 0).to(params.dtype)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return torch.bernoulli(torch.sigmoid(params))

    def draw_pixel(self, params: torch.Tensor, index: int, greedy: bool = False) -> torch.Tensor:
        logits = params.flatten(1)[:, index]
        return self.mode(logits) if greedy else self.sample(logits)

    def check_data(self, binary: bool, lo: float, hi: float) -> str | None:
        if lo < 0 or hi > 1:
            return f"the bernoulli likelihood needs inputs in [0, 1], the data spans [{lo:g}, {hi:g}]"
        return None


@attrs.define(kw_only=True)
class ScaleOptions:
    """``gaussian`` and ``laplace``: the scale of each pixel's distribution."""

    scale: float = attrs.field(default=1.0, validator=v.gt(0, finite=True))
    """the fixed (or initial) std of ``gaussian`` or scale of ``laplace``"""
    learn_scale: bool = False
    """learn the scale (one per pixel) instead of fixing it"""


class _LocationScale(Likelihood):
    """Shared scale handling for Gaussian and Laplace: a fixed scale or a learned one per pixel."""

    Options = ScaleOptions

    def __init__(self, options: ScaleOptions, input_shape: tuple[int, ...]):
        super().__init__()
        log_scale = torch.full(input_shape, math.log(options.scale))
        if options.learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params


class Gaussian(_LocationScale):
    """Gaussian on each pixel with the decoder's output as mean."""

    name = "gaussian"

    def log_prob_pixels(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        ll = -0.5 * ((x - params) * torch.exp(-self.log_scale)).pow(2) - self.log_scale - 0.5 * math.log(2 * math.pi)
        return ll.expand_as(params)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return params + torch.randn_like(params) * self.log_scale.exp()


class Laplace(_LocationScale):
    """Laplace on each pixel with the decoder's output as location."""

    name = "laplace"

    def log_prob_pixels(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        ll = -(x - params).abs() * torch.exp(-self.log_scale) - self.log_scale - math.log(2.0)
        return ll.expand_as(params)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Laplace(params, self.log_scale.exp().expand_as(params)).sample()
