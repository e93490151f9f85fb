"""Priors that replace N(0, I): a mixture of Gaussians (fixed or learned) and the VampPrior.

Both claim the ``prior`` hook; the model then has no analytic KL, so every bound uses the Monte
Carlo KL log q(y|x) - log p(y), and prior sampling draws from the mixture.
"""

from __future__ import annotations

import math
import weakref

import attrs
import torch
from torch import nn

from vaecore import HOOK_API_VERSION, hookimpl
from vaecore import validators as v
from vaecore.distributions import LOG_2PI


def mixture_log_prob(
    y: torch.Tensor, loc: torch.Tensor, log_var: torch.Tensor, log_weights: torch.Tensor
) -> torch.Tensor:
    """log sum_k w_k N(y; loc_k, diag(exp(log_var_k))) for y ``(..., D)`` and K components ``(K, D)``."""
    diff = y.unsqueeze(-2) - loc
    log_n = -0.5 * (diff.pow(2) * torch.exp(-log_var) + log_var + LOG_2PI).sum(-1)
    return torch.logsumexp(log_n + log_weights, dim=-1)


def mixture_sample(n: int, loc: torch.Tensor, log_var: torch.Tensor, log_weights: torch.Tensor) -> torch.Tensor:
    """n samples of the mixture."""
    k = torch.multinomial(log_weights.softmax(-1), n, replacement=True)
    return loc[k] + torch.randn(n, loc.shape[-1], device=loc.device) * torch.exp(0.5 * log_var[k])


@attrs.define(kw_only=True)
class MixturePriorOptions:
    components: int = attrs.field(default=10, validator=v.gt(0))
    learn: bool = True
    """Learn the means, variances and weights; otherwise they stay at their initial values."""
    spread: float = attrs.field(default=1.0, validator=v.ge(0))
    """Standard deviation of the initial means around 0 (drawn with the run's seed)."""
    scale: float = attrs.field(default=1.0, validator=v.gt(0))
    """Initial standard deviation of every component."""


class MixturePrior(nn.Module):
    """p(y) = sum_k pi_k N(y; m_k, diag(s_k^2)); pi is a softmax of learned logits."""

    api_version = HOOK_API_VERSION
    Options = MixturePriorOptions

    def __init__(self, options: MixturePriorOptions):
        super().__init__()
        self.options = options

    @hookimpl
    def setup(self, info):
        o = self.options
        loc = torch.randn(o.components, info.latent_dim) * o.spread
        log_var = torch.full((o.components, info.latent_dim), 2 * math.log(o.scale))
        logits = torch.zeros(o.components)
        for name, value in (("loc", loc), ("log_var", log_var), ("logits", logits)):
            if o.learn:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)

    @hookimpl
    def prior(self):
        return self

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        return mixture_log_prob(y, self.loc, self.log_var, self.logits.log_softmax(-1))

    def sample(self, n: int) -> torch.Tensor:
        return mixture_sample(n, self.loc, self.log_var, self.logits.log_softmax(-1))


@attrs.define(kw_only=True)
class VampPriorOptions:
    pseudo_inputs: int = attrs.field(default=500, validator=v.gt(0))
    """Number K of learned pseudo-inputs (Tomczak and Welling 2018: 500)."""
    init_mean: float = 0.05
    init_std: float = attrs.field(default=0.01, validator=v.ge(0))
    """Pseudo-inputs start as N(init_mean, init_std^2) pixels, as the authors' MNIST setting."""


class VampPrior(nn.Module):
    """p(y) = 1/K sum_k q(y | u_k) with learned pseudo-inputs u_k, clamped to [0, 1] for binary data.

    The components are the encoder network's Gaussian q(y|u) without the stack's ``pre_encode`` and
    ``post_posterior`` hooks (so that, say, a batch-norm plugin does not see pseudo-inputs).
    """

    api_version = HOOK_API_VERSION
    Options = VampPriorOptions

    def __init__(self, options: VampPriorOptions):
        super().__init__()
        self.options = options
        self._model: weakref.ref | None = None

    @hookimpl
    def setup(self, info):
        o = self.options
        self.unit_interval = info.likelihood == "bernoulli"
        self.pseudo = nn.Parameter(o.init_mean + o.init_std * torch.randn(o.pseudo_inputs, *info.input_shape))

    @hookimpl
    def prior(self, model):
        self._model = weakref.ref(model)
        return self

    def mixture(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Means and log-variances of q(y|u_k), ``(K, D)`` each."""
        model = self._model() if self._model is not None else None
        if model is None:
            raise RuntimeError("the VampPrior is not attached to a model")
        u = self.pseudo.clamp(0.0, 1.0) if self.unit_interval else self.pseudo
        loc, log_var, _ = model.encoder(u)
        return loc, log_var

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        loc, log_var = self.mixture()
        uniform = torch.full((loc.shape[0],), -math.log(loc.shape[0]), device=loc.device)
        return mixture_log_prob(y, loc, log_var, uniform)

    def sample(self, n: int) -> torch.Tensor:
        loc, log_var = self.mixture()
        return mixture_sample(n, loc, log_var, torch.zeros(loc.shape[0], device=loc.device))
