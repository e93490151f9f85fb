"""The built-in objective: the ELBO with KL weight, linear KL warm-up and free bits.

It is a plugin like any other: it implements the claimed ``bound`` hook and is registered only
when no plugin of the stack claims that hook.
"""

from __future__ import annotations

import torch

from vaecore.hookspecs import HOOK_API_VERSION, hookimpl
from vaecore.hooktypes import Bound, StepContext


def warmup_factor(step: int, steps_per_epoch: int, start: float, epochs: float) -> float:
    """The KL warm-up factor at iteration ``step``: linear from ``start`` to 1 over ``epochs`` epochs."""
    if epochs <= 0:
        return 1.0
    return min(1.0, start + (1.0 - start) * step / (epochs * steps_per_epoch))


def free_bits_kl(kl_per_dim: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The batch KL with free bits (Kingma et al. 2016): each dimension's batch-mean KL is
    clamped from below at ``free_bits`` nats, then the dimensions are summed."""
    return kl_per_dim.mean(0).clamp(min=free_bits).sum()


class ELBO:
    """ELBO = E_q[log p(x|z)] - kl_weight * KL(q(y|x) || p(y)), averaged over the batch.

    The KL is analytic when the model provides it per dimension, else the Monte Carlo estimate
    over the K samples. ``free_bits`` > 0 applies free bits per dimension (analytic KL) or to the
    total KL divided evenly over dimensions (Monte Carlo KL).
    """

    api_version = HOOK_API_VERSION

    def __init__(self, free_bits: float = 0.0):
        self.free_bits = free_bits

    @hookimpl
    def bound(self, out, ctx: StepContext) -> Bound:
        rec = out.log_px.mean()
        kl_example = out.kl()
        kl = kl_example.mean()
        if self.free_bits > 0:
            if out.kl_per_dim is not None:
                kl_train = free_bits_kl(out.kl_per_dim, self.free_bits)
            else:
                kl_train = kl.clamp(min=self.free_bits * out.y.shape[-1])
        else:
            kl_train = kl
        # a weight of 1 (no warm-up, beta 1) multiplies nothing: the same loss, one op and its gradient fewer
        loss = (kl_train if ctx.kl_weight == 1.0 else ctx.kl_weight * kl_train) - rec
        with torch.no_grad():  # a logged value: no graph
            elbo = rec - kl
        return Bound(loss=loss, terms={"elbo": elbo, "rec": rec, "kl": kl})
