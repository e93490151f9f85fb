"""Unit tests of the du plugin's maths: variance floor, dropout, batch norm, weight rescaling."""

from __future__ import annotations

import math

import pytest
import torch
from du_helpers import ctx, info
from vaecore_du import ALPHA, DUOptions, DUPlugin

from vaecore.distributions import DiagonalGaussian


def make(latent_dim: int = 4, **options) -> DUPlugin:
    plugin = DUPlugin(DUOptions(**options))
    plugin.setup(info(latent_dim))
    return plugin


def gaussian(b: int = 64, d: int = 4, scale: float = 1.0) -> DiagonalGaussian:
    return DiagonalGaussian.from_log_var(torch.randn(b, d) * 3 + 1, torch.randn(b, d) * scale - 1)


def test_alpha_is_one_over_two_pi_e():
    assert ALPHA == pytest.approx(0.05854983152431917)
    # a Gaussian of variance alpha has zero differential entropy
    assert 0.5 * math.log(2 * math.pi * math.e * ALPHA) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("training,warmup", [(True, 1.0), (True, 0.3), (False, 1.0)])
def test_variance_never_below_floor(training, warmup):
    plugin = make(drop=0.5)
    plugin.train(training)
    # variances from 1e-30 to 1e3, many of them dropped to 0 before the floor
    post = DiagonalGaussian.from_log_var(torch.randn(500, 4), torch.linspace(-69, 7, 2000).view(500, 4))
    out = plugin.post_posterior(post, ctx(training, warmup))
    assert out.var.min() >= ALPHA
    assert torch.isfinite(out.log_var).all()
    assert (out.log_var >= math.log(ALPHA) - 1e-6).all()


def test_dropout_values_are_floor_or_inverted_scaled():
    drop = 0.25
    plugin = make(drop=drop).train()
    post = gaussian(200, 4)
    out = plugin.post_posterior(post, ctx(True, 1.0))
    dropped = torch.isclose(out.var, torch.full_like(out.var, ALPHA), rtol=0, atol=1e-7)
    kept = torch.isclose(out.var, post.var / (1 - drop) + ALPHA, rtol=1e-6, atol=0)
    assert (dropped | kept).all()
    assert 0.15 < dropped.float().mean() < 0.35  # 800 elements, drop 0.25
    # a fresh mask per element and per call
    again = plugin.post_posterior(post, ctx(True, 1.0))
    assert not torch.equal(again.var, out.var)


def test_dropout_preserves_the_expected_variance():
    drop = 0.3
    plugin = make(drop=drop).train()
    v = torch.rand(2000, 4) + 0.5
    post = DiagonalGaussian(torch.randn(2000, 4), v)
    draws = torch.stack([plugin.post_posterior(post, ctx(True, 1.0)).var - ALPHA for _ in range(50)])
    # E[dropout(v)] = v: the mean over 100k masks is within 4 standard errors of the mean variance
    per_element = draws.mean(0)
    se = (v * math.sqrt(drop / (1 - drop))).pow(2).mean().sqrt() / math.sqrt(draws.numel() / 4)
    assert abs(per_element.mean() - v.mean()) < 4 * se
    # and elementwise over the 50 masks (each element's mean is unbiased)
    assert abs((per_element - v).mean()) < 0.01


def test_dropout_off_in_eval_mode():
    plugin = make(drop=0.5).eval()
    post = gaussian()
    out = plugin.post_posterior(post, ctx(False, 1.0))
    torch.testing.assert_close(out.var, post.var + ALPHA, rtol=0, atol=0)
    # ctx.training False is enough even if the module was left in train mode
    plugin.train()
    out = plugin.post_posterior(post, ctx(False, 1.0))
    torch.testing.assert_close(out.var, post.var + ALPHA, rtol=0, atol=0)


def test_dropout_waits_for_the_end_of_warmup_unless_drop_start_is_zero():
    post = gaussian()
    waiting = make(drop=0.5).train()
    torch.testing.assert_close(waiting.post_posterior(post, ctx(True, 0.99)).var, post.var + ALPHA)
    assert not torch.allclose(waiting.post_posterior(post, ctx(True, 1.0)).var, post.var + ALPHA)
    always = make(drop=0.5, drop_start=0.0).train()
    assert not torch.allclose(always.post_posterior(post, ctx(True, 0.0)).var, post.var + ALPHA)
    halfway = make(drop=0.5, drop_start=0.5).train()
    torch.testing.assert_close(halfway.post_posterior(post, ctx(True, 0.49)).var, post.var + ALPHA)
    assert not torch.allclose(halfway.post_posterior(post, ctx(True, 0.5)).var, post.var + ALPHA)


def test_no_floor_no_dropout_keeps_the_variance_and_its_log():
    plugin = make(drop=0.0, floor=0.0).train()
    post = gaussian()
    out = plugin.post_posterior(post, ctx(True, 1.0))
    assert out.var is post.var
    assert out.log_var is post.log_var


def test_batch_norm_in_training_normalises_each_dimension_by_batch_statistics():
    gamma = 0.7
    plugin = make(gamma=gamma, drop=0.0).train()
    post = gaussian(128, 4)
    out = plugin.post_posterior(post, ctx(True, 1.0))
    mu = post.loc
    expected = gamma * (mu - mu.mean(0)) / torch.sqrt(mu.var(0, unbiased=False) + 1e-5)
    torch.testing.assert_close(out.loc, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loc.mean(0), torch.zeros(4), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.loc.std(0, unbiased=False), torch.full((4,), gamma), rtol=1e-4, atol=0)
    # running statistics: momentum 0.1 from (0, 1), unbiased batch variance
    bn = plugin.bn
    torch.testing.assert_close(bn.running_mean, 0.1 * mu.mean(0))
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * mu.var(0, unbiased=True))
    assert int(bn.num_batches_tracked) == 1


def test_batch_norm_uses_running_statistics_at_eval():
    plugin = make(gamma=0.5, drop=0.0).train()
    for _ in range(20):
        plugin.post_posterior(gaussian(64, 4), ctx(True, 1.0))
    with torch.no_grad():
        plugin.bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
    mean, var = plugin.bn.running_mean.clone(), plugin.bn.running_var.clone()
    assert not torch.allclose(mean, torch.zeros(4)) and not torch.allclose(var, torch.ones(4))
    plugin.eval()
    post = gaussian(3, 4)
    out = plugin.post_posterior(post, ctx(False, 1.0))
    expected = plugin.bn.weight * (post.loc - mean) / torch.sqrt(var + 1e-5) + plugin.bn.bias
    torch.testing.assert_close(out.loc, expected)
    # evaluation does not move the running statistics, and one example is fine
    torch.testing.assert_close(plugin.bn.running_mean, mean, rtol=0, atol=0)
    torch.testing.assert_close(plugin.bn.running_var, var, rtol=0, atol=0)
    single = plugin.post_posterior(gaussian(1, 4), ctx(False, 1.0))
    assert single.loc.shape == (1, 4)


def test_training_batch_of_one_uses_running_statistics_without_updating_them():
    plugin = make(drop=0.0).train()
    post = gaussian(1, 4)
    out = plugin.post_posterior(post, ctx(True, 1.0))
    torch.testing.assert_close(out.loc, 0.5 * post.loc / math.sqrt(1 + 1e-5))
    assert int(plugin.bn.num_batches_tracked) == 0


def test_bn_vae_kl_lower_bound_holds_on_the_batch():
    """Zhu et al.: with BN on the means, E_batch[KL] >= 0.5 * sum_d E_batch[mu_d^2]
    = 0.5 * sum_d (gamma^2 * s_d / (s_d + eps) + beta_d^2), whatever the encoder outputs (the
    BN-VAE preset: the scale fixed at gamma, no floor, no dropout)."""
    plugin = make(gamma=0.6, drop=0.0, floor=0.0, scale="fixed").train()
    with torch.no_grad():
        plugin.bn.bias.copy_(torch.tensor([0.2, 0.0, -0.1, 0.05]))
    post = DiagonalGaussian(torch.randn(256, 4) * 1e-2, torch.ones(256, 4))  # nearly collapsed means
    out = plugin.post_posterior(post, ctx(True, 1.0))
    s = post.loc.var(0, unbiased=False)
    assert torch.equal(plugin.bn.weight, torch.full((4,), 0.6))
    bound = 0.5 * (0.6**2 * s / (s + 1e-5) + plugin.bn.bias.pow(2)).sum()
    kl = out.kl_per_dim().sum(-1).mean()
    assert kl >= bound - 1e-6
    torch.testing.assert_close(kl, bound)  # unit variances: the bound is tight
    assert bound > 0.6  # 0.5 * (4 * 0.36 * s/(s+eps) + 0.0525) with s ~ 1e-4: ~0.68


@pytest.mark.parametrize("mode", ["forward", "step"])
def test_rescale_sets_mean_square_weight_to_gamma_squared(mode):
    gamma = 0.5
    plugin = make(gamma=gamma, rescale=mode)
    with torch.no_grad():
        plugin.bn.weight.copy_(torch.tensor([0.1, 2.0, -0.3, 1.0]))
    direction = plugin.bn.weight.detach() / plugin.bn.weight.detach().norm()
    if mode == "forward":
        plugin.post_posterior(gaussian(), ctx(True, 0.0))
        plugin.on_step_end(ctx())  # no effect in forward mode
    else:
        plugin.on_step_end(ctx())
    w = plugin.bn.weight.detach()
    assert w.pow(2).mean().item() == pytest.approx(gamma**2, rel=1e-6)
    torch.testing.assert_close(w / w.norm(), direction)  # only the scale changes


def test_fixed_scale_is_never_rescaled_or_trained():
    plugin = make(gamma=0.5, drop=0.0, floor=0.0, scale="fixed").train()
    assert [name for name, _ in plugin.named_parameters()] == ["bn.bias"]
    loc = torch.randn(32, 4, requires_grad=True)
    out = plugin.post_posterior(DiagonalGaussian.from_log_var(loc, torch.zeros(32, 4)), ctx(True, 1.0))
    plugin.on_step_end(ctx())
    plugin.rescale_weight()
    assert torch.equal(plugin.bn.weight, torch.full((4,), 0.5))
    out.kl_per_dim().sum().backward()
    assert plugin.bn.weight.grad is None and plugin.bn.bias.grad.abs().sum() > 0 and loc.grad is not None


def test_step_mode_does_not_rescale_in_forward():
    plugin = make(gamma=0.5, rescale="step")
    with torch.no_grad():
        plugin.bn.weight.copy_(torch.tensor([0.1, 2.0, -0.3, 1.0]))
    plugin.post_posterior(gaussian(), ctx(True, 1.0))
    torch.testing.assert_close(plugin.bn.weight.detach(), torch.tensor([0.1, 2.0, -0.3, 1.0]))


def test_bn_initialisation():
    plugin = make(gamma=0.3, latent_dim=6)
    torch.testing.assert_close(plugin.bn.weight.detach(), torch.full((6,), 0.3))
    torch.testing.assert_close(plugin.bn.bias.detach(), torch.zeros(6))
    assert plugin.bn.affine


def test_gradients_flow_to_the_encoder_outputs_and_bn_parameters():
    plugin = make(drop=0.2).train()
    loc = torch.randn(32, 4, requires_grad=True)
    log_var = torch.randn(32, 4, requires_grad=True)
    out = plugin.post_posterior(DiagonalGaussian.from_log_var(loc, log_var), ctx(True, 1.0))
    out.kl_per_dim().sum().backward()
    assert loc.grad.abs().sum() > 0 and log_var.grad.abs().sum() > 0
    assert plugin.bn.weight.grad is not None and plugin.bn.bias.grad is not None
    # a dropped element's variance gets no gradient through v
    dropped = out.var.detach() == ALPHA
    assert dropped.any()
    assert (log_var.grad[dropped] == 0).all()


def test_refuses_a_non_gaussian_posterior():
    class Flowy:
        mean = torch.zeros(2, 4)

    plugin = make()
    with pytest.raises(TypeError, match="du before any plugin that replaces the posterior"):
        plugin.post_posterior(Flowy(), ctx())
