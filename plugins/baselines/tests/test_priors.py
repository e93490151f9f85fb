"""Mixture-of-Gaussians and VampPrior priors: densities, KL estimates, samples, training."""

from __future__ import annotations

import pytest
import torch
from vaecore_baselines.priors import mixture_log_prob

from vaecore import ConfigError
from vaecore.testing import binarized_mnist, make_model, run_training, tiny_config
from vaecore.testing.conformance import PluginConformance


@pytest.fixture(scope="module")
def mnist():
    return binarized_mnist(n_train=300, n_valid=100, n_test=100)


def torch_mixture(loc, log_var, logits):
    comp = torch.distributions.Independent(torch.distributions.Normal(loc, (0.5 * log_var).exp()), 1)
    return torch.distributions.MixtureSameFamily(torch.distributions.Categorical(logits=logits), comp)


def test_mixture_log_prob_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    loc, log_var, logits = (
        torch.randn(5, 3, generator=gen),
        torch.randn(5, 3, generator=gen),
        torch.randn(5, generator=gen),
    )
    y = torch.randn(4, 7, 3, generator=gen)
    torch.testing.assert_close(
        mixture_log_prob(y, loc, log_var, logits.log_softmax(-1)), torch_mixture(loc, log_var, logits).log_prob(y)
    )


def test_mog_prior_replaces_the_standard_normal(mnist):
    model = make_model(tiny_config([{"name": "mog_prior", "components": 3}]), mnist)
    prior = model.prior
    assert prior is model.plugins["mog_prior"] and not model.standard_prior
    y = torch.randn(6, 4)
    torch.testing.assert_close(prior.log_prob(y), torch_mixture(prior.loc, prior.log_var, prior.logits).log_prob(y))
    out = model(mnist.train.x[:5], model.context(training=False), samples=3)
    assert out.kl_per_dim is None
    torch.testing.assert_close(out.log_py, prior.log_prob(out.y))


def test_one_component_standard_mixture_gives_the_analytic_kl(mnist):
    raw = tiny_config([{"name": "mog_prior", "components": 1, "spread": 0.0, "learn": False}])
    model = make_model(raw, mnist)
    torch.manual_seed(0)
    out = model(mnist.train.x[:8], model.context(training=False), samples=20_000)
    analytic = out.posterior.kl_per_dim().sum(-1)
    torch.testing.assert_close(out.kl(), analytic, atol=0.05, rtol=0.02)
    torch.testing.assert_close(
        model.prior.log_prob(out.y[:2]), torch.distributions.Normal(0.0, 1.0).log_prob(out.y[:2]).sum(-1)
    )


def test_mixture_samples_have_the_mixture_moments(mnist):
    model = make_model(tiny_config([{"name": "mog_prior", "components": 4, "spread": 2.0, "scale": 0.5}]), mnist)
    prior = model.prior
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
    torch.manual_seed(0)
    samples = prior.sample(200_000).detach()
    w = prior.logits.softmax(-1).detach()
    mean = (w[:, None] * prior.loc).sum(0).detach()
    second = (w[:, None] * (prior.log_var.exp() + prior.loc.pow(2))).sum(0).detach()
    torch.testing.assert_close(samples.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(samples.pow(2).mean(0), second, atol=0.1, rtol=0.02)


def test_fixed_mixture_has_no_parameters_and_learned_one_trains(mnist, tmp_path):
    fixed = make_model(tiny_config([{"name": "mog_prior", "learn": False}]), mnist)
    assert list(fixed.plugins["mog_prior"].parameters()) == []
    raw = tiny_config([{"name": "mog_prior", "components": 3}], train={"epochs": 1})
    trainer, results = run_training(raw, tmp_path / "run", mnist)
    start = make_model(raw, mnist).plugins["mog_prior"].loc
    assert not torch.equal(trainer.model.plugins["mog_prior"].loc, start)
    assert results["kl"] > 0 and results["elbo"] == pytest.approx(results["rec"] - results["kl"], rel=1e-4)


def test_vamp_prior_is_the_encoder_mixture_of_pseudo_inputs(mnist):
    model = make_model(tiny_config([{"name": "vamp_prior", "pseudo_inputs": 7}]), mnist)
    prior = model.prior
    u = prior.pseudo.clamp(0, 1)
    loc, log_var, _ = model.encoder(u)
    y = torch.randn(3, 5, 4)
    expected = torch_mixture(loc, log_var, torch.zeros(7)).log_prob(y)
    torch.testing.assert_close(prior.log_prob(y), expected)
    assert prior.pseudo.shape == (7, 784)


def test_vamp_samples_have_the_mixture_moments(mnist):
    model = make_model(tiny_config([{"name": "vamp_prior", "pseudo_inputs": 5, "init_std": 0.3}]), mnist)
    torch.manual_seed(0)
    with torch.no_grad():
        samples = model.prior.sample(100_000)
        loc, log_var = model.prior.mixture()
    torch.testing.assert_close(samples.mean(0), loc.mean(0), atol=0.03, rtol=0)
    torch.testing.assert_close(
        samples.var(0), (log_var.exp() + loc.pow(2)).mean(0) - loc.mean(0).pow(2), atol=0.05, rtol=0.03
    )
    assert model.sample_prior(3).shape == (3, 784)


def test_vamp_prior_pseudo_inputs_learn(mnist, tmp_path):
    raw = tiny_config([{"name": "vamp_prior", "pseudo_inputs": 10}], train={"epochs": 1})
    trainer, _ = run_training(raw, tmp_path / "run", mnist)
    fresh = make_model(raw, mnist).plugins["vamp_prior"].pseudo
    assert not torch.equal(trainer.model.plugins["vamp_prior"].pseudo, fresh)


def test_two_priors_are_a_config_error(mnist):
    with pytest.raises(ConfigError, match="'mog_prior', 'vamp_prior' all implement prior"):
        make_model(tiny_config([{"name": "mog_prior"}, {"name": "vamp_prior"}]), mnist)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "mog_prior", "components": 0}, "plugins[0].components: must be > 0, got 0"),
        ({"name": "mog_prior", "scale": -1.0}, "plugins[0].scale: must be > 0, got -1.0"),
        ({"name": "vamp_prior", "pseudo_inputs": "many"}, "plugins[0].pseudo_inputs: expected an integer, got 'many'"),
    ],
)
def test_bad_options(mnist, entry, message):
    with pytest.raises(ConfigError) as err:
        make_model(tiny_config([entry]), mnist)
    assert message in err.value.problems


class TestMixtureConformance(PluginConformance):
    plugin_name = "mog_prior"
    partner_options = {"intel": {"mapping": "circle"}}
    options = {"components": 3}
    bad_options = {"components": (0, "must be > 0")}
    incompatible = {"vamp_prior": "both claim the prior"}


class TestVampConformance(PluginConformance):
    plugin_name = "vamp_prior"
    partner_options = {"intel": {"mapping": "circle"}}
    options = {"pseudo_inputs": 5}
    bad_options = {"pseudo_inputs": (0, "must be > 0")}
    incompatible = {"mog_prior": "both claim the prior"}
