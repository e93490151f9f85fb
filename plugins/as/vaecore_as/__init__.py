"""VAE-AS for vaecore: an auxiliary softmax multi-classifier s_w(e|z) (Li, "Improve variational
autoencoder with auxiliary softmax multiclassifier", section 3).

The classifier learns the index of every training example from its latent sample (eq. 7-8). From
it come I_q(z, x) = log N - E[H(q(x|z))] (eq. 5, 9), estimated by default as log N - SC (whose
encoder gradient, with the classifier fixed, is the gradient of I_q), the marginal KL
D_KL(q(z) || p(z)), and the objective reconstruction + alpha * MI + beta * MD (eq. 3). See
README.md for the choices.
"""

from __future__ import annotations

from vaecore_as.plugin import (
    ASOptions,
    ASPlugin,
    classifier_mi,
    estimate,
    factorise,
    fit_classifier,
    smallest_base,
)

__all__ = ["ASOptions", "ASPlugin", "classifier_mi", "estimate", "factorise", "fit_classifier", "smallest_base"]
__version__ = "0.1.0"
