"""The slurm and ray launchers against the real engines (tests/engines.py starts them): a 2x2
sweep (two learning rates x two seeds) gives the local launcher's table, a failing point is
reported while the others finish and the rerun continues the sweep, and a point killed mid-run
(``scancel`` for Slurm, its training process killed for Ray) is resumed by the rerun to the
uninterrupted result.

Run by ``nox -s slurm`` and ``nox -s ray``, which set ``VAECORE_ENGINES`` (then an engine that
cannot start fails the tests); without it these tests skip.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.engines import EngineUnavailable, ray_cluster, ray_token, slurm_cluster
from vaecore.cli import main
from vaecore.launchers.status import sweep_states
from vaecore.runs import RunDir
from vaecore.testing import synthetic_dataset, write_config, write_npz

ENGINES = {e.strip() for e in os.environ.get("VAECORE_ENGINES", "").split(",") if e.strip()}
GRID = ["--grid", "train.lr=0.001,0.003", "--seeds", "0,1"]
VARYING = ("status", "train_seconds", "train_seconds.std")
"""Columns that differ between two sweeps of the same grid: how the row came about, wall time."""
TIMING = ("train_seconds", "eval_seconds", "seconds")


def _config(root: Path, n: int, epochs: int) -> Path:
    data = write_npz(synthetic_dataset(n=n, dim=16, seed=3), root / f"data{n}.npz")
    config = {
        "data": {"name": "npz", "path": data},
        "model": {"latent_dim": 4, "encoder": {"hidden": [16]}, "decoder": {"hidden": [16]}},
        "train": {"epochs": epochs, "batch_size": 32, "threads": 1},
        "eval": {"nll_samples": 5, "probes": False},
    }
    return write_config(root / f"base{n}.toml", config)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """The 2x2 sweep's config: seconds per run."""
    return _config(tmp_path_factory.mktemp("engines"), n=256, epochs=2)


@pytest.fixture(scope="module")
def long_config(tmp_path_factory):
    """One run long enough (many epochs, each checkpointed) to be killed in the middle."""
    return _config(tmp_path_factory.mktemp("engines-long"), n=2048, epochs=40)


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _comparable(rows):
    return [{k: v for k, v in row.items() if k not in VARYING} for row in rows]


def _sweep(argv: list[str]) -> tuple[int, float]:
    start = time.monotonic()
    code = main(argv)
    return code, time.monotonic() - start


@pytest.fixture(scope="module")
def local_table(config, tmp_path_factory):
    """The 2x2 sweep with the local launcher: the table every launcher must give."""
    out = tmp_path_factory.mktemp("local") / "sweep"
    code, seconds = _sweep(["sweep", str(config), *GRID, "--jobs", "2", "--out", str(out)])
    assert code == 0
    print(f"\n2x2 sweep, local launcher (--jobs 2): {seconds:.1f} s")
    rows = _rows(out)
    assert [r["status"] for r in rows] == ["done"] * 4 + ["aggregate"] * 2
    return rows


@pytest.fixture(scope="module")
def uninterrupted(long_config, tmp_path_factory):
    """The long run trained without interruption (local launcher): what a resumed one must equal."""
    out = tmp_path_factory.mktemp("uninterrupted") / "sweep"
    assert main(["sweep", str(long_config), "--grid", "train.lr=0.001", "--out", str(out)]) == 0
    return json.loads((out / "train.lr-0.001" / "eval.json").read_text())


@contextlib.contextmanager
def _engine(name: str, start):
    """Start an engine for the module's tests; skip (or fail, when VAECORE_ENGINES asks for it)
    when it cannot run here."""
    if name not in ENGINES:
        pytest.skip(f"the {name} launcher's engine tests run under VAECORE_ENGINES={name} (nox -s {name})")
    try:
        with start() as value:
            yield value
    except EngineUnavailable as exc:
        pytest.fail(f"VAECORE_ENGINES={name}, but the engine cannot run here: {exc}")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A single-node Slurm cluster; the sweep's arguments for it."""
    pytest.importorskip("submitit")
    root = Path(tempfile.mkdtemp(prefix="vaecore-slurm-"))
    with _engine("slurm", lambda: slurm_cluster(root)) as env, pytest.MonkeyPatch.context() as env_vars:
        env_vars.setenv("SLURM_CONF", env["SLURM_CONF"])
        yield {"args": ["--launcher", "slurm"], "kill": _scancel, "name": "slurm"}
    shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def _ray_cluster_for_this_process(root: Path, auth: dict[str, str]):
    """:func:`ray_cluster`, once this process can join it: ray not imported before ``auth`` was set."""
    if "ray" in sys.modules:
        raise EngineUnavailable("ray was imported before its token was set: run these tests alone (nox -s ray)")
    pytest.importorskip("ray")
    with ray_cluster(root, auth) as address:
        yield address


@pytest.fixture(scope="module")
def ray(tmp_path_factory):
    """A local Ray cluster started by ``ray start --head`` under a token of its own; the sweep's
    arguments to join it. Ray reads the token's environment when it is first imported, so it is
    set (for this module's tests, restored after) before anything here imports ray."""
    root = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # Ray's socket paths must stay short
    auth = ray_token(root)
    with pytest.MonkeyPatch.context() as env_vars:
        for name, value in auth.items():
            env_vars.setenv(name, value)
        with _engine("ray", lambda: _ray_cluster_for_this_process(root, auth)) as address:
            args = ["--launcher", "ray", "--set", f"launcher.address={address}"]
            yield {"args": args, "kill": _kill_training, "name": "ray"}
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["slurm", "ray"])
def engine(request):
    return request.getfixturevalue(request.param)


def _scancel(out: Path, run: str) -> None:
    job = json.loads((out / "launcher.json").read_text())["jobs"][run]
    subprocess.run(["scancel", str(job)], check=True)
    # the test cluster tracks processes with proctrack/linuxproc (no cgroups in this container), so
    # the job's training process, which ignores SIGTERM (see vaecore.launchers.slurm.SHIELD),
    # escapes the kill; proctrack/cgroup on a real cluster ends every process of the job: do here
    # what it does
    _kill_training(out, run)


def _kill_training(out: Path, run: str) -> None:
    os.kill(int((out / run / ".lock").read_text().split()[0]), signal.SIGKILL)


def test_a_2x2_sweep_gives_the_local_launchers_table(engine, config, local_table, tmp_path):
    out = tmp_path / "sweep"
    code, seconds = _sweep(["sweep", str(config), *GRID, "--out", str(out), *engine["args"]])
    assert code == 0
    print(f"\n2x2 sweep, {engine['name']} launcher: {seconds:.1f} s")
    rows = _rows(out)
    assert [r["status"] for r in rows] == ["done"] * 4 + ["aggregate"] * 2
    assert _comparable(rows) == _comparable(local_table)
    assert (out / "results.md").is_file() and all((out / "logs" / f"{r['run']}.log").is_file() for r in rows[:4])
    assert json.loads((out / "launcher.json").read_text())["kind"] == engine["name"]
    assert [s.state for s in sweep_states(out)] == ["done"] * 4


def test_a_failing_point_is_reported_and_the_rerun_continues_the_sweep(engine, config, local_table, tmp_path, capsys):
    out = tmp_path / "sweep"
    bad = "train.lr-0.003__train.seed-1"
    broken = out / bad / "checkpoints" / "last.pt"  # resuming it fails in its own process
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint")
    argv = ["sweep", str(config), *GRID, "--out", str(out), *engine["args"]]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "1 run(s) failed" in err and f"{bad}.log" in err
    rows = _rows(out)
    assert [r["status"] for r in rows[:4]] == ["done", "done", "done", "failed"]
    assert rows[3]["nll"] == "" and rows[5]["n"] == "1"  # left out of its configuration's mean
    assert "checkpoint" in (out / "logs" / f"{bad}.log").read_text().lower()
    assert [s.state for s in sweep_states(out)] == ["done", "done", "done", "failed"]

    broken.unlink()  # fixed: the rerun trains only that point and reuses the others
    finished = {r["run"]: (out / r["run"] / "eval.json").read_bytes() for r in rows[:3]}
    assert main(argv) == 0
    rows = _rows(out)
    assert [r["status"] for r in rows[:4]] == ["reused", "reused", "reused", "done"]
    assert {run: (out / run / "eval.json").read_bytes() for run in finished} == finished
    assert _comparable(rows) == _comparable(local_table)


def _sweep_in_its_third_epoch(argv: list[str], run: Path) -> subprocess.Popen:
    """Start ``vaecore sweep`` in a subprocess; return it once ``run`` has logged 3 epochs and
    holds its lock."""
    sweep = subprocess.Popen([sys.executable, "-m", "vaecore.cli", *argv], stderr=subprocess.PIPE, text=True)
    metrics, lock = run / "metrics.jsonl", RunDir(run).lock()
    deadline = time.monotonic() + 180
    while not (lock.held() and metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        assert sweep.poll() is None, sweep.communicate()[1]
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.2)
    return sweep


def test_a_point_killed_mid_run_is_resumed_by_the_rerun(engine, long_config, uninterrupted, tmp_path):
    out = tmp_path / "sweep"
    run = "train.lr-0.001"
    argv = ["sweep", str(long_config), "--grid", "train.lr=0.001", "--out", str(out), *engine["args"]]
    sweep, metrics = _sweep_in_its_third_epoch(argv, out / run), out / run / "metrics.jsonl"
    engine["kill"](out, run)
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 1, err
    assert not (out / run / "eval.json").exists()  # killed before it finished
    epochs_before = len(metrics.read_text().splitlines())
    assert 3 <= epochs_before < 40
    assert _rows(out)[0]["status"] == "failed"
    assert [s.state for s in sweep_states(out)] == ["failed"]

    assert main(argv) == 0
    log = (out / "logs" / f"{run}.log").read_text()
    assert " --resume " in log.splitlines()[0]
    assert _rows(out)[0]["status"] == "done"
    resumed = json.loads((out / run / "eval.json").read_text())
    assert resumed["epoch"] == uninterrupted["epoch"]  # the best epoch, the same
    same = {k: v for k, v in resumed.items() if k not in TIMING}
    assert same == {k: v for k, v in uninterrupted.items() if k not in TIMING}


def test_a_slurm_job_at_its_time_limit_is_requeued_and_resumes(slurm, long_config, uninterrupted, tmp_path):
    """The signal Slurm sends a job before its time limit (USR2, submitit's ``--signal``), sent
    now: submitit requeues the job, the sweep waits for it, and it resumes from the last
    checkpoint to the uninterrupted result."""
    out = tmp_path / "sweep"
    run = "train.lr-0.001"
    argv = ["sweep", str(long_config), "--grid", "train.lr=0.001", "--out", str(out), *slurm["args"]]
    sweep = _sweep_in_its_third_epoch(argv, out / run)
    job = str(json.loads((out / "launcher.json").read_text())["jobs"][run])
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    # Slurm holds a requeued job for a while (reason BeginTime); release it now to keep the test short
    deadline = time.monotonic() + 60
    while sweep.poll() is None and time.monotonic() < deadline:
        reason = subprocess.run(["squeue", "-h", "-j", job, "-o", "%r"], capture_output=True, text=True).stdout
        if "BeginTime" in reason:
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
            break
        time.sleep(0.5)
    _, err = sweep.communicate(timeout=240)
    assert sweep.returncode == 0, err
    assert _rows(out)[0]["status"] == "done"
    log = (out / "logs" / f"{run}.log").read_text()
    assert "the Slurm job is requeued" in log
    commands = [line for line in log.splitlines() if " -m vaecore.cli train " in line]
    assert len(commands) == 2 and " --resume " not in commands[0] and " --resume " in commands[1]
    resumed = json.loads((out / run / "eval.json").read_text())
    assert {k: v for k, v in resumed.items() if k not in TIMING} == {
        k: v for k, v in uninterrupted.items() if k not in TIMING
    }
