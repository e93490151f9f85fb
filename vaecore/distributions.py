"""Posteriors q(y|x) and priors p(y) as used by the model, the bounds and the diagnostics."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

LOG_2PI = math.log(2 * math.pi)


@runtime_checkable
class Posterior(Protocol):
    """An approximate posterior over y for a batch of B examples with latent size D.

    ``mean`` is the representation used by diagnostics (the posterior mean for a Gaussian).
    ``rsample(k)`` draws k reparameterised samples ``(k, B, D)`` with their log-densities
    ``(k, B)``. ``kl_per_dim()`` is the analytic KL to N(0, I) per dimension ``(B, D)`` when it
    exists, else None (the KL is then estimated from the samples).

    A posterior may also define ``rsample_deferred(k)``, returning the samples and a function of
    no arguments that computes their log-densities: the model's forward pass then computes them
    only when a bound reads ``out.log_qy`` (the ELBO with an analytic KL never does). Without it
    the forward pass uses ``rsample``.
    """

    @property
    def mean(self) -> torch.Tensor: ...

    def rsample(self, k: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def log_prob(self, y: torch.Tensor) -> torch.Tensor: ...

    def kl_per_dim(self) -> torch.Tensor | None: ...


class DiagonalGaussian:
    """N(loc, diag(var)) for a batch: ``loc`` and ``var`` are ``(B, D)``."""

    __slots__ = ("_log_var", "loc", "var")

    def __init__(self, loc: torch.Tensor, var: torch.Tensor, log_var: torch.Tensor | None = None):
        self.loc = loc
        self.var = var
        self._log_var = log_var

    @classmethod
    def from_log_var(cls, loc: torch.Tensor, log_var: torch.Tensor) -> DiagonalGaussian:
        """From the encoder's mean and log-variance (the log-variance kept, not recomputed)."""
        return cls(loc, log_var.exp(), log_var)

    @property
    def mean(self) -> torch.Tensor:
        """The mean ``loc``, ``(B, D)``."""
        return self.loc

    @property
    def log_var(self) -> torch.Tensor:
        """log var, ``(B, D)``."""
        if self._log_var is None:
            self._log_var = self.var.log()
        return self._log_var

    @property
    def std(self) -> torch.Tensor:
        """The standard deviation, ``(B, D)``."""
        return self.var.sqrt()

    def rsample(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """k reparameterised samples ``(k, B, D)`` and their log-densities ``(k, B)``."""
        y, log_q = self.rsample_deferred(k)
        return y, log_q()

    def rsample_deferred(self, k: int) -> tuple[torch.Tensor, Callable[[], torch.Tensor]]:
        """k reparameterised samples ``(k, B, D)`` and a function that computes their
        log-densities ``(k, B)`` from the standard-normal noise that made them (exactly the
        values of :meth:`rsample`)."""
        eps = torch.randn((k, *self.loc.shape), dtype=self.loc.dtype, device=self.loc.device)
        if k == 1:  # the same values without broadcasting over k, whose backward sums over it twice
            y = (self.loc + eps[0] * self.std).unsqueeze(0)
        else:
            y = self.loc + eps * self.std
        log_var = self.log_var
        return y, lambda: -0.5 * (eps.pow(2) + log_var + LOG_2PI).sum(-1)

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """log q(y|x) of samples ``(..., B, D)``, summed over D."""
        return -0.5 * ((y - self.loc).pow(2) / self.var + self.log_var + LOG_2PI).sum(-1)

    def kl_per_dim(self) -> torch.Tensor:
        """KL(q || N(0, I)) per dimension, ``(B, D)``, in closed form."""
        return 0.5 * (self.loc.pow(2) + self.var - 1.0 - self.log_var)

    def entropy(self) -> torch.Tensor:
        """Differential entropy per example, ``(B,)``."""
        return 0.5 * (self.log_var + 1.0 + LOG_2PI).sum(-1)


class Prior(Protocol):
    """A prior p(y): log-density of ``(..., D)`` samples and sampling of n points."""

    def log_prob(self, y: torch.Tensor) -> torch.Tensor: ...

    def sample(self, n: int) -> torch.Tensor: ...


class StandardNormal:
    """N(0, I) over a D-dimensional latent space: the default prior."""

    is_standard_normal = True

    def __init__(self, dim: int):
        self.dim = dim

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """log N(y; 0, I) of ``(..., D)`` samples, summed over D."""
        return -0.5 * (y.pow(2) + LOG_2PI).sum(-1)

    def sample(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """n draws ``(n, D)`` from torch's global generator."""
        return torch.randn(n, self.dim, device=device)
