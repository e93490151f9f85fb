"""The analysis commands on a run folder from a short training on MNIST with labels."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import vaecore
from vaecore.analysis import commands
from vaecore.cli import main
from vaecore.testing import shared_data_dir, write_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = shared_data_dir()
    if root is None:
        pytest.skip("shared/data is not beside this checkout")
    tmp = tmp_path_factory.mktemp("analysis")
    config = {
        "data": {"name": "mnist", "root": root, "train_size": 800, "valid_size": 200, "test_size": 200},
        "model": {"latent_dim": 2, "encoder": {"hidden": [64]}, "decoder": {"hidden": [64]}},
        "train": {"epochs": 2, "batch_size": 50, "lr": 3e-3, "keep_every": 1, "progress": False},
        "eval": {"nll_samples": 10},
    }
    cfg = write_config(tmp / "mnist.toml", config)
    assert main(["train", str(cfg), "--out", str(tmp / "run")]) == 0
    return tmp / "run"


def result_of(run, command, name=None):
    return json.loads((run / "analysis" / command / f"{name or command}.json").read_text())


def test_sample(run):
    assert main(["sample", str(run), "--n", "16"]) == 0
    result = result_of(run, "sample")
    assert result["figures"] == ["samples.png", "reconstructions.png"]
    assert len(result["samples"]) == 16 and len(result["samples"][0]) == 784
    assert all(0.0 <= v <= 1.0 for v in result["samples"][0])
    assert (run / "analysis" / "sample" / "samples.png").stat().st_size > 1000


def test_traverse_orders_dimensions_by_activity(run):
    assert main(["traverse", str(run), "--dims", "2", "--steps", "5", "--radius", "3"]) == 0
    result = result_of(run, "traverse")
    activity = result["activity"]
    assert result["order"] == sorted(range(2), key=lambda d: -activity[d])
    assert result["values"] == [-3.0, -1.5, 0.0, 1.5, 3.0]
    assert all(result["direction"][d] == 0 for d in result["zero_dims"])
    assert {"traverse.png", "random_direction.png"} <= set(result["figures"])


@pytest.mark.parametrize("path", ["fisher-rao", "euclidean"])
def test_interpolate(run, path):
    assert main(["interpolate", str(run), "--from", "0", "--to", "1", "--path", path, "--steps", "6"]) == 0
    result = result_of(run, "interpolate", f"interpolate_{path}")
    assert result["path"] == path and len(result["mu"]) == 6
    lengths = result["fisher_rao_length"]
    assert lengths["fisher-rao"] == pytest.approx(result["fisher_rao_distance"], rel=1e-4)
    assert lengths["fisher-rao"] <= lengths["euclidean"] + 1e-9


def test_interpolate_refuses_bad_indices(run, capsys):
    assert main(["interpolate", str(run), "--from", "0", "--to", "5000"]) == 1
    assert "--to 5000: the test split has 200 inputs (0 to 199)" in capsys.readouterr().err


def test_analyze(run):
    assert main(["analyze", str(run), "--probe-train", "400"]) == 0
    result = result_of(run, "analyze")
    assert len(result["activity"]) == 2 and result["active_units"] == sum(a > 0.01 for a in result["activity"])
    assert result["pca_eigenvalues"] == sorted(result["pca_eigenvalues"], reverse=True)
    assert [p["epoch"] for p in result["probe_over_epochs"]] == [1, 2]
    assert all(0.1 < p["accuracy"] <= 1.0 for p in result["probe_over_epochs"])
    assert {"activity.png", "pca.png", "latent2d.png", "probe_epochs.png"} == set(result["figures"])


def test_lso_encoder_init_starts_closer(run):
    assert main(["lso", str(run), "--n", "4", "--inits", "2", "--iterations", "60", "--thresholds", "5", "1"]) == 0
    result = result_of(run, "lso")
    steps = result["iterations_to_converge"]
    assert set(steps["encoder"]) == {"5.0", "1.0"}
    assert steps["encoder"]["5.0"] <= min(r["5.0"] for r in steps["random"])
    assert result["spread"]["std_across_inits"] >= 0


def test_missing_run_folder(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "none")]) == 5
    assert "is not a run folder" in capsys.readouterr().err


def test_python_api_returns_the_figures_it_writes(run, tmp_path):
    """The analysis functions return their figures (matplotlib Figures a notebook shows) beside
    the numbers, write into a folder they create, and leave pyplot alone (a notebook's backend,
    its list of open figures)."""
    script = f"""
import json, sys
import vaecore, vaecore.analysis as analysis
loaded = vaecore.load_run({str(run)!r})
result = analysis.sample(loaded, {str(tmp_path / "new" / "folder")!r}, n=4)
print(json.dumps({{
    "files": result["figures"],
    "figures": {{k: type(v).__module__ + "." + type(v).__name__ for k, v in result.figures.items()}},
    "axes": len(result.figures["samples"].axes),
    "title": result.figures["samples"].get_suptitle(),
    "json": len(json.dumps(result)) > 0,
}}))
import matplotlib, matplotlib.pyplot as plt
print(json.dumps({{"backend": matplotlib.get_backend(), "pyplot_figures": plt.get_fignums()}}))
"""
    import os
    import subprocess
    import sys

    env = {**os.environ, "MPLBACKEND": "pdf"}  # the user's backend, e.g. a notebook's
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    seen, plt = (json.loads(line) for line in done.stdout.splitlines()[-2:])
    assert plt == {"backend": "pdf", "pyplot_figures": []}
    assert seen["files"] == ["samples.png", "reconstructions.png"]
    assert seen["figures"] == {"samples": "matplotlib.figure.Figure", "reconstructions": "matplotlib.figure.Figure"}
    assert seen["axes"] == 4 and seen["json"]
    assert seen["title"] == "4 prior samples (decoder means)\nrun run, best.pt (epoch 2)"  # as from the CLI
    assert (tmp_path / "new" / "folder" / "samples.png").is_file()


def test_curves_of_a_trained_run(run):
    assert main(["curves", str(run), "--terms", "loss"]) == 0
    result = result_of(run, "curves")
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert result["series"]["loss"][f"{run.name}/valid"]["y"] == [r["valid.loss"] for r in logged]


def test_lso_fits_the_exact_log_likelihood_of_an_autoregressive_decoder(tmp_path):
    """With a PixelCNN decoder the LSO loss is -log p(x|z) teacher-forced on the held-out image
    itself (not on a pixel-by-pixel sample from p(x|z)): after one step from the encoder's mean
    it equals the Bernoulli negative log-likelihood of the decoder's logits on x, computed here
    with torch's own binary cross-entropy."""
    root = shared_data_dir()
    if root is None:
        pytest.skip("shared/data is not beside this checkout")
    config = {
        "data": {"name": "binarized_mnist", "root": root, "train_size": 100, "valid_size": 50, "test_size": 50},
        "model": {
            "latent_dim": 4,
            "encoder": {"kind": "conv", "channels": [4, 8]},
            "decoder": {"kind": "pixelcnn", "kernel_sizes": [5, 3], "width": 8, "z_channels": 2},
            "likelihood": {"kind": "bernoulli"},
        },
        "train": {"epochs": 1, "batch_size": 50, "progress": False},
        "eval": {"nll_samples": 2},
    }
    cfg = write_config(tmp_path / "pixelcnn.toml", config)
    assert main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 0
    loaded = vaecore.load_run(tmp_path / "run")
    result = commands.lso(loaded, tmp_path / "lso", n=6, inits=2, iterations=1)
    model = loaded.model
    x = loaded.dataset.test.inputs(torch.tensor(result["inputs"]))
    with torch.no_grad():
        mean = model.encode(x, model.context(training=False))[0].mean
        logits = model.decoder(mean, x).reshape(x.shape)
        exact = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    assert result["final_loss"]["encoder"] == pytest.approx(float(exact.mean()), rel=1e-5)
