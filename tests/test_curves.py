"""`vaecore curves`: the per-epoch terms of metrics.jsonl, several runs overlaid (hand-written
records, so every plotted value is known)."""

from __future__ import annotations

import json

import pytest

from vaecore.analysis import curves
from vaecore.cli import main
from vaecore.errors import VaecoreError

pytest.importorskip("matplotlib")


def make_run(folder, records):
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text("")
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def records(elbo, seconds=2.0):
    return [
        {
            "epoch": e,
            "step": 10 * e,
            "seconds": seconds,
            "train.elbo": v - 1.0,
            "valid.elbo": v,
            "train.K": 5.0,
            "valid.K": 5.0,
            "train.kl": 0.5 * e,
            "lr": 1e-3,
            "monitor": "valid.elbo",
        }
        for e, v in enumerate(elbo, 1)
    ]


@pytest.fixture
def runs(tmp_path):
    return [
        make_run(tmp_path / "a", records([-120.0, -110.0, -105.0])),
        make_run(tmp_path / "b", records([-130.0, -100.0], seconds=5.0)),
    ]


def test_every_changing_term_by_default_with_the_records_values(runs, tmp_path):
    result = curves(runs, tmp_path / "out")
    assert result["terms"] == ["elbo", "kl"]  # K never changes; lr and monitor are not split terms
    series = result["series"]["elbo"]
    assert series["a/train"] == {"x": [1.0, 2.0, 3.0], "y": [-121.0, -111.0, -106.0]}
    assert series["b/valid"] == {"x": [1.0, 2.0], "y": [-130.0, -100.0]}
    assert set(result["series"]["kl"]) == {"a/train", "b/train"}  # no valid.kl was logged
    assert result["figures"] == ["curves.png"]
    assert (tmp_path / "out" / "curves.png").stat().st_size > 5000
    assert type(result.figures["curves"]).__name__ == "Figure"
    json.dumps(result)  # the numbers are JSON as they are


def test_x_axis_step_and_time(runs, tmp_path):
    by_step = curves(runs, tmp_path / "s", ["valid.elbo"], x="step")
    assert by_step["series"]["valid.elbo"]["a/valid"]["x"] == [10.0, 20.0, 30.0]
    by_time = curves(runs, tmp_path / "t", ["valid.elbo"], x="time")
    assert by_time["series"]["valid.elbo"]["b/valid"]["x"] == [5.0, 10.0]  # summed seconds
    assert list(by_time["series"]["valid.elbo"]) == ["a/valid", "b/valid"]


def test_runs_of_the_same_name_are_told_apart(tmp_path):
    one = make_run(tmp_path / "sweep1" / "lr-0.001", records([-1.0, -2.0]))
    two = make_run(tmp_path / "sweep2" / "lr-0.001", records([-3.0, -4.0]))
    result = curves([one, two], tmp_path / "out", ["elbo"])
    assert set(result["series"]["elbo"]) >= {"sweep1/lr-0.001/train", "sweep2/lr-0.001/valid"}


def test_cli_writes_json_and_formats(runs, tmp_path, capsys):
    out = tmp_path / "figs"
    assert main(["curves", *map(str, runs), "--terms", "elbo", "--out", str(out), "--format", "png,svg"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["curves.json", "curves.png", "curves.svg"]
    assert json.loads((out / "curves.json").read_text())["terms"] == ["elbo"]
    assert f"wrote {out / 'curves.json'} and curves.png, curves.svg in {out}" in capsys.readouterr().out


def test_one_run_writes_into_its_analysis_folder(runs):
    assert main(["curves", str(runs[0])]) == 0
    assert (runs[0] / "analysis" / "curves" / "curves.png").is_file()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda tmp: [tmp], "not a run folder (no config.toml, no metrics.jsonl)"),
        (lambda tmp: [make_run(tmp / "r", [])], "metrics.jsonl: no epoch records yet"),
        (
            lambda tmp: [make_run(tmp / "r", records([-1.0]))],
            "--terms nope: no run logged it; logged: elbo, K, kl",
        ),
    ],
    ids=["not-a-run", "no-records", "unknown-term"],
)
def test_bad_input_is_one_line(tmp_path, capsys, setup, message):
    paths = setup(tmp_path)
    assert main(["curves", *map(str, paths), "--terms", "nope", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_malformed_line_is_named(tmp_path):
    run = make_run(tmp_path / "r", records([-1.0, -2.0]))
    text = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(text[0] + "\n{oops\n" + text[1] + "\n")
    with pytest.raises(VaecoreError, match=r"metrics.jsonl: line 2 is not a JSON record"):
        curves([run], tmp_path / "o")
