"""The BN-VAE preset (Zhu et al. 2020; DU paper section 3.3, "Connections with BN-VAE"): batch norm
on the posterior means with the scale fixed at gamma in every dimension (not learned), a learned
shift, and the encoder's variance untouched. Each dimension's batch KL is then at least
0.5 * (gamma^2 * s_d / (s_d + eps) + beta_d^2) (s_d: batch variance of the raw means), Zhu et al.'s
bound 0.5 * (gamma^2 + beta_d^2) up to BatchNorm's eps.

The preset is read from ``examples/bn_vae.toml``, so these tests cover the stack as shipped. The
KLs and bounds are computed here from the tensors the trainer saw, in float64, not by the plugin.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from vaecore_du import DUOptions, DUPlugin, FixedScaleBatchNorm1d

import vaecore
from vaecore.checkpoint import load_checkpoint
from vaecore.config import read_toml
from vaecore.distributions import DiagonalGaussian
from vaecore.errors import ConfigError
from vaecore.testing import binarized_mnist, load, make_registry, run_training, tiny_config, train_steps
from vaecore.testing.conformance import PluginConformance

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PRESET = read_toml(EXAMPLES / "bn_vae.toml")["plugins"]
assert len(PRESET) == 1 and PRESET[0]["name"] == "du", PRESET
BN_VAE = PRESET[0]
GAMMA = BN_VAE["gamma"]
EPS = 1e-5  # BatchNorm1d's eps, the preset's bn_eps
STEPS = 40
MODEL = {"latent_dim": 8, "encoder": {"hidden": [64], "activation": "tanh"}}
WARM = {"kl_warmup": {"start": 0.1, "epochs": 1}}
FAST_EVAL = {"nll_samples": 0, "probes": False}


class Log:
    """What the two spies saw, one entry per training forward and per optimiser step."""

    raw: list[torch.Tensor] = []  # the encoder's means, before du
    loc: list[torch.Tensor] = []  # du's normalised means
    var: list[torch.Tensor] = []  # du's variances
    weight: list[torch.Tensor] = []  # the BN weight used in that forward
    bias: list[torch.Tensor] = []  # the BN bias used in that forward
    step_weight: list[torch.Tensor] = []  # the BN weight after each optimiser step

    @classmethod
    def clear(cls) -> None:
        for field in (cls.raw, cls.loc, cls.var, cls.weight, cls.bias, cls.step_weight):
            field.clear()


class BeforeDU:
    """Stacked before du: records the encoder's own means of every training batch."""

    api_version = vaecore.HOOK_API_VERSION

    @vaecore.hookimpl
    def post_posterior(self, posterior, ctx):
        if ctx.training:
            Log.raw.append(posterior.loc.detach().clone())
        return None


class AfterDU:
    """Stacked after du: records du's posterior and BN parameters in every training forward, and the
    BN weight after every optimiser step (its on_step_end runs after du's)."""

    api_version = vaecore.HOOK_API_VERSION

    @vaecore.hookimpl
    def post_posterior(self, posterior, ctx):
        if ctx.training:
            bn = ctx.model.plugins["du"].bn
            Log.loc.append(posterior.loc.detach().clone())
            Log.var.append(posterior.var.detach().clone())
            Log.weight.append(bn.weight.detach().clone())
            Log.bias.append(bn.bias.detach().clone())
        return None

    @vaecore.hookimpl
    def on_step_end(self, ctx):
        Log.step_weight.append(ctx.model.plugins["du"].bn.weight.detach().clone())


class UnitVariance:
    """Stacked first: replaces the encoder's variance by 1 (Zhu et al.'s code has this as
    ``fix_var``). The variance part of the KL, 0.5 * (v - log v - 1), is then 0 and the KL of each
    dimension is exactly its mean part: the case where the bound is tight."""

    api_version = vaecore.HOOK_API_VERSION

    @vaecore.hookimpl
    def post_posterior(self, posterior, ctx):
        return DiagonalGaussian.from_log_var(posterior.loc, torch.zeros_like(posterior.loc))


def spied(stack_entry: dict, unit_variance: bool = False) -> list[dict]:
    first = [{"name": "unit_variance"}] if unit_variance else []
    return [*first, {"name": "before_du"}, dict(stack_entry), {"name": "after_du"}]


def spy_registry():
    return make_registry({"before_du": BeforeDU, "after_du": AfterDU, "unit_variance": UnitVariance})


@pytest.fixture(scope="module")
def mnist():
    return binarized_mnist(STEPS * 32, 64, 64)


def train_preset(mnist, entry=None, unit_variance: bool = False):
    """STEPS optimiser steps of the spied preset on binarized MNIST (latent 8)."""
    Log.clear()
    raw = tiny_config(spied(entry or BN_VAE, unit_variance), model=MODEL)
    return train_steps(raw, mnist, steps=STEPS, registry=spy_registry())


def batch_kl_per_dim(loc: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """KL(N(loc, var) || N(0, 1)) per dimension, averaged over the batch, in float64."""
    loc, var = loc.double(), var.double()
    return 0.5 * (loc.pow(2) + var - var.log() - 1).mean(0)


def kl_bound_per_dim(raw_loc: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Zhu et al.'s per-dimension bound on the batch: 0.5 * E_B[mu_hat_d^2] for a fixed scale gamma,
    = 0.5 * (gamma^2 * s_d / (s_d + eps) + beta_d^2), s_d the (biased) batch variance of the raw means."""
    s = raw_loc.double().var(0, unbiased=False)
    return 0.5 * (GAMMA**2 * s / (s + EPS) + bias.double().pow(2))


def test_the_shipped_preset_is_bn_vae():
    opts = DUOptions(**{k: v for k, v in BN_VAE.items() if k != "name"})
    assert opts.scale == "fixed" and opts.drop == 0.0 and opts.floor == 0.0
    assert opts.bn_eps == EPS and opts.bn_momentum == 0.1  # torch's BatchNorm1d defaults, as Zhu et al.


def test_every_dimension_keeps_scale_gamma_through_training(mnist):
    result = train_preset(mnist)
    bn = result.model.plugins["du"].bn
    gamma = torch.full((MODEL["latent_dim"],), GAMMA)
    assert len(Log.weight) == STEPS and len(Log.step_weight) == STEPS
    # exactly gamma, every dimension, in every training forward and after every optimiser step
    for w in Log.weight + Log.step_weight + [bn.weight.detach()]:
        assert torch.equal(w, gamma), w
    # and the batch-normalised means have batch std gamma * sqrt(s / (s + eps)) in every dimension
    for raw, loc in zip(Log.raw, Log.loc, strict=True):
        s = raw.double().var(0, unbiased=False)
        expected = GAMMA * torch.sqrt(s / (s + EPS))
        torch.testing.assert_close(loc.double().std(0, unbiased=False), expected, rtol=1e-4, atol=0)
    # the shift is learned (from 0) and the running statistics follow the batches
    assert not torch.allclose(bn.bias.detach(), torch.zeros_like(bn.bias), atol=1e-5)
    assert int(bn.num_batches_tracked) == STEPS
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))


@pytest.mark.parametrize("unit_variance", [False, True], ids=["encoder-variance", "unit-variance"])
def test_every_dimension_batch_kl_is_at_least_its_bound(mnist, unit_variance):
    result = train_preset(mnist, unit_variance=unit_variance)
    assert len(Log.raw) == len(Log.loc) == STEPS
    for step, (raw, loc, var, bias) in enumerate(zip(Log.raw, Log.loc, Log.var, Log.bias, strict=True)):
        bound = kl_bound_per_dim(raw, bias)
        # the bound is Zhu et al.'s gamma^2 / 2 (+ beta^2 / 2), not a degenerate one: s_d >> eps
        assert (bound >= 0.99 * GAMMA**2 / 2).all(), (step, bound)
        kl = batch_kl_per_dim(loc, var)
        assert (kl >= bound * (1 - 1e-5)).all(), (step, kl - bound)
        # the step of the derivation the fixed scale provides: 0.5 * E_B[mu_hat_d^2] equals the bound
        # in every dimension (a learned scale below gamma in some dimension breaks this)
        mean_part = 0.5 * loc.double().pow(2).mean(0)
        torch.testing.assert_close(mean_part, bound, rtol=1e-5, atol=1e-7, msg=f"step {step}")
        if unit_variance:
            torch.testing.assert_close(var, torch.ones_like(var), rtol=0, atol=0)  # du leaves it alone
            torch.testing.assert_close(kl, bound, rtol=1e-5, atol=1e-7, msg=f"step {step}")  # tight
    if unit_variance:
        return
    # after training, on a fresh batch through the trained encoder: the same bound, and the variance
    # is the encoder's exp(log_var) (no floor, no dropout)
    model = result.model
    model.train()
    x = mnist.valid.x[:64]
    loc_raw, log_var, _ = model.encoder(x)
    post, _ = model.encode(x, model.context(training=True, warmup=1.0))
    torch.testing.assert_close(post.var, log_var.exp(), rtol=0, atol=0)
    bias = model.plugins["du"].bn.bias.detach()
    bound = kl_bound_per_dim(loc_raw.detach(), bias)
    kl = batch_kl_per_dim(post.loc.detach(), post.var.detach())
    assert (kl >= bound * (1 - 1e-5)).all(), kl - bound
    torch.testing.assert_close(0.5 * post.loc.detach().double().pow(2).mean(0), bound, rtol=1e-5, atol=1e-7)


def test_no_trainable_parameter_holds_the_scale(mnist):
    result = train_preset(mnist)
    model, trainer = result.model, result.trainer
    du = model.plugins["du"]
    assert isinstance(du.bn, FixedScaleBatchNorm1d)
    assert [name for name, _ in du.named_parameters()] == ["bn.bias"]
    weight = du.bn.weight
    assert not isinstance(weight, torch.nn.Parameter) and not weight.requires_grad and weight.grad is None
    assert "bn.weight" in dict(du.named_buffers())
    # nothing the optimiser updates is (or shares memory with) the scale
    trained = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert all(p.data_ptr() != weight.data_ptr() for p in trained)
    assert all(p.data_ptr() != weight.data_ptr() for p in model.parameters())
    # a backward pass reaches the shift but cannot reach the scale
    x = mnist.train.x[:32]
    model.train()
    model.zero_grad()
    out = model(x, model.context(training=True, warmup=1.0))
    model.stack.bound(out, model.context(training=True, warmup=1.0)).loss.backward()
    assert du.bn.bias.grad is not None and du.bn.bias.grad.abs().sum() > 0
    assert du.bn.weight.grad is None


def test_checkpoint_round_trip_keeps_the_fixed_scale(tmp_path, mnist):
    data = binarized_mnist(256, 64, 64)
    full_raw = tiny_config([BN_VAE], model=MODEL, train={**WARM, "epochs": 2}, eval=FAST_EVAL)
    full, _ = run_training(full_raw, tmp_path / "full", data)
    part_raw = tiny_config([BN_VAE], model=MODEL, train={**WARM, "epochs": 1}, eval=FAST_EVAL)
    run_training(part_raw, tmp_path / "part", data)
    saved = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["model"]
    assert torch.equal(saved["plugins.du.bn.weight"], torch.full((8,), GAMMA))
    assert not torch.allclose(saved["plugins.du.bn.bias"], torch.zeros(8))
    resumed, _ = run_training(full_raw, tmp_path / "part", data, resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)
    assert torch.equal(b["plugins.du.bn.weight"], torch.full((8,), GAMMA))


def test_loading_a_learned_scale_into_the_preset_is_refused():
    learned = DUPlugin(DUOptions(gamma=GAMMA, drop=0.0, floor=0.0))  # DU's learned scale
    fixed = DUPlugin(DUOptions(gamma=GAMMA, drop=0.0, floor=0.0, scale="fixed"))
    info = vaecore.hooktypes.ModelInfo(
        latent_dim=4, feature_dim=8, input_shape=(16,), n_train=100, likelihood="bernoulli"
    )
    learned.setup(info)
    fixed.setup(info)
    # the same keys in both modes: a state with the preset's gamma loads
    assert learned.state_dict().keys() == fixed.state_dict().keys()
    fixed.load_state_dict(learned.state_dict())
    assert torch.equal(fixed.bn.weight, torch.full((4,), GAMMA))
    with torch.no_grad():
        learned.bn.weight.copy_(torch.tensor([0.45, 0.53, 0.5, 0.51]))
    with pytest.raises(RuntimeError, match="needs gamma = 0.5 in every dimension"):
        fixed.load_state_dict(learned.state_dict())


def test_dtype_and_reset_keep_the_scale():
    bn = FixedScaleBatchNorm1d(3, 0.6)
    bn.double()
    assert bn.weight.dtype == torch.float64 and torch.equal(bn.weight, torch.full((3,), 0.6, dtype=torch.float64))
    with torch.no_grad():
        bn.bias.fill_(1.0)
    bn.reset_parameters()
    assert torch.equal(bn.weight, torch.full((3,), 0.6, dtype=torch.float64))
    assert torch.equal(bn.bias.detach(), torch.zeros(3, dtype=torch.float64))
    assert "weight fixed at 0.6" in repr(bn)


def test_du_keeps_its_learned_rescaled_scale(mnist):
    """DU-VAE is unchanged: its per-dimension weights are learned, only their mean square is pinned."""
    result = train_preset(mnist, {"name": "du", "gamma": GAMMA, "drop": 0.1})
    du = result.model.plugins["du"]
    assert du.options.scale == "learned"
    assert "bn.weight" in dict(du.named_parameters())
    w = du.bn.weight.detach()
    assert w.pow(2).mean().item() == pytest.approx(GAMMA**2, rel=1e-5)
    assert w.max() - w.min() > 1e-3  # the dimensions have moved apart
    assert all(abs(m.pow(2).mean().item() - GAMMA**2) < 1e-6 for m in Log.weight)


@pytest.mark.parametrize(
    "entry,message",
    [
        ({"scale": "frozen"}, "plugins[0].scale: must be one of 'learned', 'fixed', got 'frozen'"),
        ({"scale": "fixed", "rescale": "step"}, "plugins[0]: rescale = 'step' has no effect with scale = 'fixed'"),
    ],
)
def test_bad_scale_options_name_their_path(entry, message):
    with pytest.raises(ConfigError) as err:
        load(tiny_config([{"name": "du", **entry}]))
    assert message in str(err.value), str(err.value)


def test_preset_runs_the_shipped_config_for_a_few_steps():
    """examples/bn_vae.toml as shipped (32 latent dims, 784-200-200 MLPs) loads and trains."""
    raw = read_toml(EXAMPLES / "bn_vae.toml")
    result = train_steps(raw, binarized_mnist(200, 100, 100), steps=2)
    bn = result.model.plugins["du"].bn
    assert torch.equal(bn.weight, torch.full((32,), GAMMA))
    assert math.isfinite(result.metrics["valid.loss"])


class TestBNVAEConformance(PluginConformance):
    """The core's conformance suite on the preset: hooks, gradients (to the shift), checkpoint
    round trip, determinism and stacks with every installed plugin."""

    plugin_name = "du"
    options = {k: v for k, v in BN_VAE.items() if k != "name"}
    bad_options = {"scale": ("fixed-ish", "must be one of 'learned', 'fixed'")}
    must_precede = ("iaf",)
    partner_options = {"intel": {"mapping": "sparse"}}
