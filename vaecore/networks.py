"""Encoder and decoder networks built from the model config.

Kinds (``model.encoder.kind`` / ``model.decoder.kind``):

* ``mlp`` -- fully connected layers ``hidden`` with ``activation`` (encoder and decoder).
* ``conv`` -- the convolutional MNIST networks of the InteL-VAE experiments: encoder
  conv 4x4 stride 2 with ``channels`` = [32, 64, 128] filters, each followed by batch norm and
  LeakyReLU(0.2), then (optionally) a dense layer of ``features`` units; decoder dense
  -> ``channels[-1]`` feature maps of size H/2^(n-1) (7x7x128 on MNIST) with batch norm and ReLU, then
  transposed convolutions 4x4 stride 2 up the reversed ``channels`` (64, 32) and a 3x3 convolution to
  the likelihood's parameters.
* ``resnet`` -- encoder only: the ResNet of He et al. (2019): residual blocks of two 3x3
  convolutions (batch norm, ELU), stride 2 each, with ``channels`` = [32, 32, 32] (He et al.: 64),
  then a convolution covering the remaining map to ``features`` = 256 units (He et al.: 512).
* ``pixelcnn`` -- decoder only: an autoregressive PixelCNN conditioned on z (He et al. 2019):
  z is projected by a linear layer to ``z_channels`` feature maps of the image size and concatenated
  to the image; a mask-A convolution (``kernel_sizes[0]``, masking only the image channel) is followed
  by residual blocks (1x1 conv, masked-B ``k x k`` conv, 1x1 conv, ELU) for the other kernel sizes and
  a 1x1 output head giving one likelihood parameter per pixel. Pixels are ordered in raster order.

Image networks take inputs of shape ``(C, H, W)``, ``(H, W)`` or flat ``(H*W,)`` with H = W (so the
shipped flat binarized MNIST works unchanged); outputs are reshaped to the input shape.

Decoders have an ``autoregressive`` flag. A non-autoregressive decoder maps ``z -> params``. An
autoregressive one maps ``(z, x) -> params``, where the parameter of pixel i depends only on z and
the pixels before i (teacher forcing: one pass gives the exact log p(x|z)), and
``generate(z, likelihood, greedy)`` draws x pixel by pixel.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, cast

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from vaecore import validators as v
from vaecore.errors import ConfigError
from vaecore.likelihoods import Likelihood

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}

CONV_CHANNELS = [32, 64, 128]
RESNET_CHANNELS = [32, 32, 32]
RESNET_FEATURES = 256
PIXELCNN_KERNELS = [7, 5, 5, 3, 3]


# options: the keys each kind takes in [model.encoder] / [model.decoder] ----------------------


@attrs.define(kw_only=True)
class MLPOptions:
    """``mlp``: fully connected layers."""

    hidden: list[int] = attrs.field(factory=lambda: [500, 500], validator=v.each(v.gt(0)))
    """hidden layer sizes"""
    activation: str = attrs.field(default="tanh", validator=v.one_of(ACTIVATIONS))
    """the nonlinearity after each hidden layer"""


@attrs.define(kw_only=True)
class ConvOptions:
    """``conv``: InteL's MNIST networks."""

    channels: list[int] | None = attrs.field(default=None, validator=[v.each(v.gt(0)), v.nonempty()])
    """filters per stride-2 layer (default [32, 64, 128])"""
    batch_norm: bool = True
    """batch normalisation after each convolution"""
    features: int | None = attrs.field(default=None, validator=v.gt(0))
    """encoder only: a dense layer of this many units after the convolutions (default: none)"""


@attrs.define(kw_only=True)
class ResNetOptions:
    """``resnet`` (encoder): He et al.'s (2019) residual network."""

    channels: list[int] | None = attrs.field(default=None, validator=[v.each(v.gt(0)), v.nonempty()])
    """channels per stride-2 residual block (default [32, 32, 32]; He et al.: 64)"""
    batch_norm: bool = True
    """batch normalisation in every block"""
    features: int | None = attrs.field(default=None, validator=v.gt(0))
    """units of the convolution over the remaining map (default 256; He et al.: 512)"""


@attrs.define(kw_only=True)
class PixelCNNOptions:
    """``pixelcnn`` (decoder): He et al.'s (2019) PixelCNN conditioned on z."""

    kernel_sizes: list[int] | None = attrs.field(
        default=None, validator=[v.each(v.gt(0)), v.each(v.odd()), v.nonempty()]
    )
    """kernel size of each masked layer (default [7, 5, 5, 3, 3])"""
    width: int = attrs.field(default=32, validator=v.gt(0))
    """hidden channels"""
    z_channels: int = attrs.field(default=4, validator=v.gt(0))
    """feature maps projected from z and concatenated to the image"""


def mlp(sizes: list[int], activation: str, last_activation: bool) -> nn.Sequential:
    """Linear layers between consecutive ``sizes`` with the activation after each (and the last one
    too when ``last_activation``)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if last_activation or i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def image_shape(input_shape: tuple[int, ...], kind: str) -> tuple[int, int, int]:
    """``(C, H, W)`` for an input shape ``(C, H, W)``, ``(H, W)`` or flat ``(H*H,)``."""
    shape = tuple(input_shape)
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    if len(shape) == 2:
        return (1, *shape)  # type: ignore[return-value]
    if len(shape) == 1:
        side = math.isqrt(shape[0])
        if side * side == shape[0] and side > 1:
            return (1, side, side)
    raise ConfigError(
        f"model network kind {kind!r} needs image inputs of shape (C, H, W), (H, W) or a flat square "
        f"(H*H,); the data has shape {shape}"
    )


def _norm(channels: int, on: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if on else nn.Identity()


# encoders ------------------------------------------------------------------------------------


class Encoder(nn.Module):
    """x -> features h (last hidden layer) -> (mean, log-variance) of q(y|x)."""

    Options = MLPOptions

    def __init__(self, options: MLPOptions, input_shape: tuple[int, ...], latent_dim: int):
        super().__init__()
        n_in = math.prod(input_shape)
        self.body = nn.Sequential(nn.Flatten(), mlp([n_in, *options.hidden], options.activation, last_activation=True))
        self.feature_dim = options.hidden[-1] if options.hidden else n_in
        self.head = nn.Linear(self.feature_dim, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.body(x)
        loc, log_var = self.head(h).chunk(2, dim=-1)
        return loc, log_var, h


class _ImageEncoder(nn.Module):
    """Shared tail of the image encoders: ``body`` on the image, flattened features, linear head."""

    body: nn.Module
    image: tuple[int, int, int]
    feature_dim: int

    def _finish(self, image: tuple[int, int, int], latent_dim: int) -> None:
        with torch.no_grad():
            was = self.body.training
            self.body.eval()
            self.feature_dim = int(self.body(torch.zeros(1, *image)).numel())
            self.body.train(was)
        self.head = nn.Linear(self.feature_dim, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.body(x.reshape(x.shape[0], *self.image)).flatten(1)
        loc, log_var = self.head(h).chunk(2, dim=-1)
        return loc, log_var, h


class ConvEncoder(_ImageEncoder):
    """InteL's MNIST encoder: conv 4x4 stride 2 per entry of ``channels``, batch norm, LeakyReLU."""

    Options = ConvOptions

    def __init__(self, options: ConvOptions, input_shape: tuple[int, ...], latent_dim: int):
        super().__init__()
        self.image = image_shape(input_shape, "conv")
        channels = options.channels or CONV_CHANNELS
        layers: list[nn.Module] = []
        n_in = self.image[0]
        for n_out in channels:
            layers += [
                nn.Conv2d(n_in, n_out, 4, stride=2, padding=1),
                _norm(n_out, options.batch_norm),
                nn.LeakyReLU(0.2),
            ]
            n_in = n_out
        layers.append(nn.Flatten())
        if options.features:
            with torch.no_grad():
                flat = int(nn.Sequential(*layers).eval()(torch.zeros(1, *self.image)).numel())
            layers += [nn.Linear(flat, options.features), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)
        self._finish(self.image, latent_dim)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and ELU, a projected shortcut when the shape changes."""

    def __init__(self, n_in: int, n_out: int, stride: int, batch_norm: bool):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=not batch_norm),
            _norm(n_out, batch_norm),
            nn.ELU(),
            nn.Conv2d(n_out, n_out, 3, padding=1, bias=not batch_norm),
            _norm(n_out, batch_norm),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or n_in != n_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(n_in, n_out, 1, stride=stride, bias=not batch_norm), _norm(n_out, batch_norm)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(self.main(x) + self.shortcut(x))


class ResNetEncoder(_ImageEncoder):
    """He et al.'s ResNet encoder: stride-2 residual blocks, then a convolution over the whole
    remaining map to ``features`` units (batch norm, ELU)."""

    Options = ResNetOptions

    def __init__(self, options: ResNetOptions, input_shape: tuple[int, ...], latent_dim: int):
        super().__init__()
        self.image = image_shape(input_shape, "resnet")
        channels = options.channels or RESNET_CHANNELS
        blocks: list[nn.Module] = []
        n_in = self.image[0]
        for n_out in channels:
            blocks.append(ResBlock(n_in, n_out, 2, options.batch_norm))
            n_in = n_out
        trunk = nn.Sequential(*blocks)
        with torch.no_grad():
            _, h, w = trunk.eval()(torch.zeros(1, *self.image)).shape[1:]
        trunk.train()
        features = options.features or RESNET_FEATURES
        self.body = nn.Sequential(
            trunk,
            nn.Conv2d(n_in, features, (h, w), bias=not options.batch_norm),
            _norm(features, options.batch_norm),
            nn.ELU(),
        )
        self._finish(self.image, latent_dim)


# decoders ------------------------------------------------------------------------------------


class Decoder(nn.Module):
    """z -> the likelihood's parameters, shaped ``(N, *param_shape)``."""

    autoregressive = False
    Options = MLPOptions

    def __init__(self, options: MLPOptions, latent_dim: int, param_shape: tuple[int, ...]):
        super().__init__()
        self.param_shape = param_shape
        self.net = mlp([latent_dim, *options.hidden, math.prod(param_shape)], options.activation, last_activation=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(z.shape[0], *self.param_shape)


class ConvDecoder(nn.Module):
    """InteL's MNIST decoder: dense to ``channels[-1]`` maps of H/2^(n-1) (7x7x128 on MNIST), then
    transposed convolutions 4x4 stride 2 with batch norm and ReLU, and a 3x3 output convolution."""

    autoregressive = False
    Options = ConvOptions

    def __init__(self, options: ConvOptions, latent_dim: int, param_shape: tuple[int, ...]):
        super().__init__()
        self.param_shape = param_shape
        c, h, w = image_shape(param_shape, "conv")
        channels = list(reversed(options.channels or CONV_CHANNELS))
        factor = 2 ** (len(channels) - 1)
        if h % factor or w % factor:
            raise ConfigError(
                f"model.decoder: a conv decoder with {len(channels)} channel entries upsamples by {factor}; "
                f"the image size {h}x{w} is not divisible by it (use fewer channels)"
            )
        self.start = (channels[0], h // factor, w // factor)
        self.dense = nn.Sequential(nn.Linear(latent_dim, math.prod(self.start)))
        self.dense_norm = nn.Sequential(_norm(channels[0], options.batch_norm), nn.ReLU())
        layers: list[nn.Module] = []
        for n_in, n_out in itertools.pairwise(channels):
            layers += [
                nn.ConvTranspose2d(n_in, n_out, 4, stride=2, padding=1),
                _norm(n_out, options.batch_norm),
                nn.ReLU(),
            ]
        layers.append(nn.Conv2d(channels[-1], c, 3, padding=1))
        self.convs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.dense_norm(self.dense(z).view(z.shape[0], *self.start))
        return self.convs(h).reshape(z.shape[0], *self.param_shape)


class MaskedConv2d(nn.Conv2d):
    """A ``k x k`` convolution that sees only the pixels before the centre in raster order (mask
    ``A``) or before and at the centre (mask ``B``). Only the first ``masked_in`` input channels are
    masked (all when None): the z feature maps that a PixelCNN concatenates carry no pixel values."""

    def __init__(
        self, n_in: int, n_out: int, kernel: int, mask_type: str, masked_in: int | None = None, bias: bool = True
    ):
        super().__init__(n_in, n_out, kernel, padding=kernel // 2, bias=bias)
        self.mask: torch.Tensor
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        mask = torch.ones_like(self.weight)
        rows = slice(None) if masked_in is None else slice(0, masked_in)
        centre = kernel // 2
        mask[:, rows, centre, centre + (mask_type == "B") :] = 0
        mask[:, rows, centre + 1 :, :] = 0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class PixelBlock(nn.Module):
    """Residual block: ELU, 1x1 conv to half width, ELU, masked-B conv, ELU, 1x1 conv back."""

    def __init__(self, width: int, kernel: int):
        super().__init__()
        half = max(width // 2, 1)
        self.main = nn.Sequential(
            nn.ELU(),
            nn.Conv2d(width, half, 1),
            nn.ELU(),
            MaskedConv2d(half, half, kernel, "B"),
            nn.ELU(),
            nn.Conv2d(half, width, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.main(x)


class PixelCNNDecoder(nn.Module):
    """An autoregressive decoder p(x|z) = prod_i p(x_i | x_<i, z) over pixels in raster order.

    No batch norm (unlike He et al.'s code): in training mode batch statistics would mix in the
    future pixels of the batch, breaking the autoregressive property the exact likelihood needs.
    """

    autoregressive = True
    Options = PixelCNNOptions

    def __init__(self, options: PixelCNNOptions, latent_dim: int, param_shape: tuple[int, ...]):
        super().__init__()
        self.param_shape = param_shape
        self.image = image_shape(param_shape, "pixelcnn")
        c, h, w = self.image
        if c != 1:
            raise ConfigError(
                f"model.decoder: the pixelcnn decoder models one-channel images; the data has {c} channels"
            )
        kernels = options.kernel_sizes or PIXELCNN_KERNELS
        self.z_channels = options.z_channels
        self.z_proj = nn.Linear(latent_dim, options.z_channels * h * w)
        self.input = MaskedConv2d(c + options.z_channels, options.width, kernels[0], "A", masked_in=c)
        self.blocks = nn.Sequential(*(PixelBlock(options.width, k) for k in kernels[1:]))
        self.output = nn.Sequential(
            nn.ELU(), nn.Conv2d(options.width, options.width, 1), nn.ELU(), nn.Conv2d(options.width, c, 1)
        )

    def z_maps(self, z: torch.Tensor) -> torch.Tensor:
        return self.z_proj(z).view(z.shape[0], self.z_channels, *self.image[1:])

    def _net(self, x: torch.Tensor, zmap: torch.Tensor) -> torch.Tensor:
        return self.output(self.blocks(self.input(torch.cat([x, zmap], dim=1))))

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: the parameters of every pixel given the true pixels before it."""
        out = self._net(x.reshape(x.shape[0], *self.image), self.z_maps(z))
        return out.reshape(z.shape[0], *self.param_shape)

    @torch.no_grad()
    def generate(
        self, z: torch.Tensor, likelihood: Likelihood, greedy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw x pixel by pixel (each with ``likelihood.draw_pixel`` given the pixels drawn so far,
        torch's global RNG; its mode when ``greedy``). Returns ``(x, params)`` where ``params``
        holds, for each pixel, the parameter computed when that pixel was drawn.

        Every layer's output at a pixel depends on its input at that pixel and the pixels before
        it in raster order only (mask A on the image, mask B and 1x1 layers after it), so each
        step evaluates each layer at the current pixel alone, from the earlier pixels' inputs kept
        by :class:`_CausalInput`; the z maps' share of the first layer is one convolution of the
        whole image. A step costs a few small matrix products, not a pass over the image."""
        n = z.shape[0]
        c, h, w = self.image
        first = self.input
        zpart = F.conv2d(self.z_maps(z), first.weight[:, c:], first.bias, padding=first.padding)
        image = _CausalInput(first, c, n, h, w, bias=False)
        masked = [m for m in self.blocks.modules() if isinstance(m, MaskedConv2d)]
        layers = {id(m): _CausalInput(m, m.in_channels, n, h, w) for m in masked}
        params = zpart.new_zeros(n, c, h, w)
        flat = params.view(n, *self.param_shape)
        for i, j in itertools.product(range(h), range(w)):
            state = zpart[:, :, i, j] + image.at(i, j)
            for block in self.blocks:
                state = state + _step(cast(Any, block).main, state, layers, i, j)
            params[:, :, i, j] = _step(self.output, state, layers, i, j)
            image.put(likelihood.draw_pixel(flat, i * w + j, greedy)[:, None], i, j)
        return image.values().reshape(n, *self.param_shape), flat


class _CausalInput:
    """The input of one masked convolution during pixel-by-pixel generation: a zero-padded map
    filled pixel by pixel (:meth:`put`), and the convolution's output at one pixel (:meth:`at`),
    exact once every pixel the mask lets it see is filled."""

    def __init__(self, conv: MaskedConv2d, channels: int, n: int, h: int, w: int, bias: bool = True):
        self.k, self.pad = conv.kernel_size[0], conv.kernel_size[0] // 2
        self.map = conv.weight.new_zeros(n, channels, h + 2 * self.pad, w + 2 * self.pad)
        self.weight = (conv.weight * conv.mask)[:, :channels].reshape(conv.out_channels, -1)
        self.bias = conv.bias if bias else None

    def put(self, values: torch.Tensor, i: int, j: int) -> None:
        self.map[:, :, i + self.pad, j + self.pad] = values

    def at(self, i: int, j: int) -> torch.Tensor:
        patch = self.map[:, :, i : i + self.k, j : j + self.k]
        return F.linear(patch.reshape(patch.shape[0], -1), self.weight, self.bias)

    def values(self) -> torch.Tensor:
        p = self.pad
        return self.map[:, :, p : self.map.shape[2] - p, p : self.map.shape[3] - p]


def _step(layers: nn.Sequential, state: torch.Tensor, inputs: dict[int, _CausalInput], i: int, j: int) -> torch.Tensor:
    """A sequence of masked, 1x1 and element-wise layers applied at pixel (i, j) alone: ``state``
    ``(n, channels)`` is the sequence's input there."""
    for layer in layers:
        if isinstance(layer, MaskedConv2d):
            inputs[id(layer)].put(state, i, j)
            state = inputs[id(layer)].at(i, j)
        elif isinstance(layer, nn.Conv2d):  # 1x1
            state = F.linear(state, layer.weight.flatten(1), layer.bias)
        else:
            state = layer(state)
    return state


EncoderNet = Encoder | ConvEncoder | ResNetEncoder
DecoderNet = Decoder | ConvDecoder | PixelCNNDecoder
