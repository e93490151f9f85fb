"""The NE plugin: decode the latent code, re-encode the reconstruction, penalise the distance."""

from __future__ import annotations

import math

import attrs
import torch

import vaecore
from vaecore import validators as v
from vaecore.errors import PluginError
from vaecore.hooktypes import StepContext, Term
from vaecore.model import VAE, ForwardOutput
from vaecore_ne.loss import buffers_restored, lp_loss, se_loss

VARIANTS = ("se", "lp")
RECONSTRUCTIONS = ("mean", "sample")
DECODINGS = ("sample", "greedy", "teacher_forced_approximation")
TARGETS = ("sample", "mean")
DETACHABLE = ("code", "reconstruction", "reencoded")


def _not_nan(_instance: object, _attribute: object, value: float) -> None:
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(f"must be a number or -inf, got {value!r}")


@attrs.define(kw_only=True)
class Options:
    """Options of one ``ne`` entry of the stack (see the README for the reasoning behind each default).

    * ``variant``: ``"se"`` (eq. 7) or ``"lp"`` (eq. 8-9).
    * ``weight``: the weight of the term in the loss; 0 only logs the re-encoding error.
    * ``cap``: the cap c of ``lp`` (may be negative; ``-inf`` is the uncapped loss). Ignored by ``se``.
    * ``reconstruction``: x_hat is the decoder's ``"mean"`` or a ``"sample"`` of p(x|z). With an
      autoregressive decoder (``pixelcnn``) E[x|z] is intractable and both are taken along the
      pixel path that ``decoding`` sets: ``"mean"`` gives each pixel's conditional mean
      E[x_i | path_<i, z], ``"sample"`` the pixels of the path itself.
    * ``decoding``: autoregressive decoders only (ignored by the others): how the pixel path is
      obtained from z. ``"sample"`` (the default, the paper's x_hat ~ p(x|z)) draws it pixel by
      pixel; ``"greedy"`` takes each pixel's mode given the earlier ones (deterministic). Both
      cost one decoder step per pixel, without a graph, on every training *and* validation step
      (README, "Cost": 0.27 s against 0.09 s per training step of 50 images, one thread, for the
      collapse testbed's PixelCNN; 0.25 s against 0.04 s to validate 100 rows).
      ``"teacher_forced_approximation"`` is the cheap, biased approximation: it reuses the
      forward pass's parameters, teacher-forced on the *data* (each pixel given the input's
      earlier pixels), so x_hat follows x rather than z and the re-encoding error can be
      underestimated (a collapsed code is hidden by the data's pixels). Not the paper's loss.
    * ``target``: the re-encoded code compared with z by ``se``: a ``"sample"`` of q(.|x_hat) (the
      paper) or its ``"mean"``. ``lp`` scores z under the whole re-encoded posterior, so it takes
      only ``"sample"`` (the default).
    * ``detach``: gradient stops, any of ``"code"`` (the code z of the input: no NE gradient into the
      first encoder pass), ``"reconstruction"`` (x_hat: no NE gradient into the decoder) and
      ``"reencoded"`` (the re-encoded posterior: no NE gradient into the second encoder pass).
      Empty by default: the gradient of eq. 6 with respect to every parameter, through every path.
    * ``update_stats``: let the re-encoding pass change the model's buffers (BatchNorm running
      statistics of a DU stack, for instance). Off by default: the changes are undone, so only
      real data feeds the statistics used at evaluation.
    """

    variant: str = attrs.field(default="se", validator=v.one_of(VARIANTS))
    weight: float = attrs.field(default=1.0, validator=v.ge(0))
    cap: float = attrs.field(default=0.0, validator=_not_nan)
    reconstruction: str = attrs.field(default="mean", validator=v.one_of(RECONSTRUCTIONS))
    decoding: str = attrs.field(default="sample", validator=v.one_of(DECODINGS))
    target: str = attrs.field(default="sample", validator=v.one_of(TARGETS))
    detach: list[str] = attrs.field(factory=list, validator=v.each(v.one_of(DETACHABLE)))
    update_stats: bool = False

    def validate(self) -> None:
        """Cross-option checks (the config loader calls this after the field validators)."""
        if self.variant == "lp" and self.target != "sample":
            raise ValueError(
                "target: applies to variant 'se' only; 'lp' scores z under the re-encoded posterior "
                "N(mu_hat, sigma_hat^2), not against one re-encoded code"
            )
        duplicates = sorted({d for d in self.detach if self.detach.count(d) > 1})
        if duplicates:
            raise ValueError(f"detach: lists {', '.join(repr(d) for d in duplicates)} more than once")


class NEPlugin:
    """NE-VAE's re-encoding loss, added through ``extra_loss`` as the term ``reencode``.

    For each posterior sample y (``out.y``, ``(K, B, D)``) and its decoder input z = g(y)
    (``out.z``): x_hat = mean (or a sample) of p(x|z), decoded from z alone (see
    :meth:`reconstruct`); the stack's own encoder path
    (``model.encode``: ``pre_encode``, the encoder, ``post_posterior``) gives q(y|x_hat); the loss
    compares y with it (se: with a sample or the mean of q(y|x_hat); lp: the capped negative log
    density of y under it), summed over latent dimensions and averaged over samples and batch.
    The comparison is in the posterior's space y (identical to z without a ``latent_map``).
    """

    api_version = vaecore.HOOK_API_VERSION
    Options = Options

    def __init__(self, options: Options | None = None):
        self.options = options if options is not None else Options()

    @vaecore.hookimpl
    def extra_loss(self, out: ForwardOutput, ctx: StepContext) -> dict[str, Term]:
        opts = self.options
        with torch.set_grad_enabled(torch.is_grad_enabled() and opts.weight > 0):
            value = self.reencoding_loss(out, ctx)
        return {"reencode": Term(value, weight=opts.weight)}

    def reencoding_loss(self, out: ForwardOutput, ctx: StepContext) -> torch.Tensor:
        """The batch mean of the re-encoding loss of a forward pass (a scalar)."""
        opts, model = self.options, ctx.model
        y = out.y.detach() if "code" in opts.detach else out.y
        x_hat = self.reconstruct(out, model)
        k, b, d = y.shape
        x_hat = x_hat.reshape(k * b, *x_hat.shape[2:])
        y = y.reshape(k * b, d)
        no_grad = "reencoded" in opts.detach  # z_hat is a constant: skip building its graph
        with (
            buffers_restored(model, enabled=not opts.update_stats),
            torch.set_grad_enabled(torch.is_grad_enabled() and not no_grad),
        ):
            posterior, _ = model.encode(x_hat, ctx)
        if opts.variant == "se":
            z_hat = posterior.rsample(1)[0][0] if opts.target == "sample" else posterior.mean
            return se_loss(y, z_hat).mean()
        loc, log_var = _gaussian_parameters(posterior)
        return lp_loss(y, loc, log_var, opts.cap).mean()

    def reconstruct(self, out: ForwardOutput, model: VAE) -> torch.Tensor:
        """x_hat for every code of ``out``: ``(K, B, *input_shape)``, a function of ``out.z`` only
        (and of torch's global RNG), except with ``decoding = "teacher_forced_approximation"``.

        Every ``detach`` and ``reconstruction`` value re-encodes the same x_hat (same z, same RNG
        state); ``detach`` only decides where gradients stop. With an autoregressive decoder the
        path is drawn without a graph (a pixel-by-pixel draw has no pathwise derivative: its
        pixels are discrete for a Bernoulli decoder, and each pixel's distribution depends on the
        earlier draws); ``"mean"`` is then differentiable in z and the decoder through the
        parameters teacher-forced on the path (the path itself held fixed), ``"sample"`` not at all.
        """
        opts = self.options
        detach = set(opts.detach)
        z = out.z.detach() if "code" in detach else out.z
        likelihood = model.likelihood
        grad = torch.is_grad_enabled() and "reconstruction" not in detach
        if model.autoregressive and opts.decoding != "teacher_forced_approximation":
            path, _ = model.generate(z, greedy=opts.decoding == "greedy")
            if opts.reconstruction == "sample":
                return path
            with torch.set_grad_enabled(grad):
                return likelihood.mean(model.decode(z, path))
        with torch.set_grad_enabled(grad):
            # non-autoregressive decoders ignore out.x; an autoregressive one is teacher-forced on it
            # (the approximation): out.params is the decoder's output for out.z on out.x, reused
            params = model.decode(z, out.x) if "code" in detach else out.params
            x_hat = likelihood.mean(params) if opts.reconstruction == "mean" else likelihood.sample(params)
        return x_hat if grad else x_hat.detach()


def _gaussian_parameters(posterior: object) -> tuple[torch.Tensor, torch.Tensor]:
    loc, var = getattr(posterior, "loc", None), getattr(posterior, "var", None)
    if not isinstance(loc, torch.Tensor) or not isinstance(var, torch.Tensor):
        raise PluginError(
            f"ne: variant 'lp' needs a diagonal Gaussian posterior (with loc and var), but the stack's "
            f"posterior is {type(posterior).__name__}; use variant 'se' with this stack"
        )
    log_var = getattr(posterior, "log_var", None)
    return loc, log_var if isinstance(log_var, torch.Tensor) else var.log()
