"""Two gloo processes under torchrun against one process with the same global batch.

The two runs share the initial parameters (DDP broadcasts rank 0's), the data order (every
process draws the same permutation) and the global batch; they differ only in the Monte Carlo
noise of the posterior samples (each process draws its own stream) and in float summation order.
So the tolerance is measured, not guessed: two single-process runs that differ only in their noise
stream give the noise floor, and the distributed trajectory must stay within 3x that floor (plus
1e-4 relative for summation order) of the single-process one, epoch by epoch.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vaecore.checkpoint import load_checkpoint
from vaecore.config import load_config
from vaecore.testing import tiny_config, write_config
from vaecore.trainer import Trainer


def config_file(tmp_path, epochs):
    data = tmp_path / "data.npz"
    if not data.exists():
        rng = np.random.default_rng(0)
        protos = rng.random((5, 24)) < 0.4
        labels = rng.integers(0, 5, 840)
        x = (protos[labels] ^ (rng.random((840, 24)) < 0.1)).astype(np.uint8)
        np.savez(data, x_train=x[:600], x_valid=x[600:720], x_test=x[720:])
    config = tiny_config(
        data={"name": "npz", "path": data},
        train={"epochs": epochs, "batch_size": 60, "lr": 3e-3, "eval_batch_size": 100},
        eval={"nll_samples": 20},
    )
    return write_config(tmp_path / f"cfg{epochs}.toml", config)


def torchrun(config, out, *extra):
    # --standalone: torchrun picks and binds a free port itself (no window between choosing and binding)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "vaecore.cli", "train", str(config), "--out", str(out), *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def losses(run):
    return np.array([json.loads(line)["train.loss"] for line in (run / "metrics.jsonl").read_text().splitlines()])


def single_process(config_path, out, noise_seed=None):
    trainer = Trainer(load_config(config_path), out)
    if noise_seed is not None:
        torch.manual_seed(noise_seed)  # after initialisation: only the posterior noise changes
    trainer.fit()
    return losses(out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    cfg3 = config_file(tmp, 3)
    torchrun(cfg3, tmp / "ddp")
    return tmp, cfg3


def test_two_processes_follow_the_single_process_trajectory(runs):
    tmp, cfg = runs
    ddp = losses(tmp / "ddp")
    single = single_process(cfg, tmp / "single")
    other_noise = single_process(cfg, tmp / "single_noise", noise_seed=12345)
    floor = np.abs(single - other_noise).max()
    gap = np.abs(ddp - single).max()
    assert len(ddp) == len(single) == 3
    assert gap <= 3 * floor + 1e-4 * np.abs(single).max(), (ddp, single, other_noise)
    assert ddp[-1] < ddp[0]  # it trained


def test_distributed_run_folder_written_once_with_synced_eval(runs):
    tmp, _ = runs
    run = tmp / "ddp"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert len(state["rng"]["torch"]) == 2 and not torch.equal(state["rng"]["torch"][0], state["rng"]["torch"][1])
    results = json.loads((run / "eval.json").read_text())
    assert results["nll"] > 0 and results["au"] >= 0 and len(results["activity"]) == 4


def test_resumed_distributed_run_continues_exactly(runs):
    tmp, cfg3 = runs
    cfg1 = config_file(tmp, 1)
    torchrun(cfg1, tmp / "resumed")
    torchrun(cfg3, tmp / "resumed", "--resume")
    full = load_checkpoint(tmp / "ddp" / "checkpoints" / "last.pt")["model"]
    resumed = load_checkpoint(tmp / "resumed" / "checkpoints" / "last.pt")["model"]
    for key, value in full.items():
        assert torch.equal(value, resumed[key]), key
    assert np.array_equal(losses(tmp / "ddp"), losses(tmp / "resumed"))


def test_resume_with_another_process_count_is_refused(runs, tmp_path):
    tmp, cfg3 = runs
    with pytest.raises(
        Exception, match=r"written by 2 process\(es\); resume it with the same number \(this run has 1\)"
    ):
        Trainer(load_config(cfg3), tmp / "ddp").fit(resume=True)
