"""Cyclical KL annealing (Fu et al. 2019): the schedule's values by hand, the weight the trainer
uses and logs, and stacks with the Rényi bound and with the core's warm-up."""

from __future__ import annotations

import json
import math

import pytest
from vaecore_baselines.schedules import CyclicOptions, cyclic_factor

from vaecore import ConfigError, PluginRegistry
from vaecore.testing import make_model, run_training, synthetic_dataset, tiny_config
from vaecore.testing.conformance import PluginConformance


def test_linear_schedule_by_hand():
    # T = 100 steps, M = 4 cycles of 25, R = 0.5: rises over 12.5 steps from 0, then 1
    opts = CyclicOptions(cycles=4, ratio=0.5)
    expected = {0: 0.0, 5: 0.4, 10: 0.8, 12: 0.96, 13: 1.0, 24: 1.0, 25: 0.0, 30: 0.4, 99: 1.0}
    for step, value in expected.items():
        assert cyclic_factor(step, 100 / 4, opts) == pytest.approx(value), step


def test_shapes_start_and_ratio():
    t = 25  # a period of 25 steps
    assert cyclic_factor(0, t, CyclicOptions(start=0.2)) == pytest.approx(0.2)
    assert cyclic_factor(5, t, CyclicOptions(start=0.2)) == pytest.approx(0.2 + 0.8 * 0.4)
    cosine = CyclicOptions(shape="cosine")
    assert cyclic_factor(0, t, cosine) == pytest.approx(0.0)
    assert cyclic_factor(6, t, cosine) == pytest.approx(0.5 - 0.5 * math.cos(math.pi * 0.48))
    sigmoid = CyclicOptions(shape="sigmoid")
    assert cyclic_factor(6, t, sigmoid) == pytest.approx(1 / (1 + math.exp(-(12 * 0.48 - 6))))
    assert cyclic_factor(7, t, CyclicOptions(ratio=0.0)) == 1.0  # no rising part: constant 1
    assert cyclic_factor(24, t, CyclicOptions(ratio=1.0)) == pytest.approx(0.96)


def trained_weights(stack, tmp_path, **train):
    raw = tiny_config(stack, train={"epochs": 4, **train}, eval={"nll_samples": 0, "probes": False})
    data = synthetic_dataset(n=256)  # 8 steps an epoch: T = 32
    run_training(raw, tmp_path / "run", data)
    return [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


def test_the_logged_weight_is_the_one_used(tmp_path):
    records = trained_weights([{"name": "kl_cyclic", "cycles": 2, "ratio": 0.5}], tmp_path, beta=0.8)
    opts = CyclicOptions(cycles=2, ratio=0.5)
    # train.kl_weight is the weight of each epoch's last step (steps 7, 15, 23, 31 of 32)
    expected = [0.8 * cyclic_factor(8 * e + 7, 32 / opts.cycles, opts) for e in range(4)]
    assert [r["train.kl_weight"] for r in records] == pytest.approx(expected)
    assert expected == pytest.approx([0.8 * 7 / 8, 0.8, 0.8 * 7 / 8, 0.8])


def test_stacks_with_the_renyi_bound(tmp_path):
    if "renyi" not in PluginRegistry():
        pytest.skip("the renyi plugin is not installed")
    # a cycle of 10^6 steps starting at 0.25: the weight is 0.25 (to 3e-5) over these 32 steps
    cyclic = {"name": "kl_cyclic", "cycles": 1, "ratio": 1.0, "start": 0.25, "total_steps": 10**6}
    records = trained_weights([cyclic, {"name": "renyi", "alpha": 1.0, "samples": 2}], tmp_path)
    assert [r["train.kl_weight"] for r in records] == pytest.approx([0.25] * 4, abs=1e-4)
    for r in records:
        # renyi (anneal = "ratio", alpha = 1) trains on log p(x|z) + w (log p(y) - log q(y|x)):
        # loss = -rec + w (rec - elbo) with the Monte Carlo KL rec - elbo; weight 1 would give -elbo
        assert r["train.loss"] == pytest.approx(-r["train.rec"] + 0.25 * (r["train.rec"] - r["train.elbo"]), rel=1e-4)
        assert r["train.loss"] != pytest.approx(-r["train.elbo"], rel=1e-3)


def test_multiplies_the_cores_warm_up(tmp_path):
    cyclic = {"name": "kl_cyclic", "cycles": 1, "ratio": 0.5}
    records = trained_weights([cyclic], tmp_path, kl_warmup={"epochs": 4, "start": 0.0})
    opts = CyclicOptions(cycles=1, ratio=0.5)
    expected = [(8 * e + 7) / 32 * cyclic_factor(8 * e + 7, 32 / opts.cycles, opts) for e in range(4)]
    assert [r["train.kl_weight"] for r in records] == pytest.approx(expected)


def test_a_period_in_epochs_keeps_its_length(tmp_path):
    records = trained_weights([{"name": "kl_cyclic", "period_epochs": 2, "ratio": 0.5}], tmp_path)
    # 16 steps a cycle, rising over 8: the last step of each epoch is at 7/8, then 1
    assert [r["train.kl_weight"] for r in records] == pytest.approx([7 / 8, 1.0, 7 / 8, 1.0])


def test_needs_the_runs_length():
    with pytest.raises(ConfigError, match="kl_cyclic needs the run's length"):
        from vaecore.model import VAE
        from vaecore.testing import load, make_registry

        registry = make_registry()
        config = load(tiny_config([{"name": "kl_cyclic"}]), registry)
        from vaecore.build import build_stack

        VAE(config.model, (16,), 64, build_stack(config, registry))  # no training config: no length
    make_model(tiny_config([{"name": "kl_cyclic", "total_steps": 10}]), synthetic_dataset(n=64))


class TestConformance(PluginConformance):
    plugin_name = "kl_cyclic"
    options = {"period_epochs": 1.5}  # cycles that do not depend on train.epochs: a resume may add epochs
    bad_options = {"cycles": (0, "must be > 0"), "shape": ("square", "must be one of")}
