"""The VAE: encoder -> q(y|x) -> samples y -> z = g(y) -> decoder p(x|z), with the plugin hooks
applied at each arrow, and the per-sample log-weights every bound is built from."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, cast

import attrs
import torch
from torch import nn

from vaecore.config import ModelConfig, TrainConfig
from vaecore.distributions import DiagonalGaussian, Posterior, Prior, StandardNormal
from vaecore.hooktypes import Extras, ModelInfo, StepContext, set_context
from vaecore.plugin_manager import PluginStack


@attrs.define(slots=True)
class ForwardOutput:
    """One forward pass over a batch of B examples with K posterior samples each.

    ``x`` is the reconstruction target (the batch before ``pre_encode``); ``y`` ``(K, B, D)`` are
    posterior samples, ``z`` ``(K, B, Dz)`` their images under ``latent_map``, ``params`` the
    decoder's output ``(K, B, *input_shape)``. ``log_px``, ``log_py`` and ``log_qy`` are
    ``(K, B)``. ``kl_per_dim`` ``(B, D)`` is the analytic KL(q(y|x) || p(y)) when the posterior is
    Gaussian and the prior standard normal, else None. ``extras`` holds what each plugin's hooks
    stored in ``ctx.extras.of(plugin)`` during this pass (:class:`~vaecore.hooktypes.Extras`).

    ``log_py`` and ``log_qy`` may be given as tensors or as functions of no arguments that
    compute them: the forward pass defers them, so a step whose bound never reads them (the ELBO
    with an analytic KL) does not compute them. A deferred value is computed at each read, in the
    grad mode of that read, and never cached (a value first read under ``no_grad`` would
    otherwise reach a bound without its gradient).
    """

    x: torch.Tensor
    posterior: Posterior
    features: torch.Tensor
    y: torch.Tensor
    z: torch.Tensor
    params: torch.Tensor
    log_px: torch.Tensor
    _log_py: torch.Tensor | Callable[[], torch.Tensor] = attrs.field(alias="log_py")
    _log_qy: torch.Tensor | Callable[[], torch.Tensor] = attrs.field(alias="log_qy")
    kl_per_dim: torch.Tensor | None
    extras: Extras = attrs.field(factory=Extras)

    @property
    def log_py(self) -> torch.Tensor:
        """log p(y) of the samples under the prior, ``(K, B)``."""
        return self._log_py if isinstance(self._log_py, torch.Tensor) else self._log_py()

    @property
    def log_qy(self) -> torch.Tensor:
        """log q(y|x) of the samples under the posterior, ``(K, B)``."""
        return self._log_qy if isinstance(self._log_qy, torch.Tensor) else self._log_qy()

    @property
    def log_w(self) -> torch.Tensor:
        """Log importance weights log p(x|z) + log p(y) - log q(y|x), ``(K, B)``."""
        return self.log_px + self.log_py - self.log_qy

    def kl(self) -> torch.Tensor:
        """KL per example ``(B,)``: analytic when available, else the Monte Carlo mean over K."""
        if self.kl_per_dim is not None:
            return self.kl_per_dim.sum(-1)
        return (self.log_qy - self.log_py).mean(0)


class VAE(nn.Module):
    """A VAE whose encoder, posterior, latent map, prior and objective plugins come from a stack.

    Plugins that are ``nn.Module`` are held in ``model.plugins`` (keyed by their id), so their
    parameters and buffers are optimised, moved, saved and restored with the model.
    """

    def __init__(
        self,
        config: ModelConfig,
        input_shape: tuple[int, ...],
        n_train: int,
        stack: PluginStack,
        train: TrainConfig | None = None,
        data_meta: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.config = config
        self.input_shape = tuple(input_shape)
        self.latent_dim = config.latent_dim
        self.data_meta: dict[str, Any] = dict(data_meta or {})
        """The dataset's :attr:`~vaecore.data.Dataset.meta` the components were built with."""
        meta = self.data_meta
        self.encoder = config.encoder.build(input_shape=self.input_shape, latent_dim=config.latent_dim, data_meta=meta)
        self.likelihood = config.likelihood.build(input_shape=self.input_shape, data_meta=meta)
        self.decoder = config.decoder.build(
            latent_dim=config.latent_dim, param_shape=self.likelihood.param_shape(self.input_shape), data_meta=meta
        )
        self.stack = stack
        self.info = ModelInfo(
            latent_dim=config.latent_dim,
            feature_dim=self.encoder.feature_dim,
            input_shape=self.input_shape,
            n_train=n_train,
            likelihood=config.likelihood.kind,
            **(
                {}
                if train is None
                else {
                    "batch_size": train.batch_size,
                    "epochs": train.epochs,
                    "steps_per_epoch": -(-n_train // train.batch_size),
                }
            ),
        )
        stack.setup(self.info)
        self.plugins = nn.ModuleDict({pid: p for pid, p in stack.plugins.items() if isinstance(p, nn.Module)})
        prior = stack.prior(self.info, self)
        self.prior: Prior = prior if prior is not None else StandardNormal(config.latent_dim)
        self.standard_prior = getattr(self.prior, "is_standard_normal", False)

    @property
    def decoder_device(self) -> torch.device:
        """The device of the decoder's parameters, where latent codes are sent."""
        return next(self.decoder.parameters()).device

    def context(self, training: bool | None = None, **fields: object) -> StepContext:
        """A hook context for calls made outside the trainer (evaluation, analysis)."""
        return StepContext(model=self, training=self.training if training is None else training, **fields)  # type: ignore[arg-type]

    def encode(self, x: torch.Tensor, ctx: StepContext | None = None) -> tuple[Posterior, torch.Tensor]:
        """q(y|x) for a batch, after ``pre_encode`` and ``post_posterior``; also the encoder features.
        Without ``ctx`` the hooks get :meth:`context` (the model's own training mode)."""
        ctx = self.context() if ctx is None else ctx
        x_in = self.stack.pre_encode(x, ctx)
        with self.low_precision():
            loc, log_var, features = self.encoder(x_in)
        if self.precision is not None:
            loc, log_var, features = loc.float(), log_var.float(), features.float()
        posterior = DiagonalGaussian.from_log_var(loc, log_var)
        return self.stack.post_posterior(posterior, features, ctx), features

    def latent_map(self, y: torch.Tensor, ctx: StepContext | None = None) -> torch.Tensor:
        """z = g(y) through the stack's ``latent_map`` (identity without one)."""
        return self.stack.latent_map(y, self.context() if ctx is None else ctx)

    precision: torch.dtype | None = None
    """Autocast dtype of the encoder and decoder networks (``train.precision``); None is float32.
    Densities, KL terms and bounds are always computed in float32."""

    def low_precision(self) -> contextlib.AbstractContextManager:
        """The autocast context of the networks (a no-op in float32)."""
        if self.precision is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.decoder_device.type, dtype=self.precision)

    @property
    def autoregressive(self) -> bool:
        """Whether the decoder is autoregressive (``pixelcnn``): p(x|z) = prod_i p(x_i|x_<i, z)."""
        return bool(getattr(self.decoder, "autoregressive", False))

    def decode(self, z: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder parameters for latent codes of any leading shape ``(..., Dz)``.

        A non-autoregressive decoder ignores ``x``. An autoregressive one (``pixelcnn``) gives the
        parameter of each pixel given z and the pixels before it, so it needs those pixels:

        * ``decode(z, x)`` -- teacher forcing on the targets ``x`` (shape ``(*input_shape)``
          broadcast against z's leading shape, e.g. ``(B, ...)`` for z ``(K, B, Dz)``):
          ``likelihood.log_prob(x, decode(z, x))`` is the exact log p(x|z). Training and the
          likelihood evaluation use this.
        * ``decode(z)`` -- first draws one x ~ p(x|z) pixel by pixel (torch's global RNG, no
          gradient), then returns the teacher-forced parameters on that sample, which are
          differentiable in z and the decoder. ``likelihood.mean(decode(z))`` is therefore the
          per-pixel conditional mean along a random sample, not E[x|z] (intractable); use
          :meth:`generate` for the sample itself. Costs one network pass per pixel.
        """
        lead = z.shape[:-1]
        flat_z = z.reshape(-1, z.shape[-1])
        if self.autoregressive and x is None:
            x = self.generate(z)[0]
        with self.low_precision():
            if not self.autoregressive:
                params = self.decoder(flat_z)
            else:
                assert x is not None
                flat_x = x.expand(*lead, *self.input_shape).reshape(-1, *self.input_shape)
                params = cast(Any, self.decoder)(flat_z, flat_x)
        if params.dtype != torch.float32:  # autocast output; a dtype check costs no kernel call
            params = params.float()
        return params.view(*lead, *params.shape[1:])

    @torch.no_grad()
    def generate(self, z: torch.Tensor, greedy: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs drawn from p(x|z) for codes of any leading shape, with the decoder parameters they
        were drawn from: ``(x, params)``, both ``(..., *input_shape)``. ``greedy`` takes each pixel's
        mode instead of a sample. Autoregressive decoders draw pixel by pixel, so ``params`` of pixel
        i is conditioned on the drawn pixels before it and ``likelihood.log_prob(x, params)`` is the
        exact log-probability of the draw."""
        lead = z.shape[:-1]
        flat_z = z.reshape(-1, z.shape[-1])
        if self.autoregressive:
            decoder: Any = self.decoder
            x, params = decoder.generate(flat_z, self.likelihood, greedy)
        else:
            params = cast(Any, self.decoder)(flat_z)
            x = self.likelihood.mode(params) if greedy else self.likelihood.sample(params)
        return x.view(*lead, *x.shape[1:]), params.view(*lead, *params.shape[1:])

    def forward(self, x: torch.Tensor, ctx: StepContext | None = None, samples: int = 1) -> ForwardOutput:
        """One pass over a batch with ``samples`` posterior samples per example; the hooks of the
        pass share a fresh ``ctx.extras``, which the output carries. Without ``ctx``:
        :meth:`context`, so ``model(x)`` works outside the trainer."""
        ctx = self.context() if ctx is None else ctx
        outer, extras = ctx.extras, Extras()
        set_context(ctx, extras=extras)
        try:
            posterior, features = self.encode(x, ctx)
            deferred = getattr(posterior, "rsample_deferred", None)
            y, log_qy = posterior.rsample(samples) if deferred is None else deferred(samples)
            z = self.latent_map(y, ctx)
            params = self.decode(z, x)
        finally:
            set_context(ctx, extras=outer)
        kl = self.analytic_kl(posterior)
        return ForwardOutput(
            x=x,
            posterior=posterior,
            features=features,
            y=y,
            z=z,
            params=params,
            log_px=self.likelihood.log_prob(x, params),
            log_py=lambda: self.prior.log_prob(y),
            log_qy=log_qy,
            kl_per_dim=kl,
            extras=extras,
        )

    def analytic_kl(self, posterior: Posterior) -> torch.Tensor | None:
        """KL(q(y|x) || p(y)) per dimension ``(B, D)`` when it is analytic (a standard normal prior
        and a posterior that provides it), else None: the one place the core chooses between the
        analytic KL and a Monte Carlo estimate (:meth:`kl_of`, :meth:`ForwardOutput.kl`)."""
        return posterior.kl_per_dim() if self.standard_prior else None

    def kl_of(self, posterior: Posterior, y: torch.Tensor, log_qy: torch.Tensor) -> torch.Tensor:
        """KL per example ``(B,)``: analytic when :meth:`analytic_kl` gives it, else the Monte Carlo
        mean over the samples ``y`` ``(K, B, D)`` drawn from ``posterior`` with log-densities
        ``log_qy`` ``(K, B)``."""
        dims = self.analytic_kl(posterior)
        return dims.sum(-1) if dims is not None else (log_qy - self.prior.log_prob(y)).mean(0)

    def represent(self, x: torch.Tensor, ctx: StepContext | None = None) -> torch.Tensor:
        """The representation g(mean of q(y|x)) of a batch."""
        ctx = self.context() if ctx is None else ctx
        posterior, _ = self.encode(x, ctx)
        return self.latent_map(posterior.mean, ctx)

    @torch.no_grad()
    def sample_prior(self, n: int, ctx: StepContext | None = None, mean: bool = True) -> torch.Tensor:
        """n inputs generated from y ~ p(y) through ``latent_map`` and the decoder (its mean by default).

        With an autoregressive decoder ``mean`` gives the per-pixel conditional means along the
        greedy (per-pixel mode) decoding, and ``mean=False`` a sample drawn pixel by pixel."""
        ctx = self.context(training=False) if ctx is None else ctx
        y = self.prior.sample(n).to(self.decoder_device)
        z = self.latent_map(y, ctx)
        if self.autoregressive:
            x, params = self.generate(z, greedy=mean)
            return self.likelihood.mean(params) if mean else x
        params = self.decode(z)
        return self.likelihood.mean(params) if mean else self.likelihood.sample(params)
