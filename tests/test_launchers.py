"""``vaecore sweep --launcher``: choosing a launcher and its ``[launcher]`` options (each mistake one
line with its path, before anything runs), the message when an engine's package is missing,
``--status`` on a sweep folder, and Ctrl-C on the local launcher. The engines themselves are
tested in test_launcher_engines.py (``nox -s slurm ray``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from vaecore.cli import main
from vaecore.errors import ConfigError
from vaecore.launchers import make_launcher
from vaecore.launchers.local import LocalLauncher
from vaecore.launchers.status import sweep_states
from vaecore.runs import RunDir


@pytest.fixture(scope="module")
def config(tiny_sweep_config):
    return tiny_sweep_config


def _refused(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("vaecore: error: "), err
    return err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--launcher", "pbs"], "--launcher pbs: unknown launcher 'pbs'; choose one of: local, slurm, ray"),
        (["--set", "launcher.kind=pbs"], "launcher.kind: unknown launcher 'pbs'; choose one of: local, slurm, ray"),
        (["--set", "launcher.jobs=0"], "launcher.jobs: must be > 0, got 0"),
        (["--set", "launcher.job=2"], "launcher.job: unknown key (expected one of: jobs)"),
        (["--set", "launcher=3"], "launcher: expected a table, got 3"),
        (["--jobs", "0"], "--jobs: must be >= 1, got 0"),
        (["--grid", "launcher.jobs=1,2"], "--grid launcher.jobs: the launcher is the same for the whole sweep"),
    ],
)
def test_a_bad_launcher_or_option_is_one_line_and_nothing_runs(config, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    err = _refused(capsys, ["sweep", str(config), "--grid", "train.lr=0.001", "--out", str(out), *args])
    assert message in err
    assert not out.exists()


def test_the_options_of_an_engine_are_validated_by_its_class(monkeypatch):
    # the option classes import without the engines' packages; only the package check needs them
    monkeypatch.setattr("vaecore.launchers.require", lambda kind, where: None)
    with pytest.raises(ConfigError) as info:
        make_launcher({"kind": "slurm", "time": 0, "cpus_per_task": 1.5, "queue": "x", "sbatch": {"qos": "a"}})
    assert info.value.problems == [
        "launcher.queue: unknown key (expected one of: array_parallelism, cpus_per_task, gpus_per_node, "
        "job_name, max_requeues, mem_gb, partition, sbatch, time)",
        "launcher.time: must be > 0, got 0",
        "launcher.cpus_per_task: expected an integer, got 1.5",
    ]
    with pytest.raises(ConfigError, match=r"launcher.num_gpus: must be >= 0, got -1"):
        make_launcher({"kind": "ray", "num_gpus": -1})
    ray = make_launcher({"kind": "ray", "address": "10.0.0.1:6379", "num_cpus": 2, "resources": {"big": 1.0}})
    assert (ray.options.address, ray.options.num_cpus, ray.options.resources) == ("10.0.0.1:6379", 2.0, {"big": 1.0})
    assert ray.threads(4) == 2
    # --launcher replaces the table's choice, and the options that were for it
    assert make_launcher({"kind": "slurm", "partition": "gpu"}, "ray").kind == "ray"
    assert make_launcher({"kind": "slurm", "partition": "gpu"}).options.partition == "gpu"
    with pytest.raises(ConfigError, match=r"--jobs: only the local launcher"):
        make_launcher(None, "slurm", jobs=2)
    local = make_launcher(None, jobs=3)
    assert isinstance(local, LocalLauncher) and local.options.jobs == 3


@pytest.mark.parametrize(("kind", "package", "extra"), [("slurm", "submitit", "slurm"), ("ray", "ray", "ray")])
def test_a_missing_engine_package_is_one_line_naming_the_extra(
    config, tmp_path, capsys, monkeypatch, kind, package, extra
):
    monkeypatch.setitem(sys.modules, package, None)  # import fails, as without the package
    out = tmp_path / "out"
    err = _refused(capsys, ["sweep", str(config), "--grid", "train.lr=0.001", "--out", str(out), "--launcher", kind])
    assert f"--launcher {kind}: the {kind} launcher needs the package '{package}', which is not installed" in err
    assert f"pip install 'vaecore[{extra}]'" in err
    assert not out.exists()
    err = _refused(
        capsys, ["sweep", str(config), "--grid", "train.lr=0.001", "--out", str(out), "--set", f"launcher.kind={kind}"]
    )
    assert f"launcher.kind: the {kind} launcher needs the package '{package}'" in err


def test_status_names_each_point_pending_running_done_or_failed(config, tmp_path, capsys):
    out = tmp_path / "status"
    broken = out / "train.lr-0.003" / "checkpoints" / "last.pt"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint")
    argv = ["sweep", str(config), "--grid", "train.lr=0.001,0.003", "--out", str(out)]
    assert main(argv) == 1
    capsys.readouterr()
    # a third point as a sweep that has not started it yet records it, and one training now
    sweep = json.loads((out / "sweep.json").read_text())
    sweep["runs"] = {**sweep["runs"], "train.lr-0.01": ["train.lr=0.01"], "train.lr-0.02": ["train.lr=0.02"]}
    (out / "sweep.json").write_text(json.dumps(sweep))
    with RunDir(out / "train.lr-0.02").lock():
        assert [(s.run, s.state) for s in sweep_states(out)] == [
            ("train.lr-0.001", "done"),
            ("train.lr-0.003", "failed"),
            ("train.lr-0.01", "pending"),
            ("train.lr-0.02", "running"),
        ]
        assert main(["sweep", "--status", str(out)]) == 0
    table = capsys.readouterr().out
    assert f"| train.lr-0.003 | failed | {out / 'logs' / 'train.lr-0.003.log'} |" in table
    assert table.rstrip().endswith("1 pending, 1 running, 1 done, 1 failed")
    # while the sweep's process lives, a submitted point that has not started is pending
    record = json.loads((out / "launcher.json").read_text())
    assert record["kind"] == "local" and record["jobs"] == {"train.lr-0.001": None, "train.lr-0.003": None}
    (out / "logs" / "train.lr-0.003.log").unlink()
    assert {s.run: s.state for s in sweep_states(out)}["train.lr-0.003"] == "pending"

    assert main(["sweep", "--status", str(tmp_path)]) == 5
    assert f"--status {tmp_path}: not a sweep folder" in capsys.readouterr().err
    assert main(["sweep"]) == 2
    assert "give the CONFIG to sweep (or --status OUT" in capsys.readouterr().err


def test_ctrl_c_stops_the_local_sweeps_processes(config, tmp_path):
    """SIGINT to the sweep alone (not its process group): the running training stops, saving its
    state, nothing else starts, and the sweep exits 130."""
    out = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "vaecore.cli", "sweep", str(config), "--grid", "train.lr=0.001,0.002,0.003"]
    cmd += ["--out", str(out), "--set", "train.epochs=100000", "--set", "eval.nll_samples=1"]
    sweep = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lock = RunDir(out / "train.lr-0.001").lock()
    deadline = time.monotonic() + 120
    while not (lock.held() and (out / "train.lr-0.001" / "checkpoints" / "last.pt").is_file()):
        assert sweep.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    holder = int(lock.path.read_text().split()[0])
    os.kill(sweep.pid, signal.SIGINT)
    _, err = sweep.communicate(timeout=60)
    assert sweep.returncode == 130, err
    with pytest.raises(ProcessLookupError):
        os.kill(holder, 0)  # the training process is gone
    assert not lock.held()
    assert not (out / "train.lr-0.002").exists() and not (out / "train.lr-0.003").exists()
    assert "interrupted" in (out / "logs" / "train.lr-0.001.log").read_text().lower()
