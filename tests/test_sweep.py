"""``vaecore sweep``: grid parsing, run naming, the gathered table, skipping finished runs."""

from __future__ import annotations

import csv
import json

import pytest
import tomllib

from vaecore.cli import main
from vaecore.errors import ConfigError
from vaecore.sweep import expand, parse_grid, split_values, to_csv, to_markdown
from vaecore.testing import synthetic_dataset, write_config, write_npz


def test_values_split_at_top_level_commas():
    assert split_values("1e-3,3e-4") == ["1e-3", "3e-4"]
    assert split_values("[32, 32],[64]") == ["[32, 32]", "[64]"]
    assert split_values('"a,b",c') == ['"a,b"', "c"]
    assert split_values("{ start = 0.1, epochs = 2 },{ start = 1.0 }") == [
        "{ start = 0.1, epochs = 2 }",
        "{ start = 1.0 }",
    ]


def test_grid_problems_are_reported_together():
    with pytest.raises(ConfigError) as info:
        parse_grid(["train.lr", "model.latent_dim=2,,4", "train.seed=1,1", "a=1", "a=2"])
    assert info.value.problems == [
        "--grid train.lr: expected key=v1,v2,...",
        "--grid model.latent_dim: empty value in '2,,4'",
        "--grid train.seed: a value is listed twice in '1,1'",
        "--grid a: given twice; list all its values in one --grid",
    ]


def test_expand_is_the_product_first_key_slowest():
    specs = expand(parse_grid(["train.lr=1e-3,3e-4", "model.encoder.hidden=[32],[16, 16]"]))
    assert [s.name for s in specs] == [
        "train.lr-1e-3__model.encoder.hidden-32",
        "train.lr-1e-3__model.encoder.hidden-16_16",
        "train.lr-3e-4__model.encoder.hidden-32",
        "train.lr-3e-4__model.encoder.hidden-16_16",
    ]
    assert specs[1].overrides == ["train.lr=1e-3", "model.encoder.hidden=[16, 16]"]


def test_tables():
    rows = [
        {"run": "a", "k": "1", "status": "done", "epoch": 2, "nll": 12.3456789, "au": 3},
        {"run": "b", "k": "2", "status": "failed", "epoch": ""},
    ]
    columns = ["run", "k", "status", "epoch", "nll", "au"]
    assert to_markdown(rows, columns).splitlines() == [
        "| run | k | status | epoch | nll | au |",
        "| --- | --- | --- | --- | --- | --- |",
        "| a | 1 | done | 2 | 12.3457 | 3 |",
        "| b | 2 | failed |  |  |  |",
    ]
    assert to_csv(rows, columns).splitlines() == [
        "run,k,status,epoch,nll,au",
        "a,1,done,2,12.3456789,3",
        "b,2,failed,,,",
    ]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    data = write_npz(synthetic_dataset(n=128, dim=16), root / "tiny.npz")
    config = {
        "data": {"name": "npz", "path": data},
        "model": {"latent_dim": 4, "encoder": {"hidden": [16]}, "decoder": {"hidden": [16]}},
        "train": {"epochs": 1, "batch_size": 32},
        "eval": {"nll_samples": 5, "probes": False},
    }
    return write_config(root / "base.toml", config)


def test_a_bad_grid_value_stops_before_any_run(config, tmp_path, capsys):
    out = tmp_path / "bad"
    code = main(["sweep", str(config), "--grid", "train.lr=-1,1e-3", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "train.lr--1: train.lr: must be > 0, got -1" in err
    assert not out.exists()


def test_a_2x2_sweep_gathers_four_rows_and_skips_finished_runs(config, tmp_path, capsys):
    out = tmp_path / "grid"
    argv = [
        "sweep",
        str(config),
        "--grid",
        "train.lr=0.001,0.003",
        "--grid",
        "model.latent_dim=2,3",
        "--jobs",
        "2",
        "--out",
        str(out),
        "--set",
        "train.seed=7",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out

    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4
    columns = list(rows[0])
    assert columns[:5] == ["run", "train.lr", "model.latent_dim", "status", "epoch"]
    assert {"elbo", "rec", "kl", "nll", "au"} <= set(columns)
    assert [(r["train.lr"], r["model.latent_dim"]) for r in rows] == [
        ("0.001", "2"),
        ("0.001", "3"),
        ("0.003", "2"),
        ("0.003", "3"),
    ]
    assert {r["status"] for r in rows} == {"done"}
    for r in rows:
        run_config = tomllib.loads((out / r["run"] / "config.toml").read_text())
        assert run_config["train"]["lr"] == float(r["train.lr"])
        assert run_config["model"]["latent_dim"] == int(r["model.latent_dim"])
        assert run_config["train"]["seed"] == 7  # --set applies to every run
        results = json.loads((out / r["run"] / "eval.json").read_text())
        assert float(r["nll"]) == pytest.approx(results["nll"])
        assert int(r["epoch"]) == results["epoch"] == 1
    markdown = (out / "results.md").read_text().splitlines()
    assert len(markdown) == 2 + 4 and markdown[0].startswith("| run | train.lr | model.latent_dim | status | epoch |")
    assert "\n".join(markdown) in printed

    # re-run: every finished run is skipped; a run whose evaluation is missing is resumed
    first = (out / rows[0]["run"] / "eval.json").read_text()
    (out / rows[3]["run"] / "eval.json").unlink()
    assert main(argv) == 0
    with open(out / "results.csv", newline="") as fh:
        again = list(csv.DictReader(fh))
    assert [r["status"] for r in again] == ["skipped", "skipped", "skipped", "done"]
    assert (out / rows[0]["run"] / "eval.json").read_text() == first
    assert again[3]["nll"] == rows[3]["nll"]  # resumed from its checkpoint: the same evaluation
