"""A run folder holds what loading it needs: moved elsewhere with its data deleted, it still loads
and runs every analysis command (on its stored test sample); it records its provenance."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch

import vaecore
from vaecore import __version__, load_run
from vaecore.cli import main
from vaecore.config import load_config
from vaecore.testing import synthetic_dataset, tiny_config, write_config


@pytest.fixture
def trained(tmp_path, monkeypatch):
    """A one-epoch run on an .npz named by a relative path, trained from tmp_path."""
    data = synthetic_dataset(n=256)
    np.savez(
        tmp_path / "stripes.npz",
        **{f"{k}_{s}": getattr(data.split(s), k).numpy() for s in ("train", "valid", "test") for k in ("x", "y")},
    )
    monkeypatch.chdir(tmp_path)
    raw = tiny_config(train={"epochs": 1}, eval={"nll_samples": 5}, data={"name": "npz", "path": "stripes.npz"})
    write_config(tmp_path / "run.toml", raw)
    assert main(["train", "run.toml", "--out", "first/run"]) == 0
    return tmp_path / "first" / "run", data


def test_the_run_records_its_sizes_versions_and_absolute_data_path(trained, tmp_path):
    run, data = trained
    config = load_config(run / "config.toml")
    assert config.data.path == str(tmp_path / "stripes.npz")  # absolute, though the config said stripes.npz
    recorded = json.loads((run / "run.json").read_text())
    assert recorded["input_shape"] == [16] and recorded["n_train"] == len(data.train)
    assert recorded["rows"] == {"train": len(data.train), "valid": len(data.valid), "test": len(data.test)}
    versions = recorded["versions"]
    assert versions["vaecore"] == __version__ and versions["torch"] == torch.__version__
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))
    assert recorded["git"] is None or len(recorded["git"]["commit"]) == 40
    with np.load(run / "data_sample.npz") as sample:
        rows = sample["rows"]
        assert len(rows) == len(data.test)  # a small test split is kept whole
        np.testing.assert_array_equal(sample["x"], data.test.x[rows].numpy())


def test_a_moved_run_without_its_data_loads_and_runs_every_analysis_command(trained, tmp_path, capsys):
    run, _ = trained
    x = torch.rand(3, 16).round()
    before = load_run(run)
    with torch.no_grad():
        expected = before.model.encode(x, before.model.context(training=False))[0].mean
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(str(run), moved)
    (tmp_path / "stripes.npz").unlink()
    loaded = load_run(moved)
    assert loaded.data_source == "sample" and len(loaded.dataset.test) > 0
    assert "using the run's stored sample of 64 test inputs" in capsys.readouterr().err
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.encode(x, loaded.model.context(training=False))[0].mean, expected)
    commands = [
        ["sample", "--n", "4"],
        ["traverse", "--input", "0", "--dims", "2", "--steps", "3"],
        ["interpolate", "--from", "0", "--to", "1", "--path", "euclidean"],
        ["interpolate", "--from", "0", "--to", "1", "--path", "fisher-rao"],
        ["analyze", "--probe-train", "32"],
        ["lso", "--n", "2", "--inits", "2", "--iterations", "5"],
    ]
    for command in commands:
        assert main([command[0], str(moved), *command[1:]]) == 0, command
    written = {p.name for p in (moved / "analysis").rglob("*.json")}
    assert {"sample.json", "traverse.json", "analyze.json", "lso.json"} <= written
    assert {"interpolate_euclidean.json", "interpolate_fisher-rao.json"} <= written  # one file per path
    result = json.loads((moved / "analysis" / "sample" / "sample.json").read_text())
    assert result["data"] == "sample"
    # numbers that need the data itself are refused, not computed on the sample
    capsys.readouterr()
    assert main(["eval", str(moved)]) == 4
    assert "dataset file not found: " + str(tmp_path / "stripes.npz") in capsys.readouterr().err


def test_export_is_weights_only_and_rebuilds_the_model_without_the_run(trained, tmp_path, capsys):
    run, _ = trained
    assert main(["export", str(run), "--out", str(tmp_path / "model.pt")]) == 0
    assert f"wrote {tmp_path / 'model.pt'} (epoch 1 of " in capsys.readouterr().out
    content = torch.load(tmp_path / "model.pt", weights_only=True)  # nothing but tensors and plain data
    assert content["format"] == "vaecore-export-1" and content["input_shape"] == [16]
    reference = load_run(run).model
    shutil.rmtree(run)
    (tmp_path / "stripes.npz").unlink()
    model = vaecore.load_exported(tmp_path / "model.pt")
    x = torch.rand(5, 16).round()
    with torch.no_grad():
        got = model.encode(x, model.context(training=False))[0].mean
        want = reference.encode(x, reference.context(training=False))[0].mean
        torch.testing.assert_close(got, want)
        assert model.sample_prior(3).shape == (3, 16)
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(vaecore.CheckpointError, match="junk.pt: not a vaecore export"):
        vaecore.load_exported(tmp_path / "junk.pt")
