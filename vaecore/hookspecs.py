"""The hook specifications: the contract between the vaecore core and its plugins.

A plugin is a class named by an entry point in the group ``vaecore.plugins``. It has a class
attribute ``api_version`` (the :data:`HOOK_API_VERSION` it targets) and, when it takes options, a
class attribute ``Options`` (an attrs class). The core makes one instance per entry of the
config's ``[[plugins]]`` stack, passing the validated options, and registers it with pluggy.
A plugin that owns parameters or buffers subclasses ``torch.nn.Module``; the core attaches it under
the model (``model.plugins[<id>]``) so it moves, trains, saves and resumes with the model.

How the core calls each kind of hook (pluggy itself only broadcasts; the core does the rest):

* **Folded** (``pre_encode``, ``post_posterior``, ``latent_map``): called in config order; each
  implementation receives the previous one's result and returns the next, or None for "unchanged".
  ``tryfirst``/``trylast`` and wrappers are refused on these hooks: order is the config's.
* **Claimed** (``bound``, ``forward_samples``, ``prior``, ``train_step``): at most one plugin of a stack may
  implement each; two claimants are a config error, never a silent winner.
* **Collected** (``extra_loss``, ``on_epoch_end``, ``eval_metrics``): every implementation is called
  in config order and its named values are namespaced by the plugin's id (``ne.reencode``).
* **Lifecycle** (``setup``, ``on_step_end``): called in config order for their effect on the
  plugin itself; they never mutate the trainer.
* **Registration** (``components``): called on the plugin *class* when a config that lists the
  plugin is read, before any instance exists (so it is a ``@staticmethod`` or ``@classmethod``);
  what it returns can be named in that config.

Implementations may accept any subset of a hook's arguments, by name. Arguments with default
values are refused (pluggy would never pass them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import torch

    from vaecore.components import Component
    from vaecore.data import Split
    from vaecore.distributions import Posterior, Prior
    from vaecore.hooktypes import Batch, Bound, EpochResult, ModelInfo, StepContext, Term
    from vaecore.model import VAE, ForwardOutput
    from vaecore.trainer import TrainLoop

PROJECT = "vaecore"
HOOK_API_VERSION = 2
"""The newest hook API this core provides: the ``api_version`` a new plugin declares.

Every hook is optional, so adding a hook keeps older plugins working: a plugin declares the
version it was written for and loads on any core from :data:`MIN_HOOK_API_VERSION` up to this
one. A change that would break a plugin of some version raises the minimum instead. Versions:

1. the hooks of the first release;
2. adds ``kl_weight`` (KL schedules that stack with any bound), ``ModelInfo.batch_size``,
   ``epochs`` and ``steps_per_epoch``, and ``components`` (encoders, decoders, likelihoods and
   datasets registered by name).
"""
MIN_HOOK_API_VERSION = 1
"""The oldest plugin API this core still loads; a plugin declaring an older one is refused."""

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

HOOK_KINDS: dict[str, str] = {
    "setup": "lifecycle",
    "pre_encode": "folded",
    "post_posterior": "folded",
    "latent_map": "folded",
    "kl_weight": "folded",
    "forward_samples": "claimed",
    "bound": "claimed",
    "prior": "claimed",
    "train_step": "claimed",
    "extra_loss": "collected",
    "on_step_end": "lifecycle",
    "on_epoch_end": "collected",
    "eval_metrics": "collected",
    "components": "registration",
}
"""Each hook's kind (how the core calls it, see above): the one table that the plugin manager,
the registration checks and the generated docs read."""


def hooks_of(kind: str) -> tuple[str, ...]:
    """The hooks of one kind, in the order of :data:`HOOK_KINDS`."""
    return tuple(hook for hook, k in HOOK_KINDS.items() if k == kind)


FOLDED_HOOKS = hooks_of("folded")
CLAIMED_HOOKS = hooks_of("claimed")


@hookspec
def setup(info: ModelInfo) -> None:
    """Build the plugin's own modules once the model's sizes are known.

    Called once per plugin instance, in config order, after the core networks exist and before the
    optimiser is made or a checkpoint is loaded. Parameters created here are optimised and saved.

    :param info: latent size, encoder feature size, input shape, number of training examples
        and likelihood name.

    Example::

        @hookimpl
        def setup(self, info):
            self.head = torch.nn.Linear(info.latent_dim, info.n_train)
    """


@hookspec
def pre_encode(x: torch.Tensor, ctx: StepContext) -> torch.Tensor | None:
    """Transform the encoder input (folded, config order).

    Applies to every encoder pass, including re-encoding (``model.encode``). The reconstruction
    target stays the original ``x``.

    :param x: the input batch as the previous plugin left it, shape ``(B, *input_shape)``.
    :return: the new input of the same shape, or None to leave it unchanged.

    Example (input noise in training only)::

        @hookimpl
        def pre_encode(self, x, ctx):
            return x + 0.1 * torch.randn_like(x) if ctx.training else None
    """


@hookspec
def post_posterior(posterior: Posterior, features: torch.Tensor, ctx: StepContext) -> Posterior | None:
    """Replace the approximate posterior q(y|x) (folded, config order).

    DU-VAE normalises the means and drops out the variances here; an IAF plugin wraps the Gaussian
    in a flow. Each plugin receives the previous plugin's posterior, so in the stack ``du`` then
    ``iaf`` the flow starts from the DU-regularised Gaussian.

    :param posterior: the current posterior (a :class:`~vaecore.distributions.DiagonalGaussian`
        unless an earlier plugin replaced it).
    :param features: the encoder's last hidden layer, shape ``(B, feature_dim)``.
    :return: the new posterior, or None to leave it unchanged.
    """


@hookspec
def latent_map(y: torch.Tensor, ctx: StepContext) -> torch.Tensor | None:
    """Map latent samples y to the decoder's input z = g(y) (folded, config order).

    Used in training, in prior sampling (y ~ p(y), then g, then the decoder) and for
    representations (g(mean)). The prior and the KL stay on y. ``y`` may have any number of
    leading dimensions; the last one is the latent dimension.

    :return: z with the same leading dimensions, or None to leave y unchanged.
    """


@hookspec
def kl_weight(weight: float, ctx: StepContext) -> float | None:
    """The KL weight of this training step (folded, config order): a KL schedule.

    The first plugin receives the core's weight, ``train.beta`` times the KL warm-up factor, and
    each returns the weight to use (or None to leave it); the last result is ``ctx.kl_weight``
    for the step, which every bound reads (the ELBO, the Rényi bounds with ``anneal = "ratio"``,
    the AS terms) and which is logged as ``train.kl_weight``. Called once per training step,
    before the forward pass; validation and evaluation use weight 1 and do not call it.

    :param weight: the weight so far for this step (``ctx.step`` is the 0-based step).
    :return: the weight to use, a finite float >= 0, or None.

    Example (Fu et al.'s cyclical schedule is ``kl_cyclic`` in ``vaecore-baselines-plugin``)::

        @vaecore.hookimpl
        def kl_weight(self, weight, ctx):
            return weight * min(1.0, (ctx.step % 1000) / 500)
    """


@hookspec(firstresult=True)
def forward_samples(training: bool) -> int | None:
    """Claim the number K of posterior samples drawn per example (claimed: one plugin at most).

    Without a claimant K is ``train.samples`` in training and 1 in validation. The Rényi plugin
    answers with its ``samples`` option.
    """


@hookspec(firstresult=True)
def bound(out: ForwardOutput, ctx: StepContext) -> Bound | None:
    """Compute the training objective, replacing the ELBO (claimed: one plugin at most).

    ``out`` carries per-sample log-weights for K samples (``out.log_px``, ``out.log_py``,
    ``out.log_qy``, each ``(K, B)``; ``out.log_w`` is their combination), so any bound built from
    importance weights needs no core change. The built-in ELBO claims this hook when no plugin does.

    :return: a :class:`~vaecore.hooktypes.Bound` with the scalar loss to minimise and the terms
        to log.
    """


@hookspec(firstresult=True)
def prior(info: ModelInfo, model: VAE) -> Prior | None:
    """Provide the prior p(y) (claimed: one plugin at most); the default is a standard normal.

    Called once, after ``setup``, with the model being built (its encoder and decoder exist; a
    VampPrior encodes its pseudo-inputs with ``model.encoder``; keep a weak reference, not a
    submodule). The returned object's ``log_prob`` and ``sample`` are used by
    every bound, diagnostic and prior sample; a non-Gaussian prior makes the KL a Monte Carlo
    estimate.
    """


@hookspec(firstresult=True)
def train_step(batch: Batch, ctx: StepContext, loop: TrainLoop) -> tuple[tuple[str, ...], list[torch.Tensor]] | None:
    """Take over one training step (claimed: one plugin at most).

    ``loop`` (a :class:`~vaecore.trainer.TrainLoop`) gives the objective of a batch
    (``loop.objective``), an optimiser update of chosen parameters (``loop.update``), extra random
    training batches (``loop.sample_batch``) and the parameter groups (``loop.encoder_parameters``,
    ``loop.decoder_parameters``). Return the step's logged terms ``(names, values)`` as
    ``loop.objective`` gives them, or None to let the core make its usual step. Not available
    under torchrun.

    Example (decoder-only steps)::

        @hookimpl
        def train_step(self, batch, ctx, loop):
            names, values, loss = loop.objective(batch, ctx)
            loop.update(loss, names, values, loop.decoder_parameters)
            return names, values
    """


@hookspec
def extra_loss(out: ForwardOutput, ctx: StepContext) -> dict[str, torch.Tensor | Term] | None:
    """Add named loss terms (collected, config order).

    Each value is a scalar tensor (weight 1) or a :class:`~vaecore.hooktypes.Term` with a weight.
    The core namespaces names by the plugin's id (``ne.reencode``), adds the weighted sum to the
    loss, and logs every term; names must be identifiers. No plugin touches the total loss.

    Example::

        @hookimpl
        def extra_loss(self, out):
            return {"l2": Term(out.z.pow(2).sum(-1).mean(), weight=self.options.weight)}
    """


@hookspec
def on_step_end(ctx: StepContext) -> None:
    """Act on the plugin's own state after each optimiser step (lifecycle, config order)."""


@hookspec
def on_epoch_end(epoch: int, metrics: dict[str, float], ctx: StepContext) -> EpochResult | dict | None:
    """Report at the end of each epoch, after validation (collected, config order).

    :param metrics: this epoch's logged values (``train.loss``, ``valid.loss``, ...), read-only.
    :return: an :class:`~vaecore.hooktypes.EpochResult` (metrics to log, namespaced by plugin id,
        and/or a request to stop), a plain dict of metrics, or None.
    """


@hookspec
def eval_metrics(model: VAE, split: Split, ctx: StepContext) -> dict[str, Any] | None:
    """Contribute metrics to the final evaluation (``eval.json``), namespaced by plugin id.

    Called once, before the core's pass over the split. A value may be a torchmetrics
    ``Metric``: the core moves it to the metrics' device, calls ``metric.update(batch, out)``
    for every batch of its own single pass (``batch`` a :class:`~vaecore.hooktypes.Batch` on the
    model's device, ``out`` the :class:`~vaecore.model.ForwardOutput` of that batch with one
    posterior sample, in eval mode, after the core's importance samples) and reports
    ``metric.compute()``. That is the cheapest way: no second pass, and the metric syncs across
    processes under torchrun like the core's. ``update`` should not draw random numbers.

    Other values are reported as they are. A plugin that needs its own pass reads the split
    through :func:`vaecore.device_batches` (batches on the model's device, with ``ctx.batch``
    set) or :func:`vaecore.encode_split` (each batch with its posterior, in eval mode), never
    ``split.batches`` directly: the model may live on a GPU. The conformance suite checks this.

    :param split: the evaluated split (tensors ``x``, ``y``, ``index``, on the CPU).
    :return: a dict of ``Metric``s and JSON-serialisable values (floats, lists), or None.

    Example::

        class MeanNorm(torchmetrics.Metric):
            def __init__(self):
                super().__init__()
                self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
                self.add_state("n", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

            def update(self, batch, out):
                self.total += out.posterior.mean.norm(dim=-1).sum().double()
                self.n += out.x.shape[0]

            def compute(self):
                return self.total / self.n

    and in the plugin::

        @vaecore.hookimpl
        def eval_metrics(self, model, split, ctx):
            return {"mean_norm": MeanNorm()}
    """


@hookspec
def components() -> list[Component] | None:
    """Register encoders, decoders, likelihoods and datasets by name (registration).

    Called on the plugin class (so implement it as a ``@staticmethod`` or ``@classmethod``, see
    the example) when a config listing the plugin is read. Each returned
    :class:`~vaecore.Component` can then be named in that config: ``[model.encoder] kind = "lstm"``,
    ``data.name = "kjv"``; the keys beside ``kind`` are structured into the component's
    ``Options`` class and reported like plugin options. A name already registered (built in or by
    another listed plugin) is refused. :mod:`vaecore.components` says what each role's factory is
    called with and must return.

    Example::

        class TextPlugin:
            api_version = 2

            @staticmethod
            @vaecore.hookimpl
            def components():
                return [vaecore.Component("encoder", "lstm", LSTMEncoder)]
    """
