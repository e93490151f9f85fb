"""Metrics of the latent space: mutual information, activity, PCA, MPD and conditional entropy,
re-encoding error and Hoyer sparsity.

Which variable each metric sees is decided by :func:`vaecore.evaluation.evaluate` and listed in
:mod:`vaecore.metrics`; the classes themselves only take tensors.

States are float64 sums (``dist_reduce_fx="sum"``) wherever the estimator is a function of sums
(AU, PCA, MPD, conditional entropy, re-encoding error), which is exact, O(D^2) memory and syncs
across processes by addition. Estimators that need every point of the split at once (``mi_split``
and Hoyer, whose normalisation uses the split's standard deviations) keep ``"cat"`` list states.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from vaecore.metrics import functional as F

F64 = torch.float64


class MutualInfoBatch(Metric):
    """I_q(x; y) with the aggregate posterior of each minibatch (He et al. 2019): the He et al.
    estimator (:func:`~vaecore.metrics.functional.mutual_information`) on every batch given to
    ``update``, averaged over batches weighted by their size. What it estimates is at most
    log(batch size) (the one-sample estimate can exceed it by its noise), so the value depends on
    the batch size used (``eval.mi_batch_size``): compare runs at the same batch size.

    ``update(loc, log_var, y)``: Gaussian posterior parameters ``(B, D)`` and one sample per row.
    """

    total: torch.Tensor
    count: torch.Tensor

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=F64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=F64), dist_reduce_fx="sum")

    def update(self, loc: torch.Tensor, log_var: torch.Tensor, y: torch.Tensor) -> None:  # type: ignore[override]
        b = loc.shape[0]
        self.total += F.mutual_information(loc, log_var, y) * b
        self.count += b

    def compute(self) -> torch.Tensor:
        return self.total / self.count


class MutualInfoSplit(Metric):
    """I_q(x; y) with the aggregate posterior of the whole split (the DU-VAE code's protocol): the
    same estimator over all N points at once, one sample y_n ~ q(y|x_n) per point, log q(y_n) =
    logsumexp_m log q(y_n|x_m) - log N over every m in the split. The N x N matrix is computed
    ``chunk`` rows at a time (memory O(chunk N)). Keeps ``cat`` states of (loc, log_var, y).
    """

    loc: list[torch.Tensor]
    log_var: list[torch.Tensor]
    y: list[torch.Tensor]

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, chunk: int = 1024, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.chunk = chunk
        self.add_state("loc", [], dist_reduce_fx="cat")
        self.add_state("log_var", [], dist_reduce_fx="cat")
        self.add_state("y", [], dist_reduce_fx="cat")

    def update(self, loc: torch.Tensor, log_var: torch.Tensor, y: torch.Tensor) -> None:  # type: ignore[override]
        self.loc.append(loc.detach())
        self.log_var.append(log_var.detach())
        self.y.append(y.detach())

    def compute(self) -> torch.Tensor:
        return F.mutual_information(
            dim_zero_cat(self.loc), dim_zero_cat(self.log_var), dim_zero_cat(self.y), self.chunk
        )


class ActiveUnits(Metric):
    """Active units (Burda et al. 2016, as in He et al. 2019 and the NE/DU papers): the activity of
    dimension d is A_d = Var_x(E_q[y_d|x]), the unbiased variance over the split of the posterior
    mean; a unit is active when A_d > ``threshold``.

    ``update(mean)`` with posterior means ``(B, D)``. ``compute`` returns ``au`` (an integer
    tensor) and ``activity`` ``(D,)``.
    """

    s1: torch.Tensor
    s2: torch.Tensor
    count: torch.Tensor

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, latent_dim: int, threshold: float = 0.01, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold
        self.add_state("s1", torch.zeros(latent_dim, dtype=F64), dist_reduce_fx="sum")
        self.add_state("s2", torch.zeros(latent_dim, dtype=F64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=F64), dist_reduce_fx="sum")

    def update(self, mean: torch.Tensor) -> None:  # type: ignore[override]
        m = mean.detach().double()
        self.s1 += m.sum(0)
        self.s2 += (m * m).sum(0)
        self.count += m.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        activity = F.variance_from_sums(self.s1, self.s2, self.count, unbiased=True)
        return {"au": (activity > self.threshold).sum(), "activity": activity}


class PCAComponents(Metric):
    """Number of principal components of the posterior means with eigenvalue > ``threshold``
    (Rényi latent-geometry paper, epsilon = 0.01): eigenvalues of the unbiased covariance matrix of
    the means over the split. ``compute`` returns ``pca_components`` and ``pca_eigenvalues``
    (largest first)."""

    s1: torch.Tensor
    outer: torch.Tensor
    count: torch.Tensor

    is_differentiable = False
    full_state_update = False

    def __init__(self, latent_dim: int, threshold: float = 0.01, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold
        self.add_state("s1", torch.zeros(latent_dim, dtype=F64), dist_reduce_fx="sum")
        self.add_state("outer", torch.zeros(latent_dim, latent_dim, dtype=F64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=F64), dist_reduce_fx="sum")

    def update(self, mean: torch.Tensor) -> None:  # type: ignore[override]
        m = mean.detach().double()
        self.s1 += m.sum(0)
        self.outer += m.T @ m
        self.count += m.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        eig = F.pca_eigenvalues(F.covariance_from_sums(self.s1, self.outer, self.count, unbiased=True))
        return {"pca_components": (eig > self.threshold).sum(), "pca_eigenvalues": eig}


class PosteriorDiversity(Metric):
    """MPD (DU-VAE eq. 3) and conditional entropy H_q(y|x) (eq. 5) of a family of diagonal
    Gaussian posteriors over the split. Both are functions of per-dimension sums, so the states are
    sums (exact, streaming). ``update(loc, var)``; ``compute`` returns ``mpd`` and ``cond_entropy``.
    See :func:`~vaecore.metrics.functional.mpd_from_moments` for the exact pairing convention."""

    log_v: torch.Tensor
    n: torch.Tensor

    is_differentiable = False
    full_state_update = False
    _KEYS = ("m", "m2", "iv", "m_iv", "m2_iv", "v", "log_v")

    def __init__(self, latent_dim: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        for key in self._KEYS:
            self.add_state(key, torch.zeros(latent_dim, dtype=F64), dist_reduce_fx="sum")
        self.add_state("n", torch.tensor(0.0, dtype=F64), dist_reduce_fx="sum")

    def update(self, loc: torch.Tensor, var: torch.Tensor) -> None:  # type: ignore[override]
        moments = F.posterior_moments(loc.detach(), var.detach())
        for key, value in moments.items():
            setattr(self, key, getattr(self, key) + value)

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        moments = {key: getattr(self, key) for key in (*self._KEYS, "n")}
        return {
            "mpd": F.mpd_from_moments(moments),
            "cond_entropy": F.conditional_entropy(self.log_v / self.n),
        }


class ReencodingError(Metric):
    """Re-encoding squared error (NE-VAE eq. 7 used as a collapse metric, section 6.1):
    sum_d (y_d - y_hat_d)^2 averaged over the split, with y ~ q(y|x) one posterior sample,
    x_hat the decoder mean at g(y), and y_hat the mean of q(y|x_hat). Collapsed dimensions give
    about Var(y_d) = 1 each (the sample is noise the re-encoding cannot recover), active ones
    little. ``update(y, y_hat)``; ``compute`` returns ``reencoding_error`` and the per-dimension
    ``reencoding_error_per_dim``."""

    sq: torch.Tensor
    count: torch.Tensor

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, latent_dim: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("sq", torch.zeros(latent_dim, dtype=F64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=F64), dist_reduce_fx="sum")

    def update(self, y: torch.Tensor, y_hat: torch.Tensor) -> None:  # type: ignore[override]
        self.sq += (y.detach().double() - y_hat.detach().double()).pow(2).sum(0)
        self.count += y.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        per_dim = self.sq / self.count
        return {"reencoding_error": per_dim.sum(), "reencoding_error_per_dim": per_dim}


class HoyerSparsity(Metric):
    """Mean Hoyer sparsity of representations with per-dimension std normalisation (InteL
    appendix C.3, following Mathieu et al. 2019); see :func:`~vaecore.metrics.functional.hoyer`.
    The normalisation uses the standard deviations over the whole split, so the representations
    are kept (``cat`` state). ``update(z)`` with representations ``(B, Dz)``."""

    z: list[torch.Tensor]

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("z", [], dist_reduce_fx="cat")

    def update(self, z: torch.Tensor) -> None:  # type: ignore[override]
        self.z.append(z.detach())

    def compute(self) -> torch.Tensor:
        score, _ = F.hoyer(dim_zero_cat(self.z))
        return score
