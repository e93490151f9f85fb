"""Kill windows and resume (issue 24): every kill point resumes to the uninterrupted result.

Kills are injected, never timed: each write of a run (a checkpoint, the epoch's line of
``metrics.jsonl``, ``eval.json``) is counted, and the run is killed in the middle of the Nth one (a
torn temporary file, or half a line of ``metrics.jsonl``). The resumed run must then equal an
uninterrupted one bit for bit: every checkpoint (parameters, optimiser state, RNG, counters),
``metrics.jsonl`` (but the ``seconds``), ``eval.json`` and ``config.toml``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch

from vaecore import HOOK_API_VERSION, CheckpointError, ConfigError, hookimpl
from vaecore import trainer as trainer_module
from vaecore.checkpoint import load_checkpoint, save_checkpoint
from vaecore.cli import main
from vaecore.config import tomllib
from vaecore.plugin_manager import PluginRegistry
from vaecore.runs import RunDir
from vaecore.testing import make_registry, run_training, synthetic_dataset, tiny_config, write_config, write_npz


class Killed(BaseException):
    """The injected kill: not an Exception, so nothing on the way catches it (as with SIGKILL)."""


@attrs.define(kw_only=True)
class ScriptOptions:
    scores: list[float] = attrs.field(factory=list)


class Script:
    """A plugin whose epoch metric ``script.score`` follows a script: a monitor with a known course."""

    api_version = HOOK_API_VERSION
    Options = ScriptOptions

    def __init__(self, options: ScriptOptions):
        self.options = options

    @hookimpl
    def on_epoch_end(self, epoch, metrics, ctx):
        return {"score": self.options.scores[epoch - 1]}


EVAL = {"nll_samples": 8, "probes": False, "reencoding": False}

# the plain model, the default monitor (valid.elbo, which improves every epoch here), a kept checkpoint
PLAIN = tiny_config(train={"epochs": 3, "keep_every": 2}, eval=EVAL)
PLAIN_WRITES = [
    "1:best.pt",
    "1:metrics.jsonl",
    "1:last.pt",
    "2:best.pt",
    "2:epoch_0002.pt",
    "2:metrics.jsonl",
    "2:last.pt",
    "3:best.pt",
    "3:metrics.jsonl",
    "3:last.pt",
    "eval.json",
]

# DU (batch-norm running statistics, variance dropout switched on by the warm-up), learning-rate
# decay at epochs 2 and 3 and a best epoch 4 (the last): the monitor is a scripted plugin metric
DU = tiny_config(
    [{"name": "du"}, {"name": "script", "scores": [1.0, 0.5, 0.7, 2.0]}],
    train={
        "epochs": 4,
        "keep_every": 2,
        "lr": 3e-3,
        "kl_warmup": {"start": 0.5, "epochs": 2},
        "lr_decay": {"patience": 1, "factor": 0.5},
        "monitor": "script.score",
        "monitor_mode": "max",
    },
    eval=EVAL,
)
DU_WRITES = [
    "1:best.pt",
    "1:metrics.jsonl",
    "1:last.pt",
    "2:epoch_0002.pt",
    "2:metrics.jsonl",
    "2:last.pt",
    "3:metrics.jsonl",
    "3:last.pt",
    "4:best.pt",
    "4:epoch_0004.pt",
    "4:metrics.jsonl",
    "4:last.pt",
    "eval.json",
]

HAVE_DU = "du" in PluginRegistry()
STACKS = {
    "plain": (PLAIN, PLAIN_WRITES),
    "du": (DU, DU_WRITES),
}


def registry_for(name: str) -> PluginRegistry:
    return make_registry({"script": Script}, entry_points=name == "du")


class Writes:
    """Counts a run's writes; the ``kill_at``-th one is torn and the process "dies" there."""

    def __init__(self, kill_at: int | None = None):
        self.kill_at = kill_at
        self.names: list[str] = []

    def _note(self, name: str, torn: Any) -> None:
        self.names.append(name)
        if len(self.names) == self.kill_at:
            torn()
            raise Killed(name)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> Writes:
        save, append, evaluate = trainer_module.save_checkpoint, RunDir.append_metrics, RunDir.write_eval

        def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
            tmp = path.with_name(f".{path.name}.tmp")
            self._note(f"{state['epoch']}:{path.name}", lambda: tmp.write_bytes(b"PK\x03\x04 torn"))
            save(path, state)

        def append_metrics(run: RunDir, record: dict[str, Any]) -> None:
            def torn() -> None:
                with open(run.metrics, "a") as fh:
                    fh.write(json.dumps(record)[:40])

            self._note(f"{record['epoch']}:metrics.jsonl", torn)
            append(run, record)

        def write_eval(run: RunDir, results: dict[str, Any], target: Path | None = None) -> Path:
            self._note("eval.json", lambda: run.path.joinpath(".eval.json.tmp").write_text('{"spl'))
            return evaluate(run, results, target)

        monkeypatch.setattr(trainer_module, "save_checkpoint", save_checkpoint)
        monkeypatch.setattr(RunDir, "append_metrics", append_metrics)
        monkeypatch.setattr(RunDir, "write_eval", write_eval)
        return self


def assert_same(a: Any, b: Any, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def records(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def assert_same_run(reference: Path, run: Path) -> None:
    """Every file of ``run`` equals the uninterrupted ``reference``: no file missing or left over."""
    listing = lambda p: sorted(x.name for x in p.iterdir())  # noqa: E731
    assert listing(run) == listing(reference)
    assert listing(run / "checkpoints") == listing(reference / "checkpoints")
    for ckpt in sorted((reference / "checkpoints").iterdir()):
        expected = torch.load(ckpt, weights_only=True)
        assert_same(torch.load(run / "checkpoints" / ckpt.name, weights_only=True), expected, ckpt.name)
    assert records(run) == records(reference)
    assert json.loads((run / "eval.json").read_text()) == json.loads((reference / "eval.json").read_text())
    assert (run / "config.toml").read_text() == (reference / "config.toml").read_text()


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """The uninterrupted run of each stack (trained once), with the writes it made."""
    done: dict[str, tuple[Path, list[str]]] = {}
    data = synthetic_dataset(n=256, dim=16)

    def reference(name: str) -> tuple[Path, list[str]]:
        if name not in done:
            raw, _ = STACKS[name]
            run = tmp_path_factory.mktemp(f"reference-{name}") / "run"
            with pytest.MonkeyPatch.context() as mp:
                writes = Writes().install(mp)
                run_training(raw, run, data, registry_for(name))
            done[name] = (run, writes.names)
        return done[name]

    return reference


KILL_POINTS = [
    pytest.param(
        name,
        i,
        id=f"{name}-{write}",
        marks=[pytest.mark.skipif(name == "du" and not HAVE_DU, reason="the du plugin is not installed")],
    )
    for name, (_, writes) in STACKS.items()
    for i, write in enumerate(writes, 1)
]


@pytest.mark.parametrize(("stack", "kill_at"), KILL_POINTS)
def test_every_kill_point_resumes_to_the_uninterrupted_result(stack, kill_at, references, tiny_data, tmp_path):
    raw, expected_writes = STACKS[stack]
    reference, writes = references(stack)
    assert writes == expected_writes, "the reference run no longer makes the writes this test kills"
    if stack == "du":  # the scripted course: decays after epochs 2 and 3, the best epoch is the last
        assert [r["lr"] for r in records(reference)] == [3e-3, 3e-3, 1.5e-3, 7.5e-4]
    run = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp, pytest.raises(Killed):
        Writes(kill_at).install(mp)
        run_training(raw, run, tiny_data, registry_for(stack))
    run_training(raw, run, tiny_data, registry_for(stack), resume=True)
    assert_same_run(reference, run)


@pytest.mark.parametrize("kept", [False, True], ids=["best.pt", "epoch_0002.pt"])
def test_resume_finishes_the_commit_an_older_vaecore_left_incomplete(
    kept, references, tiny_data, tmp_path, monkeypatch
):
    """Older versions wrote last.pt before best.pt and epoch_NNNN.pt: killed between them, the
    resumed run must write what is missing (the issue: eval.json reported an older model)."""
    reference, _ = references("plain")
    epoch, missing = (2, "epoch_0002.pt") if kept else (3, "best.pt")

    def old_order_commit(self, record, state, improved):
        self.run.append_metrics(record)
        save_checkpoint(self.run.last, state)
        if self.epoch == epoch:
            raise Killed(f"after last.pt of epoch {epoch}")
        if improved:
            save_checkpoint(self.run.best, state)
        if self.epoch % 2 == 0:
            save_checkpoint(self.run.epoch_checkpoint(self.epoch), state)

    with monkeypatch.context() as mp, pytest.raises(Killed):
        mp.setattr(trainer_module.Trainer, "_commit", old_order_commit)
        run_training(PLAIN, tmp_path / "run", tiny_data)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert load_checkpoint(checkpoints / "last.pt")["epoch"] == epoch
    assert not (checkpoints / missing).exists() or load_checkpoint(checkpoints / missing)["epoch"] != epoch
    run_training(PLAIN, tmp_path / "run", tiny_data, resume=True)
    assert_same_run(reference, tmp_path / "run")


def test_a_stopped_run_killed_before_its_evaluation_is_not_trained_further(tiny_data, tmp_path):
    raw = tiny_config(
        [{"name": "script", "scores": [1.0, 0.5, 0.4, 3.0, 3.0, 3.0]}],
        train={"epochs": 6, "early_stopping": 2, "monitor": "script.score", "monitor_mode": "max"},
        eval=EVAL,
    )
    registry = registry_for("plain")
    reference = tmp_path / "reference"
    run_training(raw, reference, tiny_data, registry)
    assert [r["epoch"] for r in records(reference)] == [1, 2, 3]  # stopped early
    with pytest.MonkeyPatch.context() as mp, pytest.raises(Killed):
        Writes(kill_at=8).install(mp)  # epoch 1: best, metrics, last; 2 and 3: metrics, last; eval.json
        run_training(raw, tmp_path / "run", tiny_data, registry)
    assert not (tmp_path / "run" / "eval.json").exists()
    run_training(raw, tmp_path / "run", tiny_data, registry, resume=True)
    assert_same_run(reference, tmp_path / "run")


# 2. a kill or Ctrl-C before the first checkpoint -------------------------------------------------


@pytest.fixture
def config_file(tiny_data, tmp_path):
    data = write_npz(tiny_data, tmp_path / "toy.npz")
    return write_config(tmp_path / "toy.toml", tiny_config(data={"name": "npz", "path": data}, eval=EVAL))


@pytest.mark.parametrize("again", [[], ["--resume"]], ids=["fresh", "resume"])
def test_ctrl_c_before_the_first_checkpoint_says_what_works(config_file, tmp_path, monkeypatch, capsys, again):
    run = tmp_path / "run"
    with monkeypatch.context() as mp:
        mp.setattr(trainer_module.Trainer, "validate", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
        assert main(["train", str(config_file), "--out", str(run)]) == 130
    err = capsys.readouterr().err
    assert err == (
        f"vaecore: interrupted; no epoch was checkpointed in {run} yet: "
        "run the same command again to start the run over\n"
    )
    assert (run / "config.toml").exists() and not (run / "checkpoints" / "last.pt").exists()
    assert main(["train", str(config_file), "--out", str(run), *again]) == 0
    assert [r["epoch"] for r in records(run)] == [1, 2]
    reference = tmp_path / "reference"
    assert main(["train", str(config_file), "--out", str(reference)]) == 0
    assert_same_run(reference, run)


def test_ctrl_c_after_a_checkpoint_says_to_resume(config_file, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    original, calls = trainer_module.Trainer.validate, []

    def interrupt_second_epoch(self):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self)

    with monkeypatch.context() as mp:
        mp.setattr(trainer_module.Trainer, "validate", interrupt_second_epoch)
        assert main(["train", str(config_file), "--out", str(run)]) == 130
    assert (
        capsys.readouterr().err == f"vaecore: interrupted; epoch 1 is checkpointed in {run}: continue with --resume\n"
    )
    assert main(["train", str(config_file), "--out", str(run)]) == 5
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert main(["train", str(config_file), "--out", str(run), "--resume"]) == 0


def test_a_kill_in_the_first_epoch_leaves_a_folder_that_starts_over(tiny_data, tmp_path):
    """Killed writing epoch 1's last.pt: best.pt and the metrics line exist, no committed epoch."""
    reference, run = tmp_path / "reference", tmp_path / "run"
    run_training(PLAIN, reference, tiny_data)
    with pytest.MonkeyPatch.context() as mp, pytest.raises(Killed):
        Writes(kill_at=3).install(mp)
        run_training(PLAIN, run, tiny_data)
    assert (run / "checkpoints" / "best.pt").exists() and not (run / "checkpoints" / "last.pt").exists()
    run_training(PLAIN, run, tiny_data)  # a fresh start reuses the folder
    assert_same_run(reference, run)


# 3. the lock --------------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, sys
    import torch
    from vaecore import trainer
    from vaecore.testing import run_training, synthetic_dataset

    torch.set_num_threads(1)
    save = trainer.save_checkpoint

    def save_checkpoint(path, state):
        if path.name == "last.pt" and state["epoch"] == 3:  # best.pt of the final epoch is written
            print("paused", flush=True)
            sys.stdin.readline()
        save(path, state)

    trainer.save_checkpoint = save_checkpoint
    run_training(json.loads(sys.argv[2]), sys.argv[1], synthetic_dataset(n=256, dim=16))
    """
)


def test_a_second_process_is_refused_and_a_killed_holder_leaves_no_lock(references, tiny_data, tmp_path):
    reference, _ = references("plain")
    run = tmp_path / "run"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run), json.dumps(PLAIN)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert child.stdout is not None
        output = []
        for line in child.stdout:  # its epoch reports, then the pause
            if line == "paused\n":
                break
            output.append(line)
        else:
            pytest.fail(f"the training process ended before its pause:\n{''.join(output)}")
        before = (run / "metrics.jsonl").read_bytes()
        with pytest.raises(CheckpointError) as err:
            run_training(PLAIN, run, tiny_data, resume=True)
        assert str(err.value) == (
            f"{run} is in use: another vaecore process (PID {child.pid}) is training in it; "
            "wait for it to finish or stop it, or train into another folder with --out"
        )
        with pytest.raises(CheckpointError, match=rf"in use: another vaecore process \(PID {child.pid}\)"):
            run_training(PLAIN, run, tiny_data)
        assert (run / "metrics.jsonl").read_bytes() == before
        child.send_signal(signal.SIGKILL)  # a real kill, between best.pt and last.pt of the final epoch
    finally:
        child.kill()
        child.wait()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 2
    run_training(PLAIN, run, tiny_data, resume=True)  # the lock died with its holder
    assert_same_run(reference, run)


def test_the_lock_is_held_during_training_and_released_after(tiny_data, tmp_path):
    run = RunDir(tmp_path / "run")
    with run.lock():
        with pytest.raises(CheckpointError, match=rf"PID {os.getpid()}\)"):
            run_training(PLAIN, run.path, tiny_data)
    assert not run.holds_run()
    run_training(PLAIN, run.path, tiny_data)
    with run.lock():  # released by the finished run
        pass


# 4. a torn line in metrics.jsonl ------------------------------------------------------------------


def test_a_torn_metrics_line_is_dropped_on_resume(references, tiny_data, tmp_path):
    reference, _ = references("plain")
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    epoch2 = load_checkpoint(run / "checkpoints" / "epoch_0002.pt")
    save_checkpoint(run / "checkpoints" / "last.pt", {k: v for k, v in epoch2.items() if "format" not in k})
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text("".join(lines[:2]) + lines[2][:30])  # killed writing epoch 3's line
    (run / "eval.json").unlink()
    assert RunDir(run).read_metrics() == [json.loads(x) for x in lines[:2]]
    run_training(PLAIN, run, tiny_data, resume=True)
    assert records(run) == records(reference)
    assert_same(load_checkpoint(run / "checkpoints" / "last.pt"), last, "last.pt")


# 5. a resume with a changed config ----------------------------------------------------------------


def test_a_resume_may_not_leave_the_checkpoint_undescribed(tiny_data, tmp_path):
    run = tmp_path / "run"
    run_training(tiny_config(train={"epochs": 2}, eval=EVAL), run, tiny_data)
    files = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    with pytest.raises(ConfigError) as err:
        run_training(tiny_config(train={"epochs": 1}, eval=EVAL), run, tiny_data, resume=True)
    assert err.value.problems == [
        f"train.epochs: 1 is fewer than the 2 epochs the run being resumed ({run}) has trained; "
        "resume with train.epochs >= 2, or train a new run with --out"
    ]
    with pytest.raises(ConfigError, match=r"train\.batch_size: differs from the config of the run being resumed"):
        run_training(tiny_config(train={"epochs": 3, "batch_size": 16}, eval=EVAL), run, tiny_data, resume=True)
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == files


def test_a_resume_with_more_epochs_is_recorded(tiny_data, tmp_path):
    run = tmp_path / "run"
    run_training(tiny_config(train={"epochs": 1}, eval=EVAL), run, tiny_data)
    run_training(tiny_config(train={"epochs": 2}, eval=EVAL), run, tiny_data, resume=True)
    run_training(tiny_config(train={"epochs": 3, "progress": True}, eval=EVAL), run, tiny_data, resume=True)
    text = (run / "config.toml").read_text()
    assert text.startswith(
        "# resumed after epoch 1 with train.epochs changed from 1 to 2\n"
        "# resumed after epoch 2 with train.epochs changed from 2 to 3, train.progress changed from false to true\n"
    )
    assert tomllib.loads(text)["train"]["epochs"] == 3
    assert load_checkpoint(run / "checkpoints" / "last.pt")["trainer"]["resumes"] == [
        {"epoch": 1, "changes": {"train.epochs": [1, 2]}},
        {"epoch": 2, "changes": {"train.epochs": [2, 3], "train.progress": [False, True]}},
    ]
    assert json.loads((run / "eval.json").read_text())["epoch"] == 3
    assert [r["epoch"] for r in records(run)] == [1, 2, 3]


def test_an_extended_run_killed_before_its_evaluation_leaves_no_stale_eval(tiny_data, tmp_path):
    run = tmp_path / "run"
    run_training(tiny_config(train={"epochs": 1}, eval=EVAL), run, tiny_data)
    with pytest.MonkeyPatch.context() as mp, pytest.raises(Killed):
        Writes(kill_at=1).install(mp)  # killed in epoch 2, writing best.pt
        run_training(tiny_config(train={"epochs": 2}, eval=EVAL), run, tiny_data, resume=True)
    assert not (run / "eval.json").exists(), "eval.json of the 1-epoch run would pass for the 2-epoch run's"


# checkpoint writes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_checkpoint_write_leaves_no_temporary_file(tmp_path, monkeypatch, failure):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, {"epoch": 1})
    real_fsync = os.fsync

    def fail(fd):
        raise failure

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(type(failure)):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]
    assert load_checkpoint(path)["epoch"] == 1
