"""DU-VAE (Shen et al. 2021, section 3 and algorithm 1): dropout on the posterior variances and
batch normalisation of the posterior means, applied to q(y|x) through the ``post_posterior`` hook.

What the hook does to the diagonal Gaussian N(mu, diag(v)) it receives (``v`` is that posterior's
variance; with ``du`` first in the stack it is ``exp(log_var)`` of the encoder head, exactly the
quantity the authors' image code drops out):

* variance:  sigma^2 = floor + dropout(v)   (eq. 6 with alpha = ``floor`` = 1/(2 pi e));
  ``dropout`` is inverted dropout (kept elements are divided by 1 - ``drop``, so its expectation
  is v), a fresh mask per element and per call, in training only and only once the KL warm-up
  factor has reached ``drop_start`` (1 by default: "once the KL weight has reached 1", as the
  authors' code). The floor is always added. The KL the core computes from the returned Gaussian is
  therefore the KL of the dropped-out variance, as in the authors' code.
* mean:      mu_hat = BatchNorm1d(mu) with bias (beta_mu) learned from 0, batch statistics in
  training and running statistics in evaluation. The weight (gamma_mu, the per-dimension scale)
  depends on ``scale``:

  - ``"learned"`` (DU-VAE, section 3.3): a parameter initialised to ``gamma`` and rescaled so that
    mean(weight^2) = gamma^2, either at the start of every forward (``rescale = "forward"``, the
    authors' code) or after every optimiser step (``rescale = "step"``, algorithm 1 line 9). Only
    the mean square is pinned; single dimensions drift above and below gamma.
  - ``"fixed"`` (BN-VAE, Zhu et al. 2020): gamma in every dimension, a constant buffer (not a
    parameter, never trained or rescaled). Each dimension's batch KL is then at least
    (gamma^2 s_d / (s_d + eps) + beta_d^2) / 2, s_d the batch variance of the raw means: Zhu et al.'s
    bound (gamma^2 + beta_d^2) / 2, reduced by BatchNorm's eps.

BN-VAE is ``scale = "fixed", drop = 0, floor = 0`` (``examples/bn_vae.toml``): Zhu et al. batch-
normalise the means only, with torch's BatchNorm1d defaults (eps 1e-5, momentum 0.1), and leave the
log-variance as the encoder gives it.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import nn

import vaecore
from vaecore import validators as v
from vaecore.distributions import DiagonalGaussian

ALPHA = 1.0 / (2.0 * math.pi * math.e)
"""The variance floor of the paper, 1/(2 pi e) ~ 0.05855: the variance of a zero-entropy Gaussian."""

RESCALE_MODES = ("forward", "step")
SCALE_MODES = ("learned", "fixed")


def _probability_below_one(_instance: Any, _attribute: Any, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"must be in [0, 1) (a drop probability), got {value!r}")


@attrs.define(kw_only=True)
class DUOptions:
    """Options of the ``du`` plugin (see the README for the mapping to the paper's symbols)."""

    gamma: float = attrs.field(default=0.5, validator=v.gt(0))
    """Scale of the batch-normalised means: with ``scale = "learned"`` mean(weight^2) is kept at
    gamma^2; with ``scale = "fixed"`` every dimension's weight is gamma."""
    scale: str = attrs.field(default="learned", validator=v.one_of(SCALE_MODES))
    """The BN weight: "learned" (DU-VAE: a per-dimension parameter whose mean square is rescaled
    to gamma^2, see ``rescale``) or "fixed" (BN-VAE: gamma in every dimension, a constant buffer,
    not trained)."""
    drop: float = attrs.field(default=0.1, validator=_probability_below_one)
    """Drop probability of the variance dropout; the paper's keep probability is p = 1 - drop.
    0 turns dropout off (BN-VAE is drop = 0 with floor = 0 and scale = "fixed")."""
    floor: float = attrs.field(default=ALPHA, validator=v.ge(0))
    """The variance floor alpha added to every variance (default 1/(2 pi e); 0: none)."""
    drop_start: float = attrs.field(default=1.0, validator=v.between(0.0, 1.0))
    """Dropout is on once the KL warm-up factor is >= drop_start (1: after warm-up; 0: always)."""
    rescale: str = attrs.field(default="forward", validator=v.one_of(RESCALE_MODES))
    """When a learned BN weight is rescaled to mean(weight^2) = gamma^2: "forward" (authors' code)
    or "step" (after each optimiser step, algorithm 1). Unused with ``scale = "fixed"``."""
    bn_eps: float = attrs.field(default=1e-5, validator=v.gt(0))
    bn_momentum: float = attrs.field(default=0.1, validator=v.between(0.0, 1.0))

    def validate(self) -> None:
        if self.drop > 0 and self.floor == 0:
            raise ValueError(
                "drop > 0 needs floor > 0: a dropped variance would be exactly 0 (log 0); "
                f"got drop={self.drop} and floor=0"
            )
        if self.scale == "fixed" and self.rescale == "step":
            raise ValueError(
                "rescale = 'step' has no effect with scale = 'fixed' (the weight is gamma in every "
                "dimension and never changes); leave rescale at its default"
            )


class FixedScaleBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose weight is the constant ``gamma`` in every dimension (BN-VAE).

    ``weight`` is a buffer, not a parameter: no optimiser sees it and no gradient reaches it. It is
    kept in the state dict under the same key as a learned weight (``weight``), so checkpoints of
    both ``scale`` modes have the same layout; loading one whose weight is not ``gamma`` everywhere
    (a learned weight, or another gamma) is refused rather than silently changing the scale.
    ``bias`` is an ordinary parameter initialised to 0, as in Zhu et al.'s code.
    """

    def __init__(self, num_features: int, gamma: float, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True)
        self.gamma = float(gamma)
        weight = torch.full_like(self.weight.detach(), self.gamma)
        del self.weight
        self.register_buffer("weight", weight)

    def reset_parameters(self) -> None:
        super().reset_parameters()  # running statistics, weight 1 and bias 0
        if isinstance(self.weight, torch.Tensor) and not isinstance(self.weight, nn.Parameter):
            with torch.no_grad():
                self.weight.fill_(self.gamma)

    def _apply(self, *args: Any, **kwargs: Any) -> FixedScaleBatchNorm1d:
        # after a dtype or device move (.double(), .to(...)), gamma in the new dtype, not a cast of
        # the old one (float32(0.6) cast to float64 is not float64(0.6))
        out = super()._apply(*args, **kwargs)
        with torch.no_grad():
            self.weight.fill_(self.gamma)
        return out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight fixed at {self.gamma}"

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        loaded = state_dict.get(prefix + "weight")
        if isinstance(loaded, torch.Tensor) and loaded.shape == self.weight.shape:
            target = torch.full(loaded.shape, self.gamma, dtype=loaded.dtype)
            if not torch.equal(loaded.detach().cpu(), target):
                error_msgs.append(
                    f"{prefix}weight: du with scale = 'fixed' needs gamma = {self.gamma} in every dimension, "
                    f"the checkpoint has values from {loaded.min().item():.6g} to {loaded.max().item():.6g} "
                    "(it was not trained with this scale)"
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        with torch.no_grad():
            self.weight.fill_(self.gamma)  # exactly gamma in this buffer's own dtype


class DUPlugin(nn.Module):
    """``du``: dropout on the variances and batch normalisation of the means of q(y|x)."""

    api_version = vaecore.HOOK_API_VERSION
    Options = DUOptions

    def __init__(self, options: DUOptions | None = None):
        super().__init__()
        self.options = options if options is not None else DUOptions()
        self.bn: nn.BatchNorm1d | None = None

    # hooks ---------------------------------------------------------------------------------

    @vaecore.hookimpl
    def setup(self, info):
        opts = self.options
        if opts.scale == "fixed":
            self.bn = FixedScaleBatchNorm1d(info.latent_dim, opts.gamma, eps=opts.bn_eps, momentum=opts.bn_momentum)
            return
        self.bn = nn.BatchNorm1d(info.latent_dim, eps=opts.bn_eps, momentum=opts.bn_momentum, affine=True)
        with torch.no_grad():
            self.bn.weight.fill_(opts.gamma)
            self.bn.bias.zero_()

    @vaecore.hookimpl
    def post_posterior(self, posterior, ctx):
        loc, var = _gaussian_parts(posterior)
        opts = self.options
        batch_mode = self.training and ctx.training
        if opts.scale == "learned" and opts.rescale == "forward":
            self.rescale_weight()
        loc = self.normalise(loc, batch_mode)
        dropped = opts.drop > 0 and batch_mode and ctx.warmup >= opts.drop_start
        if dropped:
            var = F.dropout(var, p=opts.drop, training=True)
        if opts.floor > 0:
            return DiagonalGaussian(loc, var + opts.floor)
        # no floor and no dropout: the variance is unchanged, keep its exact log
        return DiagonalGaussian(loc, var, posterior.log_var if hasattr(posterior, "log_var") else None)

    @vaecore.hookimpl
    def on_step_end(self, ctx):
        if self.options.scale == "learned" and self.options.rescale == "step":
            self.rescale_weight()

    # pieces --------------------------------------------------------------------------------

    @torch.no_grad()
    def rescale_weight(self) -> None:
        """gamma_mu <- gamma * gamma_mu / sqrt(mean(gamma_mu^2)) (algorithm 1, line 9), in place.

        Done on ``.data`` outside autograd, as the authors' code does: when the weight already has
        the target scale the factor is 1, so a second encoder pass within one step (re-encoding)
        does not disturb the graph of the first. With ``scale = "fixed"`` the weight is gamma
        already and is left alone (not even multiplied by a factor of 1 +- 1 ulp).
        """
        assert self.bn is not None, "du: setup was not called"
        if self.options.scale == "fixed":
            return
        w = self.bn.weight.data
        rms = w.pow(2).mean().sqrt()
        if rms > 0:
            w.mul_(self.options.gamma / rms)

    def normalise(self, loc: torch.Tensor, batch_mode: bool) -> torch.Tensor:
        """BatchNorm1d of the means: batch statistics (and a running-statistics update) when
        ``batch_mode``, running statistics otherwise. A training batch of one example has no batch
        variance: it is normalised with the running statistics and does not update them."""
        bn = self.bn
        assert bn is not None, "du: setup was not called"
        use_batch = batch_mode and loc.shape[0] > 1
        if use_batch:
            bn.num_batches_tracked.add_(1)
        return F.batch_norm(
            loc,
            bn.running_mean,
            bn.running_var,
            bn.weight,
            bn.bias,
            training=use_batch,
            momentum=bn.momentum,
            eps=bn.eps,
        )


def _gaussian_parts(posterior: Any) -> tuple[torch.Tensor, torch.Tensor]:
    loc, var = getattr(posterior, "loc", None), getattr(posterior, "var", None)
    if not isinstance(loc, torch.Tensor) or not isinstance(var, torch.Tensor):
        raise TypeError(
            f"du: post_posterior needs a diagonal Gaussian posterior (with loc and var), got "
            f"{type(posterior).__name__}; put du before any plugin that replaces the posterior "
            "(for DU-IAF the stack is du, then iaf)"
        )
    return loc, var
