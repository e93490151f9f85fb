"""The renyi plugin against the core: options, hooks taking effect in training, validation and
evaluation, stacks with other plugins, bad options, resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from renyi_testplugins import TEST_PLUGINS, exact_log_px_1d
from vaecore_renyi import RenyiOptions, RenyiPlugin, renyi_bound

import vaecore
from vaecore.testing import load, make_model, make_registry, run_training, synthetic_dataset, tiny_config
from vaecore.trainer import Trainer

INF = math.inf


@pytest.fixture(scope="module")
def registry():
    return make_registry(TEST_PLUGINS)


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(n=256, dim=16)


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# options -------------------------------------------------------------------------------------


def test_installed_and_discovered():
    reg = make_registry()
    assert "renyi" in reg and reg.info("renyi").distribution == "vaecore-renyi-plugin"
    assert reg.load("renyi") is RenyiPlugin


@pytest.mark.parametrize("raw_alpha", ["-inf", -INF])
def test_alpha_minus_inf_from_config(registry, raw_alpha):
    config = load(tiny_config([{"name": "renyi", "alpha": raw_alpha, "samples": 3}]), registry)
    options = config.plugins[0].options
    assert options.alpha == -INF and options.samples == 3
    assert RenyiOptions(alpha="-inf").alpha == -INF  # also when built from Python


def test_defaults(registry):
    options = load(tiny_config([{"name": "renyi"}]), registry).plugins[0].options
    assert (options.alpha, options.samples, options.valid_samples, options.anneal) == (0.0, 5, None, "ratio")
    assert load(tiny_config([{"name": "renyi", "alpha": 2}]), registry).plugins[0].options.alpha == 2.0


def test_bad_options_all_reported_with_paths(registry):
    raw = tiny_config(
        [
            {"name": "renyi", "alpha": "inf", "samples": 0, "anneal": "sometimes", "beta": 1},
            {"name": "renyi", "id": "r2", "alpha": "abc", "samples": 2.5, "valid_samples": 0},
        ]
    )
    with pytest.raises(vaecore.ConfigError) as info:
        load(raw, registry)
    problems = info.value.problems
    expected = [
        "plugins[0].beta: unknown key (expected one of: alpha, anneal, samples, valid_samples)",
        'plugins[0].alpha: must be a finite number or "-inf" (VR-max), got inf',
        "plugins[0].samples: must be >= 1, got 0",
        "plugins[0].anneal: must be one of 'ratio', 'off', got 'sometimes'",
        "plugins[1].alpha: expected a number, got 'abc'",
        "plugins[1].samples: expected an integer, got 2.5",
    ]
    for message in expected:
        assert message in problems, (message, problems)
    nan = tiny_config([{"name": "renyi", "alpha": float("nan")}])
    with pytest.raises(vaecore.ConfigError, match=r'plugins\[0\].alpha: must be a finite number or "-inf"'):
        load(nan, registry)
    zero_valid = tiny_config([{"name": "renyi", "valid_samples": 0}])
    with pytest.raises(vaecore.ConfigError, match=r"plugins\[0\].valid_samples: must be >= 1, got 0"):
        load(zero_valid, registry)


def test_cli_reports_bad_option(tmp_path):
    import subprocess
    import sys

    cfg = tmp_path / "bad.toml"
    cfg.write_text('[[plugins]]\nname = "renyi"\nalpha = "inf"\nsamples = -2\n')
    proc = subprocess.run(
        [sys.executable, "-m", "vaecore.cli", "train", str(cfg), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert "plugins[0].alpha: must be a finite number" in proc.stderr
    assert "plugins[0].samples: must be >= 1, got -2" in proc.stderr
    assert "Traceback" not in proc.stderr


# the hooks inside the core ---------------------------------------------------------------------


def test_forward_samples_claimed(registry, data, tmp_path):
    for plugin, train_k, valid_k in [
        ({"name": "renyi", "samples": 7}, 7, 7),
        ({"name": "renyi", "samples": 7, "valid_samples": 2}, 7, 2),
    ]:
        trainer = Trainer(
            load(tiny_config([plugin]), registry), tmp_path / str(valid_k), registry=registry, dataset=data
        )
        assert (trainer.train_samples, trainer.valid_samples) == (train_k, valid_k)
        assert trainer.model.stack.implementers("bound") == ["renyi"]  # the built-in ELBO is not registered


@pytest.mark.parametrize("alpha", [-INF, 0.0, 0.5, 1.0])
def test_training_logs_bound_and_k_every_epoch(registry, data, tmp_path, alpha):
    raw = tiny_config([{"name": "renyi", "alpha": alpha, "samples": 4, "valid_samples": 6}], train={"epochs": 2})
    _, results = run_training(raw, tmp_path, data, registry)
    rows = metrics(tmp_path)
    assert len(rows) == 2
    for row in rows:
        assert row["train.K"] == 4.0 and row["valid.K"] == 6.0
        # no warm-up: the loss is exactly minus the bound
        assert row["train.loss"] == pytest.approx(-row["train.bound"], rel=1e-6)
        assert row["valid.loss"] == pytest.approx(-row["valid.bound"], rel=1e-6)
        # L_alpha sits between the ELBO estimator and VR-max; IWAE is logged alongside
        if alpha == 0.0:
            assert row["valid.bound"] == pytest.approx(row["valid.iwae"], rel=1e-6)
        if alpha == 1.0:
            assert row["valid.bound"] == pytest.approx(row["valid.elbo"], rel=1e-6)
        if alpha <= 0.0:
            assert row["valid.bound"] >= row["valid.iwae"] - 1e-4
        assert row["valid.bound"] >= row["valid.elbo"] - 1e-4
    assert rows[1]["valid.loss"] < rows[0]["valid.loss"]  # it trains
    # eval.json gets the bound on the test split, with valid_samples samples
    assert results["renyi.K"] == 6
    if alpha == 1.0:
        assert results["renyi.bound"] == pytest.approx(results["renyi.elbo"], rel=1e-6)
    assert results["renyi.iwae"] >= results["renyi.elbo"]
    assert math.isfinite(results["renyi.bound"])


def test_bound_hook_value_matches_independent_computation(registry, data):
    """The loss the core optimises is -L_alpha(out.log_w) for the very forward pass it made."""
    model = make_model(tiny_config([{"name": "renyi", "alpha": 0.5, "samples": 8}]), data, registry)
    ctx = model.context(training=True)
    torch.manual_seed(1)
    out = model(data.train.x[:32], ctx, 8)
    result = model.stack.bound(out, ctx)
    expected = -(2.0 * (torch.logsumexp(0.5 * out.log_w, 0) - math.log(8))).mean()
    torch.testing.assert_close(result.loss, expected)
    assert set(result.terms) == {"bound", "K", "elbo", "iwae", "rec", "kl"}
    assert all(t.dim() == 0 for t in result.terms.values())


def test_alpha_one_matches_core_elbo_in_expectation(registry, data):
    """alpha = 1 is the Monte Carlo ELBO; with many samples it meets the core's analytic-KL ELBO,
    and K = 1 gives the single-sample estimate log w for every alpha."""
    model = make_model(tiny_config([{"name": "renyi", "alpha": 1.0}]), data, registry)
    core = make_model(tiny_config([]), data, registry)
    core.load_state_dict(model.state_dict())
    ctx = model.context(training=False)
    x = data.train.x[:64]
    torch.manual_seed(0)
    with torch.no_grad():
        out = model(x, ctx, 4000)
        ours = model.stack.bound(out, ctx).loss
        theirs = core.stack.bound(out, ctx).loss
    assert float(ours) == pytest.approx(float(theirs), abs=0.05)
    single = model(x, ctx, 1)
    for alpha in (-INF, -1.0, 0.0, 0.5, 1.0, 2.0):
        plugin = RenyiPlugin(RenyiOptions(alpha=alpha, samples=1))
        torch.testing.assert_close(plugin.bound(single, ctx).loss, -single.log_w.mean())


def test_warmup_weights_the_prior_ratio(registry, data):
    model = make_model(tiny_config([{"name": "renyi", "alpha": 0.0, "samples": 5}]), data, registry)
    ctx = model.context(training=True, kl_weight=0.3)
    out = model(data.train.x[:16], ctx, 5)
    ratio = RenyiPlugin(RenyiOptions(alpha=0.0, samples=5, anneal="ratio")).bound(out, ctx)
    off = RenyiPlugin(RenyiOptions(alpha=0.0, samples=5, anneal="off")).bound(out, ctx)
    weighted = out.log_px + 0.3 * (out.log_py - out.log_qy)
    torch.testing.assert_close(ratio.loss, -renyi_bound(weighted, 0.0).mean())
    torch.testing.assert_close(off.loss, -renyi_bound(out.log_w, 0.0).mean())
    # the logged bound is always the exact one
    torch.testing.assert_close(ratio.terms["bound"], off.terms["bound"])
    # alpha = 1 with anneal = ratio is the core's warmed-up ELBO with a Monte Carlo KL
    elbo = RenyiPlugin(RenyiOptions(alpha=1.0, samples=5)).bound(out, ctx)
    torch.testing.assert_close(elbo.loss, -(out.log_px.mean() - 0.3 * (out.log_qy - out.log_py).mean()))


def test_warmup_in_training_run(registry, data, tmp_path):
    raw = tiny_config(
        [{"name": "renyi", "alpha": 0.0, "samples": 3}], train={"epochs": 2, "kl_warmup": {"start": 0.1, "epochs": 2}}
    )
    run_training(raw, tmp_path, data, registry)
    first = metrics(tmp_path)[0]
    assert first["train.kl_weight"] < 1.0
    assert first["train.loss"] < -first["train.bound"]  # the weighted objective is looser than the bound
    assert first["valid.loss"] == pytest.approx(-first["valid.bound"], rel=1e-6)  # validation uses weight 1


@pytest.mark.parametrize("alpha", [-INF, -1.0, 0.0, 0.5, 1.0, 2.0])
def test_gradients_finite_through_the_model(registry, data, alpha):
    raw = tiny_config([{"name": "flowpost"}, {"name": "warp"}, {"name": "renyi", "alpha": alpha, "samples": 6}])
    model = make_model(raw, data, registry)
    ctx = model.context(training=True)
    out = model(data.train.x[:32], ctx, 6)
    model.stack.bound(out, ctx).loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_extreme_log_weights_keep_gradients_finite(registry, data):
    """A huge decoder bias makes log w thousands of nats negative: still finite everywhere."""
    for alpha in (-INF, -1.0, 0.0, 0.5, 1.0, 2.0):
        model = make_model(tiny_config([{"name": "renyi", "alpha": alpha, "samples": 5}]), data, registry)
        with torch.no_grad():
            model.decoder.net[-1].bias.fill_(-300.0)
        ctx = model.context(training=True)
        out = model(data.train.x[:8], ctx, 5)
        loss = model.stack.bound(out, ctx).loss
        loss.backward()
        assert torch.isfinite(loss) and float(loss.detach()) > 1000
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# stacks ---------------------------------------------------------------------------------------


def test_two_bound_claimants_are_a_config_error(registry, data):
    raw = tiny_config([{"name": "renyi"}, {"name": "otherbound"}])
    with pytest.raises(vaecore.ConfigError) as info:
        make_model(raw, data, registry)
    assert (
        "plugins: 'renyi', 'otherbound' all implement bound; only one plugin of a stack may provide it"
        in info.value.problems
    )
    raw = tiny_config([{"name": "othersamples"}, {"name": "renyi"}])
    with pytest.raises(vaecore.ConfigError, match="'othersamples', 'renyi' all implement forward_samples"):
        make_model(raw, data, registry)


def test_renyi_twice_is_a_config_error(registry, data):
    raw = tiny_config([{"name": "renyi", "alpha": 0.0}, {"name": "renyi", "alpha": 1.0}])
    with pytest.raises(vaecore.ConfigError, match="'renyi1', 'renyi2' all implement bound"):
        make_model(raw, data, registry)


@pytest.mark.parametrize(
    "stack",
    [
        [],
        [{"name": "flowpost", "a": 0.8}],
        [{"name": "warp"}],
        [{"name": "flowpost", "a": -0.5}, {"name": "warp"}],
    ],
    ids=["gaussian", "flow", "latent_map", "flow+latent_map"],
)
def test_iwae_converges_to_exact_log_likelihood_over_any_stack(registry, data, stack, tmp_path):
    """With a 1-D latent, log p(x) is exact by quadrature in y-space. IWAE with many samples meets it
    for a Gaussian posterior, a flow posterior (log-det inside log q) and a non-invertible latent
    map (weights in y-space), which only holds if out.log_w is used as the core builds it."""
    raw = tiny_config(
        [*stack, {"name": "renyi", "alpha": 0.0, "samples": 5}],
        model={"latent_dim": 1},
        train={"epochs": 3},
    )
    trainer, _ = run_training(raw, tmp_path, data, registry)
    model = trainer.model.eval()
    ctx = model.context(training=False)
    x = data.test.x[:16]
    exact = exact_log_px_1d(model, x, ctx)
    torch.manual_seed(0)
    with torch.no_grad():
        out = model(x, ctx, 20000)
        iwae = renyi_bound(out.log_w.double(), 0.0)
        elbo = renyi_bound(out.log_w.double(), 1.0)
    assert (iwae - exact).abs().max() < 0.02, iwae - exact
    assert (elbo < exact).all()
    if stack and stack[0]["name"] == "flowpost":
        # leaving the log-determinant out of log q is visibly wrong: the test can tell
        broken = dict(stack[0], include_logdet=False)
        raw_bad = tiny_config(
            [broken, *stack[1:], {"name": "renyi", "alpha": 0.0, "samples": 5}], model={"latent_dim": 1}
        )
        bad_model = make_model(raw_bad, data, registry)
        bad_model.load_state_dict(model.state_dict())
        bad_model.eval()
        torch.manual_seed(0)
        with torch.no_grad():
            bad = renyi_bound(bad_model(x, ctx, 20000).log_w.double(), 0.0)
        assert (bad - exact).abs().mean() > 0.1


def test_stack_with_extra_loss_plugin(registry, data, tmp_path):
    raw = tiny_config([{"name": "flowpost"}, {"name": "renyi", "alpha": -INF, "samples": 3}, {"name": "countextra"}])
    run_training(raw, tmp_path, data, registry)
    row = metrics(tmp_path)[-1]
    assert "train.countextra.zsq" in row and row["train.countextra.zsq"] > 0
    assert row["train.loss"] == pytest.approx(-row["train.bound"], rel=1e-6)  # weight 0 extra term
    assert row["train.kl"] > 0  # Monte Carlo KL with the flow posterior


# resume ---------------------------------------------------------------------------------------


def test_resume_equals_uninterrupted(registry, data, tmp_path):
    raw = tiny_config([{"name": "renyi", "alpha": -1.0, "samples": 4}], train={"epochs": 3})
    run_training(raw, tmp_path / "full", data, registry)
    short = tiny_config([{"name": "renyi", "alpha": -1.0, "samples": 4}], train={"epochs": 1})
    run_training(short, tmp_path / "split", data, registry)
    run_training(raw, tmp_path / "split", data, registry, resume=True)
    full, split = metrics(tmp_path / "full"), metrics(tmp_path / "split")
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in full] == [
        {k: v for k, v in r.items() if k not in drop} for r in split
    ]
