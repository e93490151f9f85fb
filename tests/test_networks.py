"""Networks (mlp, conv, resnet, pixelcnn), the likelihoods and the model's use of an autoregressive
decoder: shapes, gradients, the autoregressive property, sampling against the likelihood."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from vaecore import ConfigError
from vaecore.config import DecoderConfig, EncoderConfig, LikelihoodConfig
from vaecore.data import Dataset, Split
from vaecore.networks import MaskedConv2d, image_shape
from vaecore.testing import load, make_model, run_training, tiny_config

SMALL = {
    "mlp": {"kind": "mlp", "hidden": [16]},
    "conv": {"kind": "conv", "channels": [4, 8, 8]},
    "resnet": {"kind": "resnet", "channels": [4, 4], "features": 16},
    "pixelcnn": {"kind": "pixelcnn", "kernel_sizes": [5, 3, 3], "width": 8, "z_channels": 2},
}


def net(kind: str, **extra) -> dict:
    return {**SMALL[kind], **extra}


def build_encoder(table: dict, input_shape: tuple[int, ...], latent_dim: int):
    options = dict(table)
    return EncoderConfig.of(options.pop("kind"), **options).build(input_shape=input_shape, latent_dim=latent_dim)


def build_decoder(table: dict | DecoderConfig, latent_dim: int, param_shape: tuple[int, ...]):
    if isinstance(table, dict):
        options = dict(table)
        table = DecoderConfig.of(options.pop("kind"), **options)
    return table.build(latent_dim=latent_dim, param_shape=param_shape)


def build_likelihood(kind: str = "bernoulli", shape: tuple[int, ...] = (1,), **options):
    return LikelihoodConfig.of(kind, **options).build(input_shape=shape)


def _decode(dec, z, x):
    return dec(z, x) if dec.autoregressive else dec(z)


# shapes and gradients ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlp", "conv", "resnet"])
@pytest.mark.parametrize("shape", [(784,), (28, 28), (1, 28, 28)])
def test_encoder_shapes_and_gradients(kind, shape):
    torch.manual_seed(0)
    enc = build_encoder(net(kind), shape, latent_dim=3)
    x = torch.rand(5, *shape)
    loc, log_var, h = enc(x)
    assert loc.shape == log_var.shape == (5, 3)
    assert h.shape == (5, enc.feature_dim)
    (loc.pow(2).sum() + log_var.exp().sum()).backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{kind}: no gradient reaches {name}"


def test_encoder_feature_dims_follow_the_architecture():
    assert build_encoder(net("conv"), (784,), 3).feature_dim == 8 * 3 * 3  # 28 -> 14 -> 7 -> 3
    assert build_encoder(net("conv", features=20), (784,), 3).feature_dim == 20
    assert build_encoder(net("resnet"), (784,), 3).feature_dim == 16
    # the InteL defaults: 32-64-128 filters, 128 x 3 x 3 features
    assert build_encoder({"kind": "conv"}, (28, 28), 3).feature_dim == 128 * 9


@pytest.mark.parametrize("kind", ["mlp", "conv", "pixelcnn"])
@pytest.mark.parametrize("shape", [(784,), (28, 28), (1, 28, 28)])
def test_decoder_shapes_and_gradients(kind, shape):
    torch.manual_seed(0)
    dec = build_decoder(net(kind), 3, shape)
    z = torch.randn(4, 3, requires_grad=True)
    x = (torch.rand(4, *shape) < 0.3).float()
    params = _decode(dec, z, x)
    assert params.shape == (4, *shape)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(params, x)
    loss.backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    for name, p in dec.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{kind}: no gradient reaches {name}"


def test_conv_decoder_matches_intel_layout():
    dec = build_decoder({"kind": "conv"}, 5, (784,))
    assert dec.start == (128, 7, 7)
    ups = [m for m in dec.convs if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels, m.stride) for m in ups] == [(128, 64, (2, 2)), (64, 32, (2, 2))]


def test_image_shape_inference_and_errors():
    assert image_shape((784,), "conv") == (1, 28, 28)
    assert image_shape((28, 28), "conv") == (1, 28, 28)
    assert image_shape((3, 8, 8), "conv") == (3, 8, 8)
    with pytest.raises(ConfigError, match=r"'pixelcnn' needs image inputs .* the data has shape \(2,\)"):
        build_decoder(net("pixelcnn"), 3, (2,))
    with pytest.raises(ConfigError, match="one-channel images; the data has 3 channels"):
        build_decoder(net("pixelcnn"), 3, (3, 8, 8))
    with pytest.raises(ConfigError, match="not divisible"):
        build_decoder(net("conv", channels=[4, 4, 4, 4]), 3, (784,))  # 28 / 8


# config --------------------------------------------------------------------------------------


def test_network_config_errors_carry_their_path():
    with pytest.raises(ConfigError) as err:
        load(tiny_config(model={"encoder": {"kind": "pixelcnn"}, "decoder": {"kind": "resnet"}}))
    text = str(err.value)
    assert "model.encoder.kind: unknown encoder 'pixelcnn'; available: conv, mlp, resnet" in text
    assert "model.decoder.kind: unknown decoder 'resnet'; available: conv, mlp, pixelcnn" in text
    with pytest.raises(ConfigError, match=r"model.decoder.kernel_sizes: must be odd, got 4"):
        load(tiny_config(model={"decoder": {"kind": "pixelcnn", "kernel_sizes": [7, 4]}}))
    with pytest.raises(ConfigError, match=r"model.decoder.width: must be > 0, got 0"):
        load(tiny_config(model={"decoder": {"kind": "pixelcnn", "width": 0}}))
    with pytest.raises(ConfigError, match=r"model.encoder.kind: unknown encoder 'transformer'"):
        load(tiny_config(model={"encoder": {"kind": "transformer"}}))
    # options of another kind are not silently ignored
    with pytest.raises(ConfigError, match=r"model.encoder.width: unknown key \(encoder 'conv' takes batch_norm, "):
        load(tiny_config(model={"encoder": {"kind": "conv", "width": 8}}))


def test_mlp_config_is_unchanged():
    cfg = load(tiny_config()).model
    assert cfg.encoder.kind == "mlp" and cfg.encoder.options.hidden == [32]
    dec = build_decoder(cfg.decoder, 4, (16,))
    assert not dec.autoregressive and [type(m).__name__ for m in dec.net] == ["Linear", "Tanh", "Linear"]


# the PixelCNN --------------------------------------------------------------------------------


def test_masks_of_the_masked_convolutions():
    a = MaskedConv2d(2, 1, 3, "A", masked_in=1).mask
    b = MaskedConv2d(1, 1, 3, "B").mask
    expect_a = torch.tensor([[1.0, 1, 1], [1, 0, 0], [0, 0, 0]])
    expect_b = torch.tensor([[1.0, 1, 1], [1, 1, 0], [0, 0, 0]])
    torch.testing.assert_close(a[0, 0], expect_a)
    torch.testing.assert_close(a[0, 1], torch.ones(3, 3))  # the z channel is not masked
    torch.testing.assert_close(b[0, 0], expect_b)


@pytest.mark.parametrize("training", [True, False])
def test_pixelcnn_is_autoregressive_through_gradients(training):
    """d out_i / d x_j is zero for every j >= i (raster order) and nonzero for the left and upper
    neighbours: the full Jacobian of an 8x8 image is strictly lower triangular."""
    torch.manual_seed(0)
    dec = build_decoder(net("pixelcnn"), 3, (64,)).train(training)
    z = torch.randn(1, 3)
    x = (torch.rand(1, 64) < 0.5).float()
    jac = torch.autograd.functional.jacobian(lambda v: dec(z, v)[0], x)[:, 0, :]  # (out pixel, in pixel)
    assert jac.shape == (64, 64)
    assert torch.equal(torch.triu(jac), torch.zeros_like(jac)), "an output depends on its own or a later pixel"
    for i in range(1, 64):
        assert jac[i, i - 1] != 0 or i % 8 == 0, f"pixel {i} ignores its left neighbour"
        if i >= 8:
            assert jac[i, i - 8] != 0, f"pixel {i} ignores the pixel above"
    # every output depends on z
    jz = torch.autograd.functional.jacobian(lambda u: dec(u, x)[0], z)[:, 0, :]
    assert (jz.abs().sum(1) > 0).all()


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian_learned"])
def test_pixelcnn_sampling_reproduces_its_likelihood(likelihood):
    torch.manual_seed(1)
    shape = (36,)
    dec = build_decoder(net("pixelcnn"), 3, shape).eval()
    lik = (
        build_likelihood("bernoulli", shape)
        if likelihood == "bernoulli"
        else build_likelihood("gaussian", shape, scale=0.3, learn_scale=True)
    )
    if likelihood != "bernoulli":
        with torch.no_grad():
            lik.log_scale.copy_(torch.linspace(-2, 0, 36))
    z = torch.randn(6, 3)
    x, params = dec.generate(z, lik)
    scored = lik.log_prob(x, dec(z, x))
    during = lik.log_prob(x, params)
    torch.testing.assert_close(during, scored, rtol=1e-5, atol=1e-4)
    if likelihood == "bernoulli":
        assert set(x.unique().tolist()) <= {0.0, 1.0}
    # greedy decoding takes each pixel's mode given the previous ones
    xg, pg = dec.generate(z, lik, greedy=True)
    torch.testing.assert_close(xg, lik.mode(pg))
    torch.testing.assert_close(lik.log_prob(xg, pg), lik.log_prob(xg, dec(z, xg)), rtol=1e-5, atol=1e-4)


def test_pixelcnn_likelihood_is_normalised_and_sampling_follows_it():
    """On a 2x2 image the 16 teacher-forced probabilities sum to 1, and pixel-by-pixel samples
    have those frequencies (20000 draws, each within 4.5 standard errors)."""
    torch.manual_seed(2)
    dec = build_decoder(net("pixelcnn", kernel_sizes=[3, 3], width=8), 2, (4,)).eval()
    lik = build_likelihood("bernoulli", (4,))
    z = torch.randn(1, 2)
    configs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)))
    with torch.no_grad():
        probs = lik.log_prob(configs, dec(z.expand(16, 2), configs)).exp()
    assert abs(float(probs.sum()) - 1.0) < 1e-5
    n = 20000
    x, _ = dec.generate(z.expand(n, 2), lik)
    codes = (x * torch.tensor([8.0, 4, 2, 1])).sum(1).long()
    freq = torch.bincount(codes, minlength=16).double() / n
    se = (probs.double() * (1 - probs.double()) / n).sqrt()
    assert ((freq - probs.double()).abs() <= 4.5 * se + 1e-4).all(), (freq, probs)


# the model with an autoregressive decoder ----------------------------------------------------


def _image_data(n: int = 64, side: int = 6, seed: int = 0) -> Dataset:
    gen = torch.Generator().manual_seed(seed)
    protos = (torch.rand(3, side * side, generator=gen) < 0.4).float()

    def split(m):
        y = torch.randint(0, 3, (m,), generator=gen)
        flips = (torch.rand(m, side * side, generator=gen) < 0.05).float()
        return Split((protos[y] - flips).abs(), y)

    return Dataset("images", split(n), split(n // 2), split(n // 2), binary=True)


def _pixel_raw(**train):
    return tiny_config(
        model={"latent_dim": 3, "encoder": SMALL["conv"] | {"channels": [4, 4]}, "decoder": SMALL["pixelcnn"]},
        train={"batch_size": 16, "eval_batch_size": 100, **train},
        eval={"nll_samples": 20, "nll_chunk": 5, "batch_size": 100, "probes": False},
    )


def test_model_forward_uses_teacher_forcing_and_exact_log_px():
    data = _image_data()
    model = make_model(_pixel_raw(), data).eval()
    assert model.autoregressive
    x = data.train.x[:5]
    with torch.no_grad():
        out = model(x, model.context(), samples=3)
        assert out.params.shape == (3, 5, 36)
        manual = model.likelihood.log_prob(x, model.decoder(out.z.reshape(15, 3), x.repeat(3, 1)).view(3, 5, 36))
        torch.testing.assert_close(out.log_px, manual)
        torch.testing.assert_close(model.decode(out.z, x), out.params)


def test_model_decode_without_targets_scores_its_own_sample():
    data = _image_data()
    model = make_model(_pixel_raw(), data).eval()
    z = torch.randn(2, 4, 3)
    torch.manual_seed(5)
    x, params = model.generate(z)
    assert x.shape == params.shape == (2, 4, 36)
    torch.manual_seed(5)
    decoded = model.decode(z)  # draws the same sample, then teacher-forces it
    torch.testing.assert_close(decoded, params, rtol=1e-5, atol=1e-5)
    # decode(z) is differentiable in z even though the sample was drawn without gradients
    z.requires_grad_(True)
    torch.manual_seed(5)
    model.decode(z).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    samples = model.sample_prior(3, mean=False)
    assert samples.shape == (3, 36) and set(samples.unique().tolist()) <= {0.0, 1.0}
    means = model.sample_prior(3)
    assert ((means > 0) & (means < 1)).all()


def test_non_autoregressive_decode_is_unchanged():
    data = _image_data()
    model = make_model(
        tiny_config(
            model={"encoder": SMALL["conv"] | {"channels": [4, 4]}, "decoder": SMALL["conv"] | {"channels": [4, 4]}}
        ),
        data,
    )
    z = torch.randn(2, 3, 4)
    torch.testing.assert_close(model.decode(z), model.decoder(z.reshape(6, 4)).view(2, 3, 36))
    torch.testing.assert_close(model.decode(z, torch.ones(3, 36)), model.decode(z))
    torch.manual_seed(0)
    x, params = model.generate(z, greedy=True)
    torch.testing.assert_close(x, (params > 0).float())


def test_pixelcnn_vae_trains_and_evaluates(tmp_path):
    """Two epochs through the trainer improve the ELBO, and the importance-sampled NLL (exact
    log p(x|z) by teacher forcing) is no larger than the negative ELBO."""
    data = _image_data(n=128)
    _, results = run_training(_pixel_raw(epochs=3, lr=3e-3), tmp_path / "run", data)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert results["nll"] <= -results["elbo"] + 1e-3
    assert math.isfinite(results["nll"]) and results["nll"] < 36 * math.log(2)  # beats coin flips


# likelihoods ---------------------------------------------------------------------------------


def test_likelihood_values_by_hand():
    x = torch.tensor([[0.5, -1.0]])
    mu = torch.tensor([[[0.0, 0.0]]])
    g = build_likelihood("gaussian", (2,), scale=2.0)
    expect = sum(-0.5 * (v / 2) ** 2 - math.log(2) - 0.5 * math.log(2 * math.pi) for v in (0.5, -1.0))
    assert float(g.log_prob(x, mu)) == pytest.approx(expect)
    lap = build_likelihood("laplace", (2,), scale=0.5)
    expect = sum(-abs(v) / 0.5 - math.log(2 * 0.5) for v in (0.5, -1.0))
    assert float(lap.log_prob(x, mu)) == pytest.approx(expect)
    b = build_likelihood("bernoulli", (2,))
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    assert float(b.log_prob(torch.tensor([[1.0, 0.0]]), logits)) == pytest.approx(math.log(0.5) + math.log(0.25))
    torch.testing.assert_close(b.mode(logits), torch.tensor([[[0.0, 1.0]]]))
    assert b.log_prob_pixels(torch.tensor([[1.0, 0.0]]), logits).shape == (1, 1, 2)


def test_learned_and_fixed_scales():
    fixed = build_likelihood("gaussian", (3,), scale=0.5)
    learned = build_likelihood("laplace", (3,), scale=0.5, learn_scale=True)
    assert not list(fixed.parameters()) and "log_scale" in dict(fixed.named_buffers())
    assert [n for n, _ in learned.named_parameters()] == ["log_scale"]
    x = torch.zeros(4, 3)
    learned.log_prob(x, torch.ones(1, 4, 3)).sum().backward()
    # d/ds of -|x-mu|/s - log(2s) at s = 0.5, |x-mu| = 1: per pixel (1/s^2 - 1/s) * s = 1/s - 1 = 1 (x4 rows)
    torch.testing.assert_close(learned.log_scale.grad, torch.full((3,), 4.0))
    torch.manual_seed(0)
    draws = learned.sample(torch.zeros(20000, 3))
    assert float(draws.abs().mean()) == pytest.approx(0.5, rel=0.03)


@pytest.mark.parametrize("kernels", [[3, 3], [7, 5, 3]])
def test_pixel_by_pixel_sampling_is_exact_on_a_large_image(kernels):
    """Sampling evaluates each layer at one pixel at a time from the earlier pixels' activations:
    the parameters computed while sampling a 14x14 image equal the full teacher-forced pass
    (convolutions over the whole image) on the drawn image."""
    torch.manual_seed(3)
    dec = build_decoder(net("pixelcnn", kernel_sizes=kernels, width=8), 3, (196,))
    lik = build_likelihood("bernoulli", (196,))
    z = torch.randn(3, 3)
    x, params = dec.generate(z, lik)
    torch.testing.assert_close(params, dec(z, x), rtol=1e-5, atol=1e-5)
