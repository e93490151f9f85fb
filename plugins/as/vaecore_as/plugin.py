"""The VAE-AS plugin: classifier, estimators of I_q and of the marginal KL, and the objective.

Objective (eq. 3), written as the core ELBO plus corrections::

    rec + alpha * MI + beta * MD  =  -ELBO + (alpha - 1) * MI + (beta - 1) * MD     (MI + MD = KL)

The core keeps the ELBO (so its KL warm-up and free bits still apply) and this plugin adds, through
``extra_loss``, ``mi`` with weight ``kl_weight * (alpha - 1)``, ``md`` with weight
``kl_weight * (beta - 1)`` and the classifier's cross-entropy ``sc`` with weight 1. ``md`` is the
batch's mean KL minus the MI estimate, so MI + MD = KL holds exactly and alpha = beta = 1 is exactly
the ELBO. The total loss is then -rec + kl_weight * (beta * KL + (alpha - beta) * MI) + SC.

The MI estimator and its encoder gradient (``mi_estimator``; section 3.2, eq. 5-9). With x uniform
over the N training examples, I_q = log N + E_{i, z ~ q(z|x_i)}[log q(x_i|z)], and for any
classifier s, log N - SC(s) = log N + E[log s(i|z)] <= I_q (Barber-Agakov), with equality at
s = q(x|z). So I_q is the maximum over s of log N - SC, and by the envelope theorem its gradient
with respect to the encoder is the gradient of log N - SC with the maximising classifier held
fixed: the pathwise gradient E[d log s(i|z)/dz * dz/dphi] through the reparameterised samples.
(Directly: the part of d/dphi log q(x_i|z) at fixed z averages to
E_z[sum_i q(i|z) d log q(i|z)/dphi] = E_z[d/dphi sum_i q(i|z)] = 0.)

* ``"cross_entropy"`` (default): MI = log N - SC and its pathwise gradient with the classifier
  fixed. With the classifier equal to q(x|z) the encoder's gradient is the gradient of I_q
  (``tests/test_mi_gradient.py`` checks it against autograd of the exact I_q); with a classifier
  that is not there yet it is the gradient of the Barber-Agakov bound of that classifier. With it
  MD = KL - MI is exactly eq. 10.
* ``"classifier_entropy"``: MI = log N - E[H(s(x|z))] (eq. 5, 9) and the pathwise gradient of the
  fixed classifier's entropy. Its value estimates I_q, but its gradient is **not** that of I_q,
  even with an exact classifier: it misses how q(x|z) itself moves with the encoder (the direct
  part of dH(q(x|z))/dphi does not average to zero). On the exact toy of the test it is about 0.4
  of the true gradient's norm, cosine 0.6. It was the default (named ``"entropy"``) before; it is
  kept to reproduce those runs. The old name is refused with a message naming both.

Gradient routing (the paper is silent; see README):

* ``sc`` trains the classifier only: it sees the latent samples detached. Letting it reach the
  encoder would add an extra MI bonus (log N - SC is the Barber-Agakov lower bound on I_q) and
  alpha = beta = 1 would no longer be the ELBO.
* ``mi`` reaches the encoder only, through the reparameterised samples y, with the classifier
  held fixed. Its gradient with respect to the classifier's weights is never formed: the
  classifier is fitted by ``sc`` alone, so that it tracks q(x|z) (which is what makes the
  envelope-theorem gradient above the gradient of I_q).
  The classifier runs forward once; the encoder's gradient dMI/dy is taken with
  ``torch.autograd.grad`` with respect to the detached samples (no weight gradients are computed)
  and attached to y as a surrogate whose value is the estimate. It is only needed when
  alpha != beta (the MI coefficient of the total loss); otherwise it is skipped.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch
from torch import nn

from vaecore import HOOK_API_VERSION, Term, encode_split, hookimpl
from vaecore import validators as v
from vaecore.networks import ACTIVATIONS, mlp

ESTIMATORS = ("cross_entropy", "classifier_entropy")
"""The values of ``mi_estimator`` (see the module docstring): the first is the default."""
RENAMED_ESTIMATORS = {"entropy": "classifier_entropy"}
"""Former names, refused with a message that names the new one (their meaning changed with it)."""
STATS = ("mi", "md", "sc", "mi_ba", "kl")
"""The per-epoch training statistics kept in buffers (saved with the model)."""


def smallest_base(n: int, heads: int) -> int:
    """The smallest V >= 2 with V**heads >= n."""
    n = max(int(n), 1)
    base = max(2, round(n ** (1.0 / heads)))
    while base**heads < n:
        base += 1
    while base > 2 and (base - 1) ** heads >= n:
        base -= 1
    return base


def factorise(n: int, heads: int | None = None, classes: int | None = None, max_classes: int = 1024) -> tuple[int, int]:
    """(K heads, V classes per head) with V**K >= n (section 3.3).

    Given both, they are checked; given one, the other is the smallest that covers n; given none,
    K is the smallest number of heads whose V = smallest_base(n, K) is at most ``max_classes``
    (one head, the exact classifier, whenever n <= max_classes).
    """
    n = max(int(n), 1)
    if heads is not None and classes is not None:
        if classes**heads < n:
            raise ValueError(
                f"heads = {heads} and classes = {classes} give {classes**heads} labels, fewer than the "
                f"{n} training examples (classes**heads must be >= n_train)"
            )
        return heads, classes
    if heads is not None:
        return heads, smallest_base(n, heads)
    if classes is not None:
        k = 1
        while classes**k < n:
            k += 1
        return k, classes
    k = 1
    while smallest_base(n, k) > max_classes:
        k += 1
    return k, smallest_base(n, k)


def _check_estimator(instance: Any, attribute: Any, value: Any) -> None:
    if value in RENAMED_ESTIMATORS:
        raise ValueError(
            f"{value!r} is no longer accepted (it is now {RENAMED_ESTIMATORS[value]!r}, whose encoder gradient "
            f"is not the gradient of I_q): use 'cross_entropy', the default, or "
            f"{RENAMED_ESTIMATORS[value]!r} to reproduce runs made with {value!r}"
        )
    v.one_of(ESTIMATORS)(instance, attribute, value)


@attrs.define(kw_only=True)
class ASOptions:
    """Options of the ``as`` plugin (see the README's options table)."""

    alpha: float = attrs.field(default=1.0, validator=v.ge(0))
    beta: float = attrs.field(default=1.0, validator=v.ge(0))
    hidden: list[int] = attrs.field(factory=lambda: [500, 500], validator=v.each(v.gt(0)))
    activation: str = attrs.field(default="relu", validator=v.one_of(tuple(ACTIVATIONS)))
    heads: int | None = attrs.field(default=None, validator=v.gt(0))
    classes: int | None = attrs.field(default=None, validator=v.gt(1))
    max_classes: int = attrs.field(default=1024, validator=v.gt(1))
    mi_estimator: str = attrs.field(default=ESTIMATORS[0], validator=_check_estimator)
    mi_gradient: bool = True


class ASPlugin(nn.Module):
    """VAE-AS: the auxiliary softmax multi-classifier and the objective rec + alpha*MI + beta*MD."""

    api_version = HOOK_API_VERSION
    Options = ASOptions

    def __init__(self, options: ASOptions | None = None):
        super().__init__()
        self.options = options if options is not None else ASOptions()
        self.n = 0
        self.heads = 0
        self.classes = 0
        self.log_n = 0.0
        self.net: nn.Module | None = None

    # building ---------------------------------------------------------------------------------

    @hookimpl
    def setup(self, info: Any) -> None:
        o = self.options
        self.n = int(info.n_train)
        self.heads, self.classes = factorise(self.n, o.heads, o.classes, o.max_classes)
        self.log_n = math.log(max(self.n, 1))
        self.net = mlp([info.latent_dim, *o.hidden, self.heads * self.classes], o.activation, last_activation=False)
        self.register_buffer("powers", self.classes ** torch.arange(self.heads, dtype=torch.long), persistent=False)
        # ``last``: the previous epoch's means, saved with the model (float32: MPS has no float64).
        # The running sums are a plain attribute, not a buffer, so DDP never broadcasts them.
        self.register_buffer("last", torch.zeros(len(STATS)))
        self._acc: torch.Tensor | None = None

    # the classifier and the estimators --------------------------------------------------------

    def labels(self, index: torch.Tensor) -> torch.Tensor:
        """The K base-V digits of each training index (least significant first), ``(B, K)``."""
        return torch.div(index.long().unsqueeze(-1), self.powers, rounding_mode="floor") % self.classes

    def log_probs(self, y: torch.Tensor) -> torch.Tensor:
        """log s_w(e_k = v | y) for each head: ``(..., K, V)``."""
        assert self.net is not None, "setup has not run"
        logits = self.net(y)
        return logits.view(*y.shape[:-1], self.heads, self.classes).log_softmax(-1)

    def statistics(self, y: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy (SC, eq. 8) and mean entropy (eq. 9) of the classifier over samples
        ``y`` ``(..., B, D)`` of the examples with training indices ``index`` ``(B,)``.

        With K heads the classifier's q(x|z) is the product of the heads (section 3.3), so both are
        sums over heads.
        """
        logp = self.log_probs(y)
        labels = self.labels(index).to(y.device).expand(*logp.shape[:-1])
        sc = -logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1).sum(-1).mean()
        entropy = -(logp.exp() * logp).sum((-1, -2)).mean()
        return sc, entropy

    def mi_value(self, sc: Any, entropy: Any) -> Any:
        """The MI estimate of ``mi_estimator`` from SC and the mean entropy (tensors or floats):
        log N - SC (``"cross_entropy"``) or log N - entropy (``"classifier_entropy"``)."""
        return self.log_n - (entropy if self.options.mi_estimator == "classifier_entropy" else sc)

    # hooks ------------------------------------------------------------------------------------

    @hookimpl
    def extra_loss(self, out: Any, ctx: Any) -> dict[str, Term] | None:
        # The classifier's labels are training indices: in validation (indices of another split)
        # its estimates mean nothing, so the validation loss stays the plain -ELBO.
        if not ctx.training or ctx.batch is None:
            return None
        o = self.options
        y = out.y
        need_grad = o.mi_gradient and o.alpha != o.beta and torch.is_grad_enabled() and y.requires_grad
        y_in = y.detach().requires_grad_(need_grad)
        sc, entropy = self.statistics(y_in, ctx.batch.index)
        mi_ba = self.log_n - sc
        mi_value = self.mi_value(sc, entropy)
        if need_grad:
            (grad,) = torch.autograd.grad(mi_value, y_in, retain_graph=True)
            mi = mi_value.detach() + ((y - y.detach()) * grad).sum()
        else:
            mi = mi_value.detach()
        kl = out.kl().mean()
        md = kl - mi
        with torch.no_grad():
            stats = torch.stack([mi, md, sc, mi_ba, kl, torch.ones_like(kl)]) * float(out.x.shape[0])
            self._acc = stats if self._acc is None else self._acc + stats
        w = ctx.kl_weight
        return {
            "mi": Term(mi, w * (o.alpha - 1.0)),
            "md": Term(md, w * (o.beta - 1.0)),
            "sc": Term(sc, 1.0),
        }

    @hookimpl
    def on_epoch_end(self) -> dict[str, float]:
        if self._acc is not None:
            acc = self._acc.double() if self._acc.device.type == "cpu" else self._acc.clone()
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(acc)
            if acc[-1] > 0:
                self.last.copy_(acc[:-1] / acc[-1])
            self._acc = None
        stats = dict(zip(STATS, self.last.tolist()))
        # eq. 10 with the classifier's own label probability gives MD = KL - (log N - SC).
        return {"mi_ba": stats["mi_ba"], "md_eq10": stats["kl"] - stats["mi_ba"]}

    @hookimpl
    def eval_metrics(self) -> dict[str, Any]:
        # The estimates are about the training set (the classifier's labels are training indices),
        # whatever split is evaluated: report those of the evaluated checkpoint's last epoch.
        stats = dict(zip(STATS, self.last.tolist()))
        return {
            "mi": stats["mi"],
            "md": stats["md"],
            "sc": stats["sc"],
            "mi_ba": stats["mi_ba"],
            "md_eq10": stats["kl"] - stats["mi_ba"],
            "kl_train": stats["kl"],
            "log_n": self.log_n,
            "heads": self.heads,
            "classes": self.classes,
        }


@torch.no_grad()
def estimate(model: Any, plugin: ASPlugin, split: Any, batch_size: int = 500, samples: int = 1) -> dict[str, float]:
    """The classifier's estimates over a whole *training* split with the current model, in eval
    mode, on the model's device (the split is streamed with ``vaecore.encode_split``):
    ``mi`` (the plugin's ``mi_estimator``, as in training), ``mi_ba`` (log N - SC),
    ``mi_entropy`` (log N - E[H], eq. 5, 9), ``sc``, ``kl``, ``md`` = kl - mi and
    ``md_eq10`` = kl - mi_ba.
    """
    means, sizes = [], []
    for batch, posterior in encode_split(model, split, batch_size):
        y, log_q = posterior.rsample(samples)
        sc, entropy = plugin.statistics(y, batch.index)
        kl = model.kl_of(posterior, y, log_q).mean()
        means.append(torch.stack([sc, entropy, kl]))  # stays on the model's device: one copy at the end
        sizes.append(batch.x.shape[0])
    if not means:
        raise ValueError("estimate: the split is empty")
    weights = torch.tensor(sizes, dtype=torch.float64)
    totals = (torch.stack(means).cpu().double() * weights[:, None]).sum(0) / weights.sum()
    sc, entropy, kl = totals.tolist()
    mi_entropy, mi_ba = plugin.log_n - entropy, plugin.log_n - sc
    mi = plugin.mi_value(sc, entropy)
    return {
        "mi": mi,
        "mi_ba": mi_ba,
        "mi_entropy": mi_entropy,
        "sc": sc,
        "kl": kl,
        "md": kl - mi,
        "md_eq10": kl - mi_ba,
    }


def fit_classifier(
    plugin: ASPlugin,
    sample: Any,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    generator: torch.Generator | None = None,
) -> list[float]:
    """Train only the classifier by cross-entropy (eq. 8) on latent samples ``sample(index)``
    ``(B, D)`` of training examples drawn uniformly; returns the cross-entropy of each step.

    Used to estimate I_q of a fixed encoder (a trained model, or a toy posterior family): the
    classifier converges to q(x|z) and the estimates to their values for that encoder.
    """
    assert plugin.net is not None, "setup has not run"
    params = list(plugin.net.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        index = torch.randint(0, plugin.n, (batch_size,), generator=generator)
        with torch.no_grad():
            y = sample(index)
        sc, _ = plugin.statistics(y, index)
        opt.zero_grad(set_to_none=True)
        sc.backward()
        opt.step()
        losses.append(float(sc.detach()))
    return losses


@torch.no_grad()
def classifier_mi(plugin: ASPlugin, sample: Any, rounds: int = 20) -> dict[str, float]:
    """The classifier's estimates over ``rounds`` passes over all n examples of ``sample``:
    ``mi`` (the plugin's ``mi_estimator``), ``mi_ba`` (log N - SC), ``mi_entropy``
    (log N - E[H], eq. 5, 9), ``sc`` and ``entropy``."""
    sc_total, h_total = 0.0, 0.0
    index = torch.arange(plugin.n)
    for _ in range(rounds):
        sc, entropy = plugin.statistics(sample(index), index)
        sc_total += float(sc)
        h_total += float(entropy)
    sc, entropy = sc_total / rounds, h_total / rounds
    mi = plugin.mi_value(sc, entropy)
    return {"mi": mi, "mi_ba": plugin.log_n - sc, "mi_entropy": plugin.log_n - entropy, "sc": sc, "entropy": entropy}
