"""The command line: a real run, and one clear line with a non-zero exit for each mistake."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from vaecore.cli import main
from vaecore.testing import write_config


@pytest.fixture
def config_file(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.random((200, 10)) < 0.3).astype(np.uint8)
    np.savez(tmp_path / "toy.npz", x_train=x[:150], x_valid=x[150:175], x_test=x[175:])
    config = {
        "data": {"name": "npz", "path": tmp_path / "toy.npz"},
        "model": {"latent_dim": 2, "encoder": {"hidden": [16]}, "decoder": {"hidden": [16]}},
        "train": {"epochs": 2, "batch_size": 20, "progress": False},
    }
    return write_config(tmp_path / "toy.toml", config)


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vaecore.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_train_writes_run_and_prints_table(config_file, tmp_path, capsys):
    assert main(["train", str(config_file), "--out", str(tmp_path / "run"), "--set", "train.lr=0.01"]) == 0
    out = capsys.readouterr().out
    assert "metric" in out and "elbo" in out and f"run folder: {tmp_path / 'run'}" in out
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["epoch"] in (1, 2)
    assert "lr = 0.01" in (tmp_path / "run" / "config.toml").read_text()


def test_default_run_folder_is_named_after_the_config(config_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(config_file), "--set", "train.epochs=1"]) == 0
    assert (tmp_path / "runs" / "toy" / "eval.json").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--set", "train.epochs=0"], 2, "vaecore: error: invalid config: train.epochs: must be > 0, got 0"),
        (["--set", "plugins=[{name='zzz'}]"], 2, "plugins[0].name: unknown plugin 'zzz'; installed plugins:"),
        (["--set", "data.path='/nonexistent.npz'"], 4, "vaecore: error: dataset file not found: /nonexistent.npz"),
        (["--set", "model.likelihood.kind='gaussian'", "--set", "train.lr=-1"], 2, "train.lr: must be > 0, got -1"),
        (["--resume"], 5, "vaecore: error: nothing to resume in"),
    ],
)
def test_bad_input_exits_non_zero_with_one_clear_message(config_file, tmp_path, capsys, args, code, message):
    assert main(["train", str(config_file), "--out", str(tmp_path / "run"), *args]) == code
    err = capsys.readouterr().err
    assert message in err and err.startswith("vaecore: error: ")


def test_real_process_exit_code_without_traceback(tmp_path):
    result = run_cli("train", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert result.stderr == f"vaecore: error: invalid config: config file not found: {tmp_path / 'nope.toml'}\n"


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="config file not found"):
        main(["--debug", "train", str(tmp_path / "nope.toml")])


def test_data_that_does_not_fit_the_likelihood(tmp_path, capsys):
    np.savez(tmp_path / "real.npz", x_train=np.linspace(-3, 3, 600).reshape(60, 10), x_test=np.zeros((5, 10)))
    cfg = write_config(tmp_path / "c.toml", {"data": {"name": "npz", "path": tmp_path / "real.npz"}})
    assert main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 4
    assert (
        "does not fit model.likelihood: the bernoulli likelihood needs inputs in [0, 1], the data spans [-3, 3]"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "run").exists()


def test_interrupted_run_resumes(config_file, tmp_path, monkeypatch, capsys):
    from vaecore import trainer as trainer_module

    original = trainer_module.Trainer.validate
    calls = {"n": 0}

    def interrupt_second_epoch(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(trainer_module.Trainer, "validate", interrupt_second_epoch)
    assert main(["train", str(config_file), "--out", str(tmp_path / "run")]) == 130
    assert "continue with --resume" in capsys.readouterr().err
    monkeypatch.setattr(trainer_module.Trainer, "validate", original)
    assert main(["train", str(config_file), "--out", str(tmp_path / "run"), "--resume"]) == 0
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


@pytest.mark.parametrize("args", [[], ["train"], ["plugins"]])
def test_help_everywhere(args, capsys):
    with pytest.raises(SystemExit) as done:
        main([*args, "--help"])
    assert done.value.code == 0 and "usage: vaecore" in capsys.readouterr().out


def test_eval_writes_to_another_file(config_file, tmp_path, capsys):
    assert main(["train", str(config_file), "--out", str(tmp_path / "run"), "--set", "train.epochs=1"]) == 0
    before = (tmp_path / "run" / "eval.json").read_text()
    assert main(["eval", str(tmp_path / "run"), "--nll-samples", "3", "--out", str(tmp_path / "k3.json")]) == 0
    assert json.loads((tmp_path / "k3.json").read_text())["nll_samples"] == 3
    assert (tmp_path / "run" / "eval.json").read_text() == before
