"""The model's forward pass, the likelihoods and the built-in ELBO objective."""

from __future__ import annotations

import math

import pytest
import torch

from vaecore.config import LikelihoodConfig
from vaecore.distributions import DiagonalGaussian, StandardNormal
from vaecore.hooktypes import StepContext
from vaecore.objectives import ELBO, free_bits_kl, warmup_factor
from vaecore.testing import make_model, tiny_config


def test_forward_shapes_and_log_weights(tiny_data):
    model = make_model(tiny_config(), tiny_data)
    x = tiny_data.train.x[:6]
    out = model(x, model.context(training=False), samples=5)
    assert out.y.shape == out.z.shape == (5, 6, 4)
    assert out.params.shape == (5, 6, 16)
    assert out.log_px.shape == out.log_py.shape == out.log_qy.shape == (5, 6)
    torch.testing.assert_close(out.log_w, out.log_px + out.log_py - out.log_qy)
    bern = torch.distributions.Bernoulli(logits=out.params)
    torch.testing.assert_close(out.log_px, bern.log_prob(x).sum(-1))
    normal = torch.distributions.Normal(out.posterior.loc, out.posterior.std)
    torch.testing.assert_close(out.log_qy, normal.log_prob(out.y).sum(-1))


def test_analytic_kl_matches_monte_carlo():
    torch.manual_seed(0)
    q = DiagonalGaussian.from_log_var(torch.randn(3, 2), torch.randn(3, 2))
    y, log_q = q.rsample(200_000)
    mc = (log_q - StandardNormal(2).log_prob(y)).mean(0)
    torch.testing.assert_close(q.kl_per_dim().sum(-1), mc, atol=0.02, rtol=0.01)
    exact = torch.distributions.kl_divergence(
        torch.distributions.Normal(q.loc, q.std), torch.distributions.Normal(0.0, 1.0)
    )
    torch.testing.assert_close(q.kl_per_dim(), exact)
    torch.testing.assert_close(q.entropy(), torch.distributions.Normal(q.loc, q.std).entropy().sum(-1))


@pytest.mark.parametrize("kind", ["gaussian", "laplace"])
def test_location_scale_likelihoods(kind):
    lik = LikelihoodConfig.of(kind, scale=0.3, learn_scale=True).build(input_shape=(5,))
    x, params = torch.rand(2, 5), torch.randn(3, 2, 5)
    dist = torch.distributions.Normal if kind == "gaussian" else torch.distributions.Laplace
    torch.testing.assert_close(lik.log_prob(x, params), dist(params, 0.3).log_prob(x).sum(-1))
    assert [n for n, _ in lik.named_parameters()] == ["log_scale"]
    fixed = LikelihoodConfig.of(kind, scale=0.3).build(input_shape=(5,))
    assert list(fixed.parameters()) == [] and "log_scale" in fixed.state_dict()


def test_bernoulli_refuses_data_outside_unit_interval():
    lik = LikelihoodConfig.of("bernoulli").build(input_shape=(3,))
    assert (
        lik.check_data(False, -0.5, 2.0) == "the bernoulli likelihood needs inputs in [0, 1], the data spans [-0.5, 2]"
    )
    assert lik.check_data(False, 0.0, 1.0) is None


def test_warmup_is_linear_per_iteration():
    assert warmup_factor(0, 100, 0.1, 2) == pytest.approx(0.1)
    assert warmup_factor(100, 100, 0.1, 2) == pytest.approx(0.55)
    assert warmup_factor(200, 100, 0.1, 2) == 1.0 and warmup_factor(10_000, 100, 0.1, 2) == 1.0
    assert warmup_factor(0, 100, 0.0, 0) == 1.0


def test_free_bits_clamp_each_dimension_batch_mean():
    kl = torch.tensor([[0.1, 2.0, 0.0], [0.3, 4.0, 0.0]])
    assert free_bits_kl(kl, 0.5).item() == pytest.approx(0.5 + 3.0 + 0.5)
    assert free_bits_kl(kl, 0.0).item() == pytest.approx(0.2 + 3.0)


def test_elbo_value_and_kl_weight(tiny_data):
    model = make_model(tiny_config(), tiny_data)
    out = model(tiny_data.train.x[:8], model.context(training=False))
    ctx = StepContext(model=model, kl_weight=0.25)
    bound = ELBO().bound(out, ctx)
    rec, kl = out.log_px.mean(), out.kl_per_dim.sum(-1).mean()
    torch.testing.assert_close(bound.loss, -rec + 0.25 * kl)
    torch.testing.assert_close(bound.terms["elbo"], rec - kl)
    fb = ELBO(free_bits=1.0).bound(out, ctx)
    torch.testing.assert_close(fb.loss, -rec + 0.25 * out.kl_per_dim.mean(0).clamp(min=1.0).sum())
    unweighted = ELBO().bound(out, StepContext(model=model, kl_weight=1.0))
    torch.testing.assert_close(unweighted.loss, kl - rec)
    assert not unweighted.terms["elbo"].requires_grad  # logged, not trained on


def test_one_sample_without_broadcasting_is_exact():
    """``rsample(1)``, computed without broadcasting over the sample dimension, gives bit for bit
    the samples and gradients of ``loc + eps * std`` broadcast over a sample dimension of 1, and
    the density of a Normal at its samples."""
    loc, log_var = torch.randn(3, 2, requires_grad=True), torch.randn(3, 2, requires_grad=True)
    q = DiagonalGaussian.from_log_var(loc, log_var)
    torch.manual_seed(2)
    one, log_q = q.rsample(1)
    torch.manual_seed(2)
    broadcast = loc + torch.randn(1, 3, 2) * q.std
    assert one.shape == (1, 3, 2) and torch.equal(one, broadcast)
    torch.testing.assert_close(log_q, torch.distributions.Normal(loc, (0.5 * log_var).exp()).log_prob(one).sum(-1))
    weights = torch.randn(1, 3, 2)
    for a, b in zip(
        torch.autograd.grad((one * weights).sum(), (loc, log_var), retain_graph=True),  # the std is shared
        torch.autograd.grad((broadcast * weights).sum(), (loc, log_var)),
    ):
        assert torch.equal(a, b)


def test_prior_samples_and_representation(tiny_data):
    model = make_model(tiny_config(), tiny_data)
    samples = model.sample_prior(7)
    assert samples.shape == (7, 16) and float(samples.min()) >= 0 and float(samples.max()) <= 1
    assert model.represent(tiny_data.test.x[:3]).shape == (3, 4)
    assert float(StandardNormal(2).log_prob(torch.zeros(2))) == pytest.approx(-math.log(2 * math.pi))


def test_encode_and_forward_without_a_context(tiny_data):
    """Outside the trainer ``encode(x)``, ``latent_map(y)`` and ``model(x)`` build the context
    themselves, in the model's own mode: the posterior is the encoder network's output."""
    model = make_model(tiny_config(), tiny_data).eval()
    x = tiny_data.train.x[:5]
    posterior, features = model.encode(x)
    loc, log_var, direct_features = model.encoder(x)
    torch.testing.assert_close(posterior.loc, loc)
    torch.testing.assert_close(posterior.std, torch.exp(0.5 * log_var))
    torch.testing.assert_close(features, direct_features)
    torch.testing.assert_close(model.latent_map(posterior.loc), posterior.loc)  # no latent_map hook
    torch.manual_seed(1)
    out = model(x)
    torch.manual_seed(1)
    expected = model(x, model.context(training=False))
    torch.testing.assert_close(out.log_w, expected.log_w)
    assert model.context().training is False and model.train().context().training is True


def test_deferred_log_density_is_the_one_rsample_returns():
    q = DiagonalGaussian.from_log_var(torch.randn(3, 2), torch.randn(3, 2))
    torch.manual_seed(4)
    y, log_q = q.rsample(5)
    torch.manual_seed(4)
    y_deferred, log_q_deferred = q.rsample_deferred(5)
    assert torch.equal(y, y_deferred) and torch.equal(log_q, log_q_deferred())


def test_forward_defers_the_log_densities_the_elbo_does_not_read(tiny_data, monkeypatch):
    """The ELBO with the analytic KL trains without computing log p(y) or log q(y|x); read later,
    each is computed in the grad mode of the read: a first read under ``no_grad`` does not leave
    a later read without its gradient."""
    model = make_model(tiny_config(), tiny_data)
    x = tiny_data.train.x[:6]
    reads: list[str] = []
    prior_log_prob, posterior_log_prob = model.prior.log_prob, DiagonalGaussian.rsample_deferred

    def counted_deferred(self, k):
        y, log_q = posterior_log_prob(self, k)
        return y, lambda: reads.append("log_qy") or log_q()

    monkeypatch.setattr(model.prior, "log_prob", lambda y: reads.append("log_py") or prior_log_prob(y))
    monkeypatch.setattr(DiagonalGaussian, "rsample_deferred", counted_deferred)
    out = model(x, model.context(training=True))
    ELBO().bound(out, StepContext(model=model, kl_weight=1.0)).loss.backward()
    assert reads == []
    out = model(x, model.context(training=True))
    with torch.no_grad():
        first = out.log_qy
    second = out.log_qy
    assert reads == ["log_qy", "log_qy"]
    assert not first.requires_grad and second.requires_grad
    torch.testing.assert_close(first, second.detach())
    (grad,) = torch.autograd.grad(second.sum(), model.encoder.head.weight)
    assert float(grad.abs().sum()) > 0
    torch.testing.assert_close(out.log_py, torch.distributions.Normal(0.0, 1.0).log_prob(out.y).sum(-1))
    assert reads[-1] == "log_py"
