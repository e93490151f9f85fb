"""``train.monitor`` (issue 18, item 7): what selects best.pt and drives early stopping and
learning-rate decay. The default is the active bound (the ELBO, or a claimed bound's ``bound``
term), not ``valid.loss``, which carries plugin terms and the free-bits clamp."""

from __future__ import annotations

import json
import math

import attrs
import pytest
import torch

from vaecore import HOOK_API_VERSION, Bound, ConfigError, Term, hookimpl
from vaecore.checkpoint import load_checkpoint, save_checkpoint
from vaecore.plugin_manager import PluginRegistry
from vaecore.testing import load, make_registry, run_training, tiny_config

EVAL = {"nll_samples": 8, "probes": False, "reencoding": False}


@attrs.define(kw_only=True)
class PenaltyOptions:
    per_epoch: float = 100.0


class ValidationPenalty:
    """A loss term that grows with the epoch in validation only: ``valid.loss`` gets worse every
    epoch while the model (and its ELBO) improves."""

    api_version = HOOK_API_VERSION
    Options = PenaltyOptions

    def __init__(self, options: PenaltyOptions):
        self.options = options

    @hookimpl
    def extra_loss(self, out, ctx):
        value = 0.0 if ctx.training else self.options.per_epoch * ctx.epoch
        return {"penalty": Term(torch.tensor(value))}


class TightBound:
    """Claims ``bound``: the IWAE bound of the samples, logged as ``bound`` (as the Rényi plugin does)."""

    api_version = HOOK_API_VERSION

    @hookimpl
    def forward_samples(self, training):
        return 3

    @hookimpl
    def bound(self, out, ctx):
        log_w = out.log_w
        iwae = (torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])).mean()
        return Bound(loss=-iwae, terms={"bound": iwae.detach(), "elbo": log_w.mean().detach()})


@pytest.fixture
def registry():
    return make_registry({"penalty": ValidationPenalty, "tight": TightBound}, entry_points=False)


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def best_by(rows, key, mode):
    pick = max if mode == "max" else min
    return pick(rows, key=lambda r: r[key])["epoch"]


def test_best_checkpoint_follows_the_elbo_not_the_loss_with_plugin_terms(tiny_data, tmp_path, registry):
    raw = tiny_config([{"name": "penalty"}], train={"epochs": 3, "lr": 3e-3}, eval=EVAL)
    _, results = run_training(raw, tmp_path / "run", tiny_data, registry)
    rows = records(tmp_path / "run")
    assert best_by(rows, "valid.loss", "min") == 1 and best_by(rows, "valid.elbo", "max") == 3  # they disagree
    assert [r["monitor"] for r in rows] == ["valid.elbo"] * 3
    assert [r["monitor_mode"] for r in rows] == ["max"] * 3
    assert [r["monitor_value"] for r in rows] == [r["valid.elbo"] for r in rows]
    assert [r["best_epoch"] for r in rows] == [1, 2, 3]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["epoch"] == 3
    assert results["epoch"] == 3 and results["checkpoint"] == "best.pt"


def test_best_checkpoint_follows_the_elbo_not_the_free_bits_loss(tiny_data, tmp_path):
    """Free bits clamp each dimension's KL from below in valid.loss, so its best epoch is not the ELBO's."""
    raw = tiny_config(train={"epochs": 6, "lr": 0.02, "free_bits": 3.0}, eval=EVAL)
    run_training(raw, tmp_path / "run", tiny_data)
    rows = records(tmp_path / "run")
    best = best_by(rows, "valid.elbo", "max")
    assert best != best_by(rows, "valid.loss", "min"), "this run no longer tells the two apart"
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["epoch"] == best
    assert rows[-1]["best_epoch"] == best


def test_a_claimed_bound_is_the_default_monitor(tiny_data, tmp_path, registry):
    raw = tiny_config([{"name": "tight"}], train={"epochs": 2}, eval=EVAL)
    run_training(raw, tmp_path / "run", tiny_data, registry)
    rows = records(tmp_path / "run")
    assert [(r["monitor"], r["monitor_mode"]) for r in rows] == [("valid.bound", "max")] * 2
    assert [r["monitor_value"] for r in rows] == [r["valid.bound"] for r in rows]


@pytest.mark.skipif("renyi" not in PluginRegistry(), reason="the renyi plugin is not installed")
def test_the_renyi_bound_is_the_default_monitor(tiny_data, tmp_path):
    raw = tiny_config([{"name": "renyi", "alpha": 0.5, "samples": 2}], train={"epochs": 1}, eval=EVAL)
    run_training(raw, tmp_path / "run", tiny_data)
    (row,) = records(tmp_path / "run")
    assert (row["monitor"], row["monitor_mode"], row["monitor_value"]) == ("valid.bound", "max", row["valid.bound"])


def test_the_loss_can_be_monitored_and_drives_early_stopping(tiny_data, tmp_path, registry):
    raw = tiny_config(
        [{"name": "penalty"}],
        train={"epochs": 5, "lr": 3e-3, "monitor": "valid.loss", "early_stopping": 2},
        eval=EVAL,
    )
    run_training(raw, tmp_path / "run", tiny_data, registry)
    rows = records(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # valid.loss worsens every epoch: stopped after 2 more
    assert [(r["monitor"], r["monitor_mode"], r["best_epoch"]) for r in rows] == [("valid.loss", "min", 1)] * 3
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["epoch"] == 1


def test_an_unknown_monitor_is_refused_at_the_first_validation(tiny_data, tmp_path, registry):
    raw = tiny_config([{"name": "penalty"}], train={"epochs": 3, "monitor": "valid.iwae"}, eval=EVAL)
    with pytest.raises(ConfigError) as err:
        run_training(raw, tmp_path / "run", tiny_data, registry)
    message = str(err.value)
    assert message.startswith("invalid config: train.monitor: 'valid.iwae' is not a value this run logs; it logs ")
    assert "\n" not in message
    for key in ("train.loss", "valid.loss", "valid.elbo", "valid.rec", "valid.kl", "valid.penalty.penalty"):
        assert key in message
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    fixed = tiny_config([{"name": "penalty"}], train={"epochs": 1, "monitor": "valid.elbo"}, eval=EVAL)
    run_training(fixed, tmp_path / "run", tiny_data, registry)  # the folder is free for the corrected run


@pytest.mark.parametrize(
    ("train", "problem"),
    [
        (
            {"monitor": "valid.penalty.penalty"},
            "train: monitor_mode: 'auto' cannot tell whether 'valid.penalty.penalty' improves by falling or "
            "rising; set monitor_mode to 'min' or 'max'",
        ),
        (
            {"monitor_mode": "min"},
            "train: monitor_mode: 'min' needs a monitor; unset, the monitor is the active bound "
            "(valid.bound or valid.elbo), which is maximised",
        ),
        ({"monitor_mode": "up"}, "train.monitor_mode: must be one of 'auto', 'min', 'max', got 'up'"),
    ],
)
def test_monitor_options_are_checked_with_the_config(train, problem, registry):
    with pytest.raises(ConfigError) as err:
        load(tiny_config(train=train), registry)
    assert err.value.problems == [problem]


def test_a_checkpoint_without_the_monitor_fields_resumes(tiny_data, tmp_path):
    """Written before train.monitor: best.pt, early stopping and lr decay followed valid.loss."""
    raw = tiny_config(train={"epochs": 3}, eval=EVAL)
    run_training(raw, tmp_path / "full", tiny_data)
    run_training(tiny_config(train={"epochs": 2}, eval=EVAL), tmp_path / "old", tiny_data)
    last = tmp_path / "old" / "checkpoints" / "last.pt"
    state = {k: v for k, v in torch.load(last, weights_only=True).items() if "format" not in k}
    trainer = state["trainer"]
    valid_loss = records(tmp_path / "old")[-1]["valid.loss"]
    state["trainer"] = {"best_valid": valid_loss, **{k: trainer[k] for k in ("since_best", "since_decay", "decays")}}
    del state["config"]["train"]["monitor_mode"]
    save_checkpoint(last, state)
    run_training(raw, tmp_path / "old", tiny_data, resume=True)
    rows = records(tmp_path / "old")
    assert (rows[-1]["monitor"], rows[-1]["monitor_mode"], rows[-1]["best_epoch"]) == ("valid.loss", "min", 3)
    after = load_checkpoint(last)
    assert after["epoch"] == 3 and after["trainer"]["monitor"] == "valid.loss"
    for key, value in load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["model"].items():
        assert torch.equal(value, after["model"][key]), key
