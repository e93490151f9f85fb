"""Every hook spec is documented in docs/hooks.md and exercised by a test (as datasette does)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import vaecore.hookspecs as hs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name in dir(hs) if hasattr(getattr(hs, name), "vaecore_spec"))


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    text = (ROOT / "docs" / "hooks.md").read_text()
    assert f"## `{hook}`" in text, f"docs/hooks.md has no section for {hook}"
    assert (getattr(hs, hook).__doc__ or "").strip(), f"hookspec {hook} has no docstring"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test_implementation(hook):
    source = "".join((ROOT / "tests" / name).read_text() for name in ("recording_plugins.py", "component_plugin.py"))
    assert re.search(rf"@(vaecore\.)?hookimpl(\(.*\))?\n\s+def {hook}\(", source), f"no test plugin implements {hook}"


def _generator():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_pages", ROOT / "docs" / "gen_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("page", ["hooks.md", "config.md", "cli.md"])
def test_generated_page_is_up_to_date(page):
    """The reference pages are generated from the code: regenerate with `python docs/gen_pages.py`."""
    expected = _generator().PAGES[page]()
    actual = (ROOT / "docs" / page).read_text()
    assert actual == expected, f"docs/{page} is out of date: run `python docs/gen_pages.py`"


def test_every_hook_has_a_row_in_the_timing_table():
    assert set(_generator().WHEN) == set(HOOKS)


def test_config_reference_lists_every_key():
    import attrs

    from vaecore.builtin_components import builtin_registry
    from vaecore.config import COMPONENT_FIELDS, ComponentConfig, Config

    text = (ROOT / "docs" / "config.md").read_text()

    def walk(cls, section):
        attrs.resolve_types(cls)
        for f in attrs.fields(cls):
            if issubclass(cls, ComponentConfig) and f.name in COMPONENT_FIELDS:
                continue
            if attrs.has(f.type):
                yield from walk(f.type, f"{section}.{f.name}" if section else f.name)
            elif section:
                yield section, f.name

    for section, key in walk(Config, ""):
        body = text.split(f"## `[{section}]`", 1)[1].split("\n## ", 1)[0]
        assert f"| `{key}` |" in body, f"docs/config.md: [{section}] lacks {key}"
    # every built-in component is listed under its table, with each of its options
    sections = {
        "encoder": "model.encoder",
        "decoder": "model.decoder",
        "likelihood": "model.likelihood",
        "dataset": "data",
        "logger": "[loggers]",
    }
    for key in ("kind", "every_n_steps", "image_every"):
        assert f"| `{key}` |" in text.split("## `[[loggers]]`", 1)[1].split("\n## ", 1)[0]
    for component in builtin_registry().all():
        section = sections[component.role]
        assert f"* `{component.name}`: " in text.split(f"## `[{section}]`", 1)[1].split("\n## ", 1)[0]
        if component.options is not None:
            body = text.split(f'### `[{section}]` {"name" if section == "data" else "kind"} = "{component.name}"', 1)[1]
            for f in attrs.fields(component.options):
                assert f"| `{f.name}` |" in body.split("\n## ", 1)[0].split("\n### ", 1)[0], (component.name, f.name)


def test_cli_reference_lists_every_command():
    from vaecore.cli import COMMANDS

    text = (ROOT / "docs" / "cli.md").read_text()
    for command in COMMANDS:
        assert f"## `vaecore {command}`" in text


def test_method_pages_are_made_from_the_plugin_readmes(tmp_path):
    """The mkdocs hook turns plugins/<x>/README.md into methods/<x>.md with repository links as paths."""
    pytest.importorskip("mkdocs")
    import importlib.util

    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "docs" / "mkdocs_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    readme = tmp_path / "README.md"
    readme.write_text(
        "# vaecore-ne-plugin\n\nSee [the example](examples/a.toml) and [paper](https://x.org).\n"
        "![curve](figs/c.png)\n\n```sh\n# a comment\n```\n"
    )
    page = hooks.method_page("ne", readme)
    assert page.startswith("# NE-VAE")
    assert "\n## vaecore-ne-plugin\n" in page
    assert "the example (`plugins/ne/examples/a.toml`)" in page
    assert "[paper](https://x.org)" in page
    assert "`plugins/ne/figs/c.png`" in page
    assert "\n# a comment\n" in page  # code blocks are left alone
    assert set(hooks.METHODS) == {p.parent.name for p in (ROOT / "plugins").glob("*/pyproject.toml")}
    assert "not written yet" in hooks.method_page("ne", None)


def _tables():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_tables", ROOT / "docs" / "gen_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_tables_are_generated_from_their_results():
    gen = _tables()
    texts = gen.generated_readmes()
    assert texts, "no reproduction tables found"
    for readme, text in texts.items():
        assert readme.read_text(encoding="utf-8") == text, f"{readme}: run python docs/gen_tables.py"


def test_a_table_that_disagrees_with_its_results_fails(tmp_path, monkeypatch, capsys):
    """On a copy of the reproductions: a README cell edited by hand fails --check; regenerating
    restores it; a results file changed after the README was generated fails too."""
    import shutil

    import tomllib

    gen = _tables()
    for spec in gen.spec_files():
        tables = tomllib.loads(spec.read_text(encoding="utf-8"))["tables"]
        results = [ROOT / name for table in tables for name in gen.results_files(table)]
        for path in [spec, *results]:
            dest = tmp_path / path.relative_to(ROOT)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest)
    for readme in gen.generated_readmes():
        shutil.copy(readme, tmp_path / readme.relative_to(ROOT))
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    assert gen.main(["--check"]) == 0
    readme = next(iter(gen.generated_readmes()))
    text = readme.read_text(encoding="utf-8")
    cell = re.search(r"\| (\d+\.\d+) ± ", text).group(1)
    readme.write_text(text.replace(f"| {cell} ± ", f"| {float(cell) - 1:.2f} ± ", 1), encoding="utf-8")
    assert gen.main(["--check"]) == 1
    assert "out of date (run python docs/gen_tables.py)" in capsys.readouterr().out
    assert gen.main([]) == 0 and gen.main(["--check"]) == 0 and readme.read_text(encoding="utf-8") == text
    import csv

    table = tomllib.loads(gen.spec_files()[0].read_text(encoding="utf-8"))["tables"][0]
    results, metric = tmp_path / table["results"], table["columns"][0]["metric"]
    with results.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[0][metric] = str(float(rows[0][metric]) + 1)
    with results.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert gen.main(["--check"]) == 1


def test_a_table_gathers_rows_from_several_sweeps(tmp_path, monkeypatch):
    """A table over two results files, one row keyed by another column (a beta-VAE sweep over
    train.beta beside a sweep over plugins): each row takes the runs of its own file and key."""
    gen = _tables()
    head = "run,{key},train.seed,status,epoch,train_rows,split_rows,train_seconds,kl\n"
    (tmp_path / "methods.csv").write_text(
        head.format(key="plugins") + "a0,[],0,done,3,10,5,60,1.0\na1,[],1,done,4,10,5,120,3.0\n"
    )
    (tmp_path / "beta.csv").write_text(
        head.format(key="train.beta") + "b0,0.9,0,done,5,10,5,60,10.0\nb1,0.9,1,reused,5,10,5,60,12.0\n"
        "b2,0.9,2,failed,,,,,\n"
    )
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    table = {
        "results": ["methods.csv", "beta.csv"],
        "key": "plugins",
        "columns": [{"metric": "kl", "label": "KL", "digits": 1}],
        "rows": [
            {"value": "[]", "label": "VAE", "published": "2.12"},
            {"key": "train.beta", "value": "0.9", "label": "beta-VAE", "published": "5.48"},
        ],
        "claims": [
            {
                "text": "beta < 1 raises the KL",
                "metric": "kl",
                "better": "0.9",
                "worse": "[]",
                "direction": "max",
                "published": "5.48 vs 2.12",
            }
        ],
    }
    lines = gen.render(table).splitlines()
    assert lines[2] == "| VAE | 0,1 | 3/4 | 10 / 5 | 2.0 ± 1.4 | 1.5 min | 2.12 |"
    assert lines[3] == "| beta-VAE | 0,1 | 5/5 | 10 / 5 | 11.0 ± 1.4 | 1.0 min | 5.48 |"
    assert (
        lines[-1] == "- beta < 1 raises the KL: **reproduced** (ours 11.0 ± 1.4 vs 2.0 ± 1.4; published 5.48 vs 2.12)"
    )
    table["rows"][1]["value"] = "0.5"
    with pytest.raises(SystemExit, match=r"methods.csv, beta.csv: no finished run with train.beta = '0.5'"):
        gen.render(table)


def test_a_table_like_another_takes_the_keys_it_does_not_set():
    """The same rows, columns and claims in a second setting: the keys the table sets win, the base
    table is left as it was; a ``like`` naming no base table is refused in one line."""
    gen = _tables()
    base = {
        "name": "mlp",
        "results": "mlp.csv",
        "caption": "MLP",
        "columns": [{"metric": "nll", "label": "NLL"}],
        "rows": [{"value": "a", "label": "A"}],
        "claims": [{"metric": "nll", "better": "a", "worse": "a", "published": "-", "text": "lower NLL"}],
    }
    other = {"name": "cnn", "like": "mlp", "results": "cnn.csv", "caption": "CNN"}
    merged = gen.resolve(other, [base, other])
    assert merged["results"] == "cnn.csv" and merged["caption"] == "CNN" and merged["name"] == "cnn"
    assert all(merged[key] is base[key] for key in ("rows", "columns", "claims"))
    assert base["results"] == "mlp.csv" and "like" not in base
    assert gen.resolve(base, [base]) is base
    with pytest.raises(SystemExit, match=r"table 'cnn': like = 'rnn' names no table"):
        gen.resolve({**other, "like": "rnn"}, [base, other])
    with pytest.raises(SystemExit, match=r"table 'cnn': like = 'cnn' names no table"):
        gen.resolve({**other, "like": "cnn"}, [other])


@pytest.mark.parametrize(
    ("better", "worse", "direction", "expected"),
    [
        ((1.0, 0.2), (2.0, 0.3), "min", "reproduced"),  # 1.2 < 1.7
        ((1.0, 0.5), (2.0, 0.6), "min", "inconclusive at this budget"),  # 1.5 >= 1.4
        ((3.0, 0.2), (2.0, 0.3), "min", "not reproduced"),  # 2.3 < 2.8
        ((40.0, 2.0), (20.0, 10.0), "max", "reproduced"),  # 38 > 30
        ((20.0, 1.0), (40.0, 2.0), "max", "not reproduced"),
        ((1.0, None), (2.0, 0.1), "min", "inconclusive at this budget (fewer than 2 seeds)"),
    ],
)
def test_verdicts_follow_the_intervals(better, worse, direction, expected):
    assert _tables().verdict(better, worse, direction) == expected


def test_tutorial_cells_run_in_order(tmp_path):
    """Every python cell of docs/tutorial.md, run as a notebook would run them (one interpreter,
    in order, in an empty folder): it trains, loads, encodes, samples and writes its figures."""
    pytest.importorskip("matplotlib")
    text = (ROOT / "docs" / "tutorial.md").read_text(encoding="utf-8")
    cells = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(cells) >= 5
    script = "cells = " + repr(cells) + "\nnamespace = {}\nfor cell in cells:\n    exec(cell, namespace)\n"
    # one torch thread: on a loaded 2-core machine two threads per process contend (an epoch took
    # 131 s instead of a few), and the cells' output does not depend on the thread count
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=1200, check=False, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    nll = float(re.search(r"test NLL ([\d.]+) nats", out).group(1))
    assert 90 < nll < 200  # ten epochs on 5000 rows: a trained model, not the ~544 nats of an untrained one
    assert "best.pt from epoch" in out and "test rows: 1000" in out
    assert "posterior means (8, 16)" in out and "(16, 784) pixel means in" in out
    assert "['curves'] written: ['curves.png']" in out
    figures = {p.name for p in (tmp_path / "runs" / "tutorial" / "figures").iterdir()}
    assert {"samples.png", "reconstructions.png", "activity.png", "pca.png", "curves.png"} <= figures
