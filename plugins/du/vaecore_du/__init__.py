"""vaecore-du-plugin: DU-VAE (``du``: dropout on posterior variances, batch-norm on posterior
means with a learned scale whose mean square is pinned; BN-VAE is ``du`` with ``scale = "fixed",
drop = 0, floor = 0``: the scale is gamma in every dimension, not learned) and the inverse
autoregressive flow posterior (``iaf``). The stack ``du`` then ``iaf`` is DU-IAF."""

from vaecore_du.du import ALPHA, DUOptions, DUPlugin, FixedScaleBatchNorm1d
from vaecore_du.iaf import FlowPosterior, IAFBlock, IAFOptions, IAFPlugin, made_degrees, made_masks

__version__ = "0.1.0"

__all__ = [
    "ALPHA",
    "DUOptions",
    "DUPlugin",
    "FixedScaleBatchNorm1d",
    "FlowPosterior",
    "IAFBlock",
    "IAFOptions",
    "IAFPlugin",
    "__version__",
    "made_degrees",
    "made_masks",
]
