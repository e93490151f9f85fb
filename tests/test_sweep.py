"""``vaecore sweep``: grid and seed parsing, run naming, the gathered table with its aggregate over
seeds, reusing finished runs only of the same config, and the sweep folder's errors."""

from __future__ import annotations

import csv
import json
import math
import statistics

import pytest
import tomllib

from vaecore.cli import main
from vaecore.config import dump_config, load_config
from vaecore.errors import ConfigError
from vaecore.sweep import aggregate, expand, parse_grid, split_values, stale_reason, to_csv, to_markdown


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
def config(tiny_sweep_config):
    return tiny_sweep_config


def test_a_bad_grid_value_stops_before_any_run(config, tmp_path, capsys):
    out = tmp_path / "bad"
    code = main(["sweep", str(config), "--grid", "train.lr=-1,1e-3", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "train.lr--1: train.lr: must be > 0, got -1" in err
    assert not out.exists()


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_seeds_are_the_last_grid_key():
    grid = parse_grid(["train.lr=1e-3,3e-4"], seeds="0,1,2")
    assert grid == [("train.lr", ["1e-3", "3e-4"]), ("train.seed", ["0", "1", "2"])]
    names = [s.name for s in expand(grid)]
    assert names[:3] == [f"train.lr-1e-3__train.seed-{i}" for i in range(3)]
    assert expand(grid)[0].group == expand(grid)[2].group == "train.lr-1e-3__train.seed-*"
    assert parse_grid([], seeds="5") == [("train.seed", ["5"])]  # seeds alone are a sweep


def test_seed_problems_are_reported_together():
    with pytest.raises(ConfigError) as info:
        parse_grid(["train.seed=1,2", "a"], seeds="0,x")
    assert info.value.problems == [
        "--grid a: expected key=v1,v2,...",
        "--seeds: expected integers separated by commas, got '0,x'",
    ]
    with pytest.raises(ConfigError, match="the grid already sweeps train.seed"):
        parse_grid(["train.seed=1,2"], seeds="0,1")
    with pytest.raises(ConfigError, match="a seed is listed twice"):
        parse_grid([], seeds="1,01")
    with pytest.raises(ConfigError, match=r"give at least one key=v1,v2,... \(or --seeds\)"):
        parse_grid([])


def test_aggregate_leaves_out_failed_seeds_and_non_numeric_metrics():
    specs = expand(parse_grid(["k=a,b"], seeds="0,1,2"))
    rows = [
        {"run": s.name, **dict(s.values), "status": status, **metrics}
        for s, status, metrics in zip(
            specs,
            ["done", "reused", "done", "done", "failed", "failed"],
            [
                {"nll": 1.0, "au": 2, "note": "x", "flag": True, "only": 1.0},
                {"nll": 2.0, "au": 3, "note": "y", "flag": False},
                {"nll": 4.0, "au": 3, "note": "z", "flag": True, "only": 2.0},
                {"nll": "nan", "au": 1},
                {},
                {},
            ],
        )
    ]
    columns_in = ["nll", "au", "note", "flag", "only"]
    aggregates, columns = aggregate(rows, specs, ["k", "train.seed"], columns_in)
    assert columns == [
        *["run", "k", "train.seed", "status", "epoch", "n"],
        *["nll", "nll.std", "au", "au.std", "note", "flag", "only"],
    ]
    first, second = aggregates
    assert first["run"] == "k-a__train.seed-*" and first["k"] == "a" and first["train.seed"] == "0,1,2"
    assert first["status"] == "aggregate" and first["n"] == 3
    assert first["nll"] == pytest.approx(statistics.mean([1.0, 2.0, 4.0]))
    assert first["nll.std"] == pytest.approx(statistics.stdev([1.0, 2.0, 4.0]))
    assert first["au"] == pytest.approx(8 / 3) and first["au.std"] == pytest.approx(statistics.stdev([2, 3, 3]))
    assert "note" not in first and "flag" not in first  # not numbers
    assert "only" not in first  # not measured by every seed that finished
    # two seeds failed: n = 1, the mean is the one that finished, no standard deviation
    assert second["n"] == 1 and second["train.seed"] == "0"
    assert math.isnan(second["nll"]) and second["au"] == 1.0 and second["au.std"] is None
    markdown = to_markdown(aggregates, ["run", "n", "nll", "au"], mean_std=True).splitlines()
    assert (
        markdown[2] == f"| k-a__train.seed-* | 3 | 2.3333 ± {statistics.stdev([1.0, 2.0, 4.0]):.4f} | 2.6667 ± 0.5774 |"
    )
    assert markdown[3] == "| k-b__train.seed-* | 1 | nan | 1.0000 |"


def test_a_seed_given_by_set_and_by_seeds_is_refused(config, tmp_path, capsys):
    out = tmp_path / "twice"
    assert main(["sweep", str(config), "--seeds", "0,1", "--set", "train.seed=3", "--out", str(out)]) == 2
    assert "--set train.seed=3: train.seed is swept" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("where", ["file", "below a file"])
def test_an_out_that_is_a_file_is_one_line_and_a_non_zero_exit(config, tmp_path, capsys, where):
    afile = tmp_path / "results.txt"
    afile.write_text("not a folder\n")
    out = afile if where == "file" else afile / "sweep"
    code = main(["sweep", str(config), "--grid", "train.lr=0.001", "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("vaecore: error: ") and f"--out {out}: " in err
    assert ("is a file, not a folder" if where == "file" else "cannot create the sweep folder") in err
    assert afile.read_text() == "not a folder\n"


def test_seeds_aggregate_per_configuration_and_a_failed_seed_does_not_stop_the_others(config, tmp_path, capsys):
    out = tmp_path / "seeds"
    # one grid point fails: its checkpoint is corrupt, so resuming it fails in its own process
    broken = out / "train.lr-0.003__train.seed-8" / "checkpoints" / "last.pt"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint")
    argv = [
        *["sweep", str(config), "--grid", "train.lr=0.001,0.003", "--seeds", "7,8"],
        *["--jobs", "2", "--out", str(out), "--set", "train.beta=0.5"],
    ]
    assert main(argv) == 1  # one run failed; the others finished
    captured = capsys.readouterr()
    assert "1 run(s) failed" in captured.err and "train.lr-0.003__train.seed-8.log" in captured.err

    rows = _read_csv(out / "results.csv")
    runs, aggregates = rows[:4], rows[4:]
    columns = list(rows[0])
    assert columns[:6] == ["run", "train.lr", "train.seed", "status", "epoch", "n"]
    assert {"elbo", "elbo.std", "rec", "kl", "nll", "nll.std", "au", "au.std"} <= set(columns)
    assert [(r["train.lr"], r["train.seed"], r["status"]) for r in runs] == [
        ("0.001", "7", "done"),
        ("0.001", "8", "done"),
        ("0.003", "7", "done"),
        ("0.003", "8", "failed"),
    ]
    assert runs[3]["nll"] == runs[3]["epoch"] == ""
    evals = {}
    for r in runs[:3]:
        run_config = tomllib.loads((out / r["run"] / "config.toml").read_text())
        assert run_config["train"]["lr"] == float(r["train.lr"])
        assert run_config["train"]["seed"] == int(r["train.seed"])
        assert run_config["train"]["beta"] == 0.5  # --set applies to every run
        evals[r["run"]] = json.loads((out / r["run"] / "eval.json").read_text())
        assert float(r["nll"]) == evals[r["run"]]["nll"]
        assert int(r["epoch"]) == evals[r["run"]]["epoch"] == 1
        assert r["n"] == r["nll.std"] == ""
        # each row's budget: evaluated and training rows, training wall time from metrics.jsonl
        records = [json.loads(line) for line in (out / r["run"] / "metrics.jsonl").read_text().splitlines()]
        assert float(r["train_seconds"]) == pytest.approx(sum(rec["seconds"] for rec in records), abs=0.05)
        assert int(r["train_rows"]) == evals[r["run"]]["train_rows"] > 0
        assert int(r["split_rows"]) == evals[r["run"]]["split_rows"] > 0
    assert columns[-6:] == [
        "split_rows",
        "split_rows.std",
        "train_rows",
        "train_rows.std",
        "train_seconds",
        "train_seconds.std",
    ]
    assert runs[0]["nll"] != runs[1]["nll"]  # the seed matters

    # the aggregates, against the mean and sample standard deviation of the eval.json values
    assert [(a["run"], a["train.lr"], a["train.seed"], a["status"], a["n"]) for a in aggregates] == [
        ("train.lr-0.001__train.seed-*", "0.001", "7,8", "aggregate", "2"),
        ("train.lr-0.003__train.seed-*", "0.003", "7", "aggregate", "1"),
    ]
    pair = [evals["train.lr-0.001__train.seed-7"], evals["train.lr-0.001__train.seed-8"]]
    single = evals["train.lr-0.003__train.seed-7"]
    numeric = [k for k, v in single.items() if isinstance(v, (int, float)) and k != "epoch"]
    assert {"nll", "elbo", "kl", "au"} <= set(numeric)
    for metric in numeric:
        values = [e[metric] for e in pair]
        assert float(aggregates[0][metric]) == pytest.approx(statistics.mean(values), rel=1e-12, abs=1e-12)
        assert float(aggregates[0][f"{metric}.std"]) == pytest.approx(statistics.stdev(values), rel=1e-12, abs=1e-12)
        assert float(aggregates[1][metric]) == pytest.approx(single[metric], rel=1e-12, abs=1e-12)  # seed 8 failed
        assert aggregates[1][f"{metric}.std"] == ""
    markdown = (out / "results.md").read_text()
    assert markdown in captured.out
    assert "sample standard deviation (ddof=1)" in markdown
    nll_mean, nll_std = statistics.mean(e["nll"] for e in pair), statistics.stdev(e["nll"] for e in pair)
    assert f"| train.lr-0.001__train.seed-* | 0.001 | 7,8 | 2 | {nll_mean:.4f} ± {nll_std:.4f} |" in markdown

    # run again: the finished runs are reused, a run whose evaluation is missing is resumed from
    # its checkpoint, the failed one is tried again; the table is the same but for the status
    broken.write_bytes(b"still not a checkpoint")
    (out / runs[2]["run"] / "eval.json").unlink()
    assert main(argv) == 1
    again = _read_csv(out / "results.csv")
    assert [r["status"] for r in again] == ["reused", "reused", "done", "failed", "aggregate", "aggregate"]
    assert [{**r, "status": ""} for r in again] == [{**r, "status": ""} for r in rows]
    assert json.loads((out / runs[0]["run"] / "eval.json").read_text()) == pair[0]


def _finished_run(run_dir, config, overrides, metrics):
    """A run folder as a finished training leaves it, as far as the sweep reads it."""
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.toml").write_text(dump_config(load_config(config, overrides)))
    (run_dir / "eval.json").write_text(json.dumps({"split": "test", "epoch": 1, **metrics}))


def test_a_finished_run_of_another_config_stops_the_sweep_naming_the_keys(config, tmp_path, capsys):
    out = tmp_path / "stale"
    for lr, nll in (("0.001", 11.0), ("0.003", 12.0)):
        _finished_run(out / f"train.lr-{lr}", config, [f"train.lr={lr}", "train.beta=0.5"], {"nll": nll})
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    argv = ["sweep", str(config), "--grid", "train.lr=0.001,0.003", "--out", str(out)]

    # train.beta=1.0 (the default) now: both runs are stale; nothing is trained, nothing rewritten
    assert main(argv) == 5
    err = capsys.readouterr().err
    assert "2 run(s) in" in err and "hold another config" in err
    assert f"{out / 'train.lr-0.001'}: finished with another config: train.beta (0.5 there, 1.0 now)" in err
    assert f"{out / 'train.lr-0.003'}: finished with another config: train.beta (0.5 there, 1.0 now)" in err
    assert "--out" in err and "--retrain-stale" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not (out / "logs").exists() and not (out / "results.csv").exists()

    # the same config (a cosmetic key aside): reused, without training
    assert main([*argv, "--set", "train.beta=0.5", "--set", "train.threads=1"]) == 0
    rows = _read_csv(out / "results.csv")
    assert [(r["run"], r["status"], r["nll"]) for r in rows] == [
        ("train.lr-0.001", "reused", "11.0"),
        ("train.lr-0.003", "reused", "12.0"),
    ]
    assert list(rows[0]) == ["run", "train.lr", "status", "epoch", "nll"]  # no seeds: no aggregate
    assert not (out / "logs").exists()
    capsys.readouterr()

    # --retrain-stale: only the stale run moves to stale/ (kept) and trains again
    assert main(["sweep", str(config), "--grid", "train.lr=0.001", "--out", str(out), "--retrain-stale"]) == 0
    rows = _read_csv(out / "results.csv")
    assert [(r["run"], r["status"]) for r in rows] == [("train.lr-0.001", "done")]
    assert tomllib.loads((out / "train.lr-0.001" / "config.toml").read_text())["train"]["beta"] == 1.0
    assert json.loads((out / "stale" / "train.lr-0.001" / "eval.json").read_text())["nll"] == 11.0
    assert (out / "train.lr-0.003" / "eval.json").read_bytes() == before[out / "train.lr-0.003" / "eval.json"]


def test_an_interrupted_run_resumes_only_when_a_resumption_may_change_the_difference(config, tmp_path):
    run_dir = tmp_path / "run"
    _finished_run(run_dir, config, ["train.epochs=1"], {"nll": 1.0})
    (run_dir / "eval.json").unlink()
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"")
    assert stale_reason(run_dir, load_config(config, ["train.epochs=3"])) is None  # resumed to 3 epochs
    assert stale_reason(run_dir, load_config(config, ["train.lr=0.5"])) == (
        f"{run_dir}: checkpointed with another config: train.lr (0.001 there, 0.5 now)"
    )
    (run_dir / "eval.json").write_text("{}")  # finished: more epochs would be another run
    assert stale_reason(run_dir, load_config(config, ["train.epochs=3"])) == (
        f"{run_dir}: finished with another config: train.epochs (1 there, 3 now)"
    )
    assert stale_reason(tmp_path / "nothing", load_config(config)) is None
