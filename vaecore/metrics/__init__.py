"""The diagnostics of the papers as torchmetrics metrics (streaming over batches, synced across
processes through each state's ``dist_reduce_fx``), plus the pure functions they use
(:mod:`vaecore.metrics.functional`).

Which variable each metric measures, as computed by :func:`vaecore.evaluation.evaluate`:

================================  ==============================================================
metric (eval.json keys)           measured on
================================  ==============================================================
nll, iwae_bound                   x: log-weights of the full model (``ForwardOutput.log_w``)
elbo, rec, kl, kl_per_dim         the model's ELBO with one posterior sample
mi_batch, mi_split                y, posterior q(y|x) (its Gaussian; for a flow, the base)
au, activity, pca_components      y, the posterior mean (``posterior.mean``: a flow's own mean)
mpd, cond_entropy                 y, the Gaussian posterior parameters (a flow's base)
reencoding_error                  y: a sample y ~ q vs the encoder mean of the decoded mean at g(y)
hoyer                             z = g(posterior mean), the representation (InteL's eq. for z)
hoyer_g_y                         z = g(y), one sample y ~ q(y|x) per input (InteL's released code)
probe_g_mean                      z = g(posterior mean)
probe_g_mean_var                  [g(posterior mean), variance of q(y|x)]
probe_g_y                         z = g(y), one sample y ~ q(y|x)
================================  ==============================================================

g is the stack's ``latent_map`` (the identity without one, where z = y).

"The Gaussian" of a posterior is the posterior itself when it is a
:class:`~vaecore.distributions.DiagonalGaussian`, else its ``base`` attribute (a flow posterior
such as IAF exposes its Gaussian base distribution there), see :func:`gaussian_of`.
"""

from __future__ import annotations

from typing import Any

from vaecore.distributions import DiagonalGaussian
from vaecore.metrics import functional
from vaecore.metrics.latent import (
    ActiveUnits,
    HoyerSparsity,
    MutualInfoBatch,
    MutualInfoSplit,
    PCAComponents,
    PosteriorDiversity,
    ReencodingError,
)
from vaecore.metrics.likelihood import ELBOTerms, ImportanceSampledNLL
from vaecore.metrics.probe import LinearProbeAccuracy


def gaussian_of(posterior: Any) -> DiagonalGaussian | None:
    """The diagonal Gaussian a posterior's Gaussian metrics use: the posterior itself, or its
    ``base`` (flow posteriors), or None when it has neither."""
    if isinstance(posterior, DiagonalGaussian):
        return posterior
    base = getattr(posterior, "base", None)
    return base if isinstance(base, DiagonalGaussian) else None


__all__ = [
    "ActiveUnits",
    "ELBOTerms",
    "HoyerSparsity",
    "ImportanceSampledNLL",
    "LinearProbeAccuracy",
    "MutualInfoBatch",
    "MutualInfoSplit",
    "PCAComponents",
    "PosteriorDiversity",
    "ReencodingError",
    "functional",
    "gaussian_of",
]
