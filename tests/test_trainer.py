"""The trainer: run folder contract, determinism, resume, non-finite values, bad checkpoints."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from tests.recording_plugins import ALL
from vaecore import CheckpointError, ConfigError, NonFiniteError
from vaecore.checkpoint import load_checkpoint, save_checkpoint
from vaecore.config import tomllib
from vaecore.testing import load, make_registry, merge, run_training, synthetic_dataset, tiny_config
from vaecore.trainer import COSMETIC_CHANGES, Trainer, config_differences, train_or_reuse


@pytest.fixture
def registry():
    return make_registry(ALL, entry_points=False)


def params(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_run_folder_contract(tiny_data, tmp_path, registry):
    raw = tiny_config([{"name": "recorder"}], train={"epochs": 2, "kl_warmup": {"start": 0.2, "epochs": 1}})
    trainer, results = run_training(raw, tmp_path / "run", tiny_data, registry)
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [
        ".lock",
        "checkpoints",
        "config.toml",
        "data_sample.npz",
        "eval.json",
        "metrics.jsonl",
        "run.json",
    ]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for key in (
        "train.loss",
        "train.elbo",
        "train.rec",
        "train.kl",
        "train.kl_weight",
        "train.recorder.l2",
        "valid.loss",
        "valid.elbo",
        "valid.rec",
        "valid.kl",
        "recorder.steps",
        "lr",
        "step",
        "seconds",
        "monitor",
        "monitor_mode",
        "monitor_value",
        "best_epoch",
    ):
        assert key in records[0], key
    assert records[0]["monitor"] == "valid.elbo" and records[0]["monitor_mode"] == "max"
    assert records[1]["monitor_value"] == records[1]["valid.elbo"]
    assert records[0]["train.kl_weight"] < 1.0 and records[1]["train.kl_weight"] == 1.0
    assert records[1]["step"] == 2 * trainer.steps_per_epoch
    saved = json.loads((run / "eval.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert {"elbo", "rec", "kl", "kl_per_dim", "split", "checkpoint"} <= set(saved)
    assert saved["elbo"] == pytest.approx(saved["rec"] - saved["kl"], rel=1e-5)
    resolved = tomllib.loads((run / "config.toml").read_text())
    assert resolved["plugins"] == [
        {"name": "recorder", "id": "recorder", "tag": "r", "shift": 0.0, "scale": 1.0, "weight": 1.0}
    ]
    assert resolved["train"]["kl_warmup"] == {"start": 0.2, "epochs": 1.0}


def test_training_is_deterministic(tiny_data, tmp_path):
    raw = tiny_config(train={"epochs": 2})
    a, _ = run_training(raw, tmp_path / "a", tiny_data)
    b, _ = run_training(raw, tmp_path / "b", tiny_data)
    for key, value in params(a).items():
        assert torch.equal(value, params(b)[key]), key


def test_resume_equals_uninterrupted_run(tiny_data, tmp_path, registry):
    stack = [{"name": "recorder"}]
    raw = tiny_config(stack, train={"epochs": 2, "kl_warmup": {"start": 0.1, "epochs": 2}})
    full, _ = run_training(raw, tmp_path / "full", tiny_data, registry)
    first = tiny_config(stack, train={"epochs": 1, "kl_warmup": {"start": 0.1, "epochs": 2}})
    run_training(first, tmp_path / "split", tiny_data, registry)
    resumed, _ = run_training(raw, tmp_path / "split", tiny_data, registry, resume=True)
    assert resumed.epoch == 2 and resumed.ctx.step == full.ctx.step
    for key, value in params(full).items():
        assert torch.equal(value, params(resumed)[key]), key
    full_opt, resumed_opt = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(full_opt[i]["exp_avg"], resumed_opt[i]["exp_avg"]) for i in full_opt)
    lines = lambda p: [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert [strip(r) for r in lines(tmp_path / "full")] == [strip(r) for r in lines(tmp_path / "split")]


def test_resume_drops_epochs_logged_after_the_checkpoint(tiny_data, tmp_path):
    raw = tiny_config(train={"epochs": 1})
    run_training(raw, tmp_path / "run", tiny_data)
    with open(tmp_path / "run" / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"epoch": 2, "train.loss": 1.0}) + "\n")
    run_training(tiny_config(train={"epochs": 2}), tmp_path / "run", tiny_data, resume=True)
    epochs = [json.loads(x)["epoch"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_existing_run_is_not_overwritten(tiny_data, tmp_path):
    raw = tiny_config(train={"epochs": 1})
    run_training(raw, tmp_path / "run", tiny_data)
    before = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(CheckpointError, match="already holds a run; pass --resume to continue it or --out"):
        run_training(raw, tmp_path / "run", tiny_data)
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == before


def test_resume_refuses_a_different_config(tiny_data, tmp_path):
    run_training(tiny_config(train={"epochs": 1}), tmp_path / "run", tiny_data)
    changed = tiny_config(train={"epochs": 2, "lr": 0.01}, model={"latent_dim": 3})
    with pytest.raises(ConfigError) as err:
        run_training(changed, tmp_path / "run", tiny_data, resume=True)
    assert sorted(err.value.problems) == [
        f"model.latent_dim: differs from the config of the run being resumed ({tmp_path / 'run'})",
        f"train.lr: differs from the config of the run being resumed ({tmp_path / 'run'})",
    ]


def test_resume_fills_keys_added_since_the_checkpoint(tiny_data, tmp_path):
    run_training(tiny_config(train={"epochs": 1}), tmp_path / "run", tiny_data)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    del state["config"]["train"]["precision"]  # as written by a vaecore without these options
    del state["config"]["data"]["subset"]
    save_checkpoint(last, {k: v for k, v in state.items() if k not in ("format", "format_version")})
    trainer, _ = run_training(tiny_config(train={"epochs": 2}), tmp_path / "run", tiny_data, resume=True)
    assert trainer.epoch == 2


def test_resume_without_checkpoint(tiny_data, tmp_path):
    with pytest.raises(CheckpointError, match="nothing to resume in .*: no run was started there"):
        run_training(tiny_config(), tmp_path / "empty", tiny_data, resume=True)
    assert not (tmp_path / "empty").exists()


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_data, tmp_path, registry):
    raw = tiny_config([{"name": "nan_loss", "at_step": 10}], train={"epochs": 3})
    trainer = Trainer(load(raw, registry), tmp_path / "run", registry=registry, dataset=tiny_data)
    with pytest.raises(NonFiniteError) as err:
        trainer.fit()
    message = str(err.value)
    assert "non-finite values at epoch 2, step 10: loss=nan, nan_loss.boom=nan" in message
    assert "the last good checkpoint is" in message and "last.pt" in message
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a vaecore checkpoint"):
        load_checkpoint(foreign)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "vaecore-checkpoint", "obj": object()}, pickled)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(pickled)
    newer = tmp_path / "newer.pt"
    save_checkpoint(newer, {})
    state = torch.load(newer, weights_only=True)
    torch.save({**state, "format_version": 99}, newer)
    with pytest.raises(CheckpointError, match="format version 99; this vaecore reads version 1"):
        load_checkpoint(newer)


def test_checkpoint_of_another_model_is_refused(tiny_data, tmp_path):
    run_training(tiny_config(train={"epochs": 1}), tmp_path / "run", tiny_data)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    other = Trainer(load(tiny_config(model={"latent_dim": 3})), tmp_path / "other", dataset=tiny_data)
    with pytest.raises(CheckpointError, match="does not match the model this config builds"):
        other.load_state(state, tmp_path / "run" / "checkpoints" / "last.pt")


def test_early_stopping_and_lr_decay(tiny_data, tmp_path):
    raw = tiny_config(train={"epochs": 30, "lr": 0.5, "early_stopping": 2, "lr_decay": {"patience": 1, "factor": 0.5}})
    trainer, _ = run_training(raw, tmp_path / "run", tiny_data)
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert trainer.epoch < 30
    lrs = [r["lr"] for r in records]
    assert lrs[0] == 0.5 and min(lrs) < 0.5 and all(b <= a for a, b in itertools.pairwise(lrs))


def test_bf16_networks_keep_float32_bounds_and_train(tiny_data, tmp_path):
    raw = tiny_config(train={"epochs": 2, "precision": "bf16"})
    trainer = Trainer(load(raw), tmp_path / "run", dataset=tiny_data)
    batch = next(tiny_data.train.batches(64))
    ctx = trainer.model.context(training=False)
    torch.manual_seed(0)
    out = trainer.model(batch.x, ctx)
    assert out.params.dtype == out.log_px.dtype == out.posterior.loc.dtype == torch.float32
    low = trainer._objective(batch, ctx, 1)[2]
    trainer.model.precision = None
    torch.manual_seed(0)
    full = trainer._objective(batch, ctx, 1)[2]
    assert float(low.detach()) == pytest.approx(float(full.detach()), rel=0.02)
    trainer.model.precision = torch.bfloat16
    trainer.fit()
    losses = [json.loads(x)["train.loss"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert losses[1] < losses[0]


def test_float16_needs_cuda(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="train.precision: '16' .* needs CUDA"):
        Trainer(load(tiny_config(train={"precision": "16"})), tmp_path / "run", dataset=tiny_data)


def test_threads_option_sets_torch_threads(tiny_data, tmp_path):
    before = torch.get_num_threads()
    try:
        Trainer(load(tiny_config(train={"threads": 1})), tmp_path / "run", dataset=tiny_data)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("flush", [True, False])
def test_flush_denormal_option(tiny_data, tmp_path, flush):
    subnormal = torch.tensor([1e-40])
    try:
        Trainer(load(tiny_config(train={"flush_denormal": flush})), tmp_path / "run", dataset=tiny_data)
        assert ((subnormal * 1.0).item() == 0.0) is flush
    finally:
        torch.set_flush_denormal(False)


def test_gradient_clipping_bounds_the_update(tiny_data, tmp_path):
    trainer, _ = run_training(tiny_config(train={"epochs": 1, "grad_clip": 0.05}), tmp_path / "a", tiny_data)
    grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    assert grads, "the last step left no gradients to inspect"
    assert float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))) <= 0.05 + 1e-6
    free, _ = run_training(tiny_config(train={"epochs": 1}), tmp_path / "b", tiny_data)
    unclipped = [p.grad for p in free.model.parameters() if p.grad is not None]
    assert float(torch.linalg.vector_norm(torch.stack([g.norm() for g in unclipped]))) > 0.05


def test_train_or_reuse_trains_once_and_refuses_another_config(tmp_path):
    raw = tiny_config(data={"train_size": 200, "valid_size": 50, "test_size": 50}, train={"epochs": 1})
    raw["eval"] = {"nll_samples": 0}
    run = tmp_path / "run"
    first = train_or_reuse(load(raw), run)
    last = run / "checkpoints" / "last.pt"
    trained = last.stat().st_mtime_ns
    # threads and progress do not change what a run computes: the finished run is reused as it is
    again = train_or_reuse(load(merge(raw, {"train": {"threads": 1, "progress": True}})), run)
    assert last.stat().st_mtime_ns == trained
    assert again.source == run / "checkpoints" / "best.pt"
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key
    # more epochs (which a resume would accept) are another result: refused, nothing trained
    with pytest.raises(ConfigError, match=r"train\.epochs: differs from the config of the finished run"):
        train_or_reuse(load(merge(raw, {"train": {"epochs": 2}})), run)
    assert last.stat().st_mtime_ns == trained


def test_config_differences_name_plugin_options_and_skip_the_ignored_keys():
    a = {"plugins": [{"name": "intel", "c2": 0.5}], "train": {"epochs": 1, "threads": 1}}
    b = {"plugins": [{"name": "intel", "c2": 0.2}], "train": {"epochs": 2, "threads": 2}}
    assert config_differences(a, b) == ["plugins.0.c2"]
    assert config_differences(a, b, ignore=COSMETIC_CHANGES) == ["plugins.0.c2", "train.epochs"]
    assert config_differences(a, {**b, "plugins": []}, ignore=frozenset()) == [
        "plugins",
        "train.epochs",
        "train.threads",
    ]


def test_progress_on_a_terminal_shows_the_run_the_loss_terms_and_the_evaluation(tmp_path, monkeypatch, capsys):
    """tqdm leaves ``disable`` at None on a terminal: the loss terms must show there anyway,
    beside the run's overall progress (epochs with an ETA) and the final evaluation's bar."""
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    data = synthetic_dataset(n=256)
    raw = tiny_config(train={"progress": True, "epochs": 2})
    Trainer(load(raw), tmp_path / "run", dataset=data).fit()
    err = capsys.readouterr().err
    assert "training: 100%" in err and "2/2" in err  # the overall bar, in epochs
    assert "loss=" in err and "elbo=" in err and "kl=" in err  # the running terms of the epoch bar
    assert "eval:" in err  # the final evaluation
    # off when asked
    Trainer(load(merge(raw, {"train": {"progress": False}})), tmp_path / "quiet", dataset=data).fit()
    assert "training:" not in capsys.readouterr().err
