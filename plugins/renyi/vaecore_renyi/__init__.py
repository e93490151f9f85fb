"""vaecore-renyi-plugin: the Rényi variational bound VR-alpha (Li & Turner 2016) from K importance
samples, with IWAE (alpha = 0, Burda et al. 2016), the ELBO estimator (alpha = 1) and VR-max
(alpha = -inf) as special cases.

The plugin claims two hooks:

* ``forward_samples``: the number K of posterior samples per example (``samples``; in validation
  ``valid_samples``, which defaults to ``samples`` so that ``valid.loss`` is the same bound as
  ``train.loss``);
* ``bound``: the training objective ``-L_alpha`` averaged over the batch, built only from the core's
  per-sample log-weights ``out.log_w = log p(x|z) + log p(y) - log q(y|x)``. These live in y-space
  and already contain whatever the stack did to the posterior (DU's regularised Gaussian, a flow's
  log-determinant inside ``log q``) and to the latent map (InteL's ``z = g(y)`` only enters
  ``log p(x|z)``), so the bound is correct over any stack without knowing it.
"""

from __future__ import annotations

import math

import attrs
import torch

import vaecore
from vaecore import validators as v

__all__ = ["ELBO_TOLERANCE", "RenyiPlugin", "renyi_bound"]

__version__ = "0.1.0"

ELBO_TOLERANCE = 1e-3
"""|alpha - 1| below this is treated as alpha = 1 (the ELBO estimator mean_k log w_k)."""

ANNEAL_MODES = ("ratio", "off")


def renyi_bound(log_w: torch.Tensor, alpha: float) -> torch.Tensor:
    """The VR-alpha estimate per example from log-weights ``(K, B)`` -> ``(B,)``.

    ``L_alpha = 1/(1-alpha) log( 1/K sum_k exp((1-alpha) log w_k) )``, computed in log space:

    * ``alpha = -inf``: ``max_k log w_k`` (VR-max; the gradient flows through the best sample only);
    * ``|alpha - 1| < 1e-3``: ``mean_k log w_k`` (the ELBO estimator, the limit alpha -> 1);
    * otherwise a logsumexp of ``(1-alpha) (log w_k - c)`` with ``c`` the (detached) largest
      log-weight added back afterwards. The identity holds for any constant ``c`` (and so does its
      gradient, the normalised tempered weights ``softmax_k((1-alpha) log w_k)``); centring keeps
      float32 precise when ``1 - alpha`` is small (the prefactor ``1/(1-alpha)`` would otherwise
      multiply rounding errors of the order of ``|(1-alpha) log w|``, not of the much smaller spread
      of ``log w``) and keeps differences between close log-weights exact.
    """
    if log_w.dim() < 1:
        raise ValueError(f"log_w must have a leading sample dimension K, got shape {tuple(log_w.shape)}")
    if math.isnan(alpha) or alpha == math.inf:
        raise ValueError(f"alpha must be a finite number or -inf, got {alpha!r}")
    k = log_w.shape[0]
    if alpha == -math.inf:
        return log_w.max(dim=0).values
    if abs(alpha - 1.0) < ELBO_TOLERANCE or k == 1:
        return log_w.mean(dim=0)
    one_minus = 1.0 - alpha
    centre = log_w.detach().max(dim=0).values
    scaled = one_minus * (log_w - centre)
    return centre + (torch.logsumexp(scaled, dim=0) - math.log(k)) / one_minus


def _alpha_validator(_instance, _attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f'must be a number or "-inf" (VR-max), got {value!r}')
    if math.isnan(value) or value == math.inf:
        raise ValueError(f'must be a finite number or "-inf" (VR-max), got {value!r}')


def _alpha_converter(value):
    """Accept ``"-inf"`` when the plugin is built directly from Python (the config converter
    already maps the strings ``"inf"``, ``"-inf"`` and ``"+inf"`` to floats)."""
    if isinstance(value, str) and value.strip().lower() in ("-inf", "-infinity"):
        return -math.inf
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


@attrs.define(kw_only=True)
class RenyiOptions:
    """Options of the ``renyi`` plugin.

    * ``alpha``: the Rényi order; any finite number or ``"-inf"`` (VR-max). 0 is IWAE, 1 the ELBO
      estimator (``|alpha - 1| < 1e-3`` counts as 1). Values above 1 are allowed (Li & Turner
      2016 use them) but the estimate is then no longer a lower bound on log p(x) in expectation.
    * ``samples``: K, the importance samples per example in training.
    * ``valid_samples``: K in validation (the ``valid.loss`` used for best-checkpoint selection,
      early stopping and learning-rate decay) and in this plugin's ``eval_metrics``; default:
      ``samples``.
    * ``anneal``: how the core's KL weight (``train.beta`` times the KL warm-up factor) enters.
      ``"ratio"`` (default) multiplies the prior ratio of every log-weight,
      ``log w_k = log p(x|z_k) + kl_weight * (log p(y_k) - log q(y_k|x))``, so that alpha = 1 is
      exactly the warmed-up Monte Carlo ELBO and every bound is the exact one once the weight is 1;
      ``"off"`` ignores the KL weight (the bound is always the exact one, as in Burda et al.).
    """

    alpha: float = attrs.field(default=0.0, converter=_alpha_converter, validator=_alpha_validator)
    samples: int = attrs.field(default=5, validator=v.ge(1))
    valid_samples: int | None = attrs.field(default=None, validator=v.ge(1))
    anneal: str = attrs.field(default="ratio", validator=v.one_of(ANNEAL_MODES))


class RenyiPlugin:
    """VR-alpha / IWAE / VR-max objective from K importance samples (see the module docstring)."""

    api_version = vaecore.HOOK_API_VERSION
    Options = RenyiOptions

    def __init__(self, options: RenyiOptions | None = None):
        self.options = options if options is not None else RenyiOptions()

    @property
    def alpha(self) -> float:
        return self.options.alpha

    def samples_for(self, training: bool) -> int:
        o = self.options
        return o.samples if training or o.valid_samples is None else o.valid_samples

    @vaecore.hookimpl
    def forward_samples(self, training):
        return self.samples_for(training)

    @vaecore.hookimpl
    def bound(self, out, ctx):
        log_w = out.log_w
        weight = float(ctx.kl_weight) if self.options.anneal == "ratio" else 1.0
        exact = renyi_bound(log_w, self.alpha)
        if weight == 1.0:
            objective = exact
        else:
            objective = renyi_bound(out.log_px + weight * (out.log_py - out.log_qy), self.alpha)
        loss = -objective.mean()
        with torch.no_grad():
            k = log_w.shape[0]
            terms = {
                "bound": exact.mean(),
                "K": torch.tensor(float(k), dtype=loss.dtype, device=loss.device),
                "elbo": log_w.mean(0).mean(),
                "iwae": (torch.logsumexp(log_w, 0) - math.log(k)).mean(),
                "rec": out.log_px.mean(),
                "kl": out.kl().mean(),
            }
        return vaecore.Bound(loss=loss, terms=terms)

    @vaecore.hookimpl
    def eval_metrics(self, model, split, ctx):
        """The bound on the evaluated split with ``valid_samples`` samples (kl weight 1)."""
        k = self.samples_for(False)
        sums = {"bound": 0.0, "iwae": 0.0, "elbo": 0.0}
        batch_size = max(1, 50_000 // k)
        with torch.no_grad(), vaecore.eval_mode(model):
            for batch in vaecore.device_batches(model, split, batch_size, ctx):
                log_w = model(batch.x, ctx, k).log_w
                sums["bound"] += float(renyi_bound(log_w, self.alpha).sum())
                sums["iwae"] += float((torch.logsumexp(log_w, 0) - math.log(k)).sum())
                sums["elbo"] += float(log_w.mean(0).sum())
        n = max(len(split), 1)
        return {**{name: value / n for name, value in sums.items()}, "K": k}
