"""Likelihood metrics: importance-sampled NLL (and the IWAE bound) and the ELBO's terms."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torchmetrics import Metric

from vaecore.metrics.functional import streaming_log_mean_exp

F64 = torch.float64


class ImportanceSampledNLL(Metric):
    """-log p(x) estimated by importance sampling with the posterior as proposal, averaged over the
    examples seen (nats per example).

    For each example, log p(x) ~= log (1/K) sum_k w_k with log w_k = log p(x|z_k) + log p(y_k) -
    log q(y_k|x) (``ForwardOutput.log_w``), y_k ~ q(y|x). ``update`` takes the log-weights of a
    batch either as one ``(K, B)`` tensor or as an iterable of ``(k_i, B)`` chunks (sum k_i = K)
    that are folded with a running logsumexp, so only one chunk is ever held: memory is bounded by
    the chunk, whatever K (see :func:`vaecore.metrics.functional.chunked_log_weights`).

    ``compute`` returns ``nll`` (the estimate, an upper bound of -log p(x) in expectation),
    ``iwae_bound`` (the IWAE lower bound L_K of log p(x) for the same K: the same per-example
    quantity with the opposite sign, so ``iwae_bound == -nll`` exactly for one draw of K samples),
    ``nll_stderr`` (the standard error of the mean over examples) and ``nll_samples`` (K).
    When ``update`` is also given ``units`` ``(B,)`` (the units each example is scored on, the
    words of a sentence: :meth:`vaecore.likelihoods.Likelihood.units`), ``compute`` adds
    ``nll_per_unit`` (the summed NLL over the summed units) and ``ppl = exp(nll_per_unit)``.
    """

    sum_log_px: torch.Tensor
    sum_sq_log_px: torch.Tensor
    count: torch.Tensor
    samples: torch.Tensor
    units: torch.Tensor

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("sum_log_px", torch.tensor(0.0, dtype=F64), dist_reduce_fx="sum")
        self.add_state("sum_sq_log_px", torch.tensor(0.0, dtype=F64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=F64), dist_reduce_fx="sum")
        self.add_state("samples", torch.tensor(0.0, dtype=F64), dist_reduce_fx="max")
        self.add_state("units", torch.tensor(0.0, dtype=F64), dist_reduce_fx="sum")

    def update(  # type: ignore[override]
        self, log_w: torch.Tensor | Iterable[torch.Tensor], units: torch.Tensor | None = None
    ) -> None:
        chunks = [log_w] if isinstance(log_w, torch.Tensor) else log_w
        log_px, k = streaming_log_mean_exp(chunks)
        if units is not None:
            self.units += units.double().sum()
        self.sum_log_px += log_px.sum()
        self.sum_sq_log_px += log_px.pow(2).sum()
        self.count += log_px.shape[0]
        self.samples = torch.maximum(self.samples, torch.tensor(float(k), dtype=F64, device=self.samples.device))

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        n = self.count
        mean = self.sum_log_px / n
        var = (self.sum_sq_log_px / n - mean * mean).clamp_min(0.0) * n / (n - 1).clamp_min(1.0)
        results = {
            "nll": -mean,
            "iwae_bound": mean,
            "nll_stderr": (var / n).sqrt(),
            "nll_samples": self.samples.long(),
        }
        if float(self.units) > 0:
            per_unit = -self.sum_log_px / self.units
            results.update(nll_per_unit=per_unit, ppl=per_unit.exp())
        return results


class ELBOTerms(Metric):
    """The ELBO and its terms per example, averaged over the examples seen (nats).

    ``update(log_px, kl, kl_per_dim)``: ``log_px`` ``(K, B)`` reconstruction log-likelihoods of K
    posterior samples (averaged over K), ``kl`` ``(B,)`` the KL to the prior per example and
    ``kl_per_dim`` ``(B, D)`` the analytic per-dimension KL when the model has one (else None).
    ``compute`` returns ``elbo = rec - kl``, ``rec``, ``kl`` and ``kl_per_dim`` (a ``(D,)`` tensor,
    or None when no batch had an analytic per-dimension KL).
    """

    rec: torch.Tensor
    kl: torch.Tensor
    count: torch.Tensor
    kl_dims: torch.Tensor
    kl_dims_count: torch.Tensor

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, latent_dim: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.add_state("rec", torch.tensor(0.0, dtype=F64), dist_reduce_fx="sum")
        self.add_state("kl", torch.tensor(0.0, dtype=F64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=F64), dist_reduce_fx="sum")
        self.add_state("kl_dims", torch.zeros(latent_dim, dtype=F64), dist_reduce_fx="sum")
        self.add_state("kl_dims_count", torch.tensor(0.0, dtype=F64), dist_reduce_fx="sum")

    def update(self, log_px: torch.Tensor, kl: torch.Tensor, kl_per_dim: torch.Tensor | None = None) -> None:  # type: ignore[override]
        self.rec += log_px.double().mean(0).sum()
        self.kl += kl.double().sum()
        self.count += kl.shape[0]
        if kl_per_dim is not None:
            self.kl_dims += kl_per_dim.double().sum(0)
            self.kl_dims_count += kl_per_dim.shape[0]

    def compute(self) -> dict[str, torch.Tensor | None]:  # type: ignore[override]
        rec, kl = self.rec / self.count, self.kl / self.count
        per_dim = self.kl_dims / self.kl_dims_count if float(self.kl_dims_count) > 0 else None
        return {"elbo": rec - kl, "rec": rec, "kl": kl, "kl_per_dim": per_dim}


def nats_to_bits_per_dim(nats: float, dims: int) -> float:
    """Convert a per-example value in nats to bits per input dimension."""
    return nats / (dims * math.log(2))
