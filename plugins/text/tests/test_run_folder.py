"""A text run end to end through the CLI: the vocabulary in run.json, a model that loads without
its data, and the analysis commands printing sentences."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import text_config

from vaecore.restore import export_run, load_exported, load_run
from vaecore.testing import write_config


def vaecore(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "vaecore.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import write_corpus

    root = tmp_path_factory.mktemp("textrun")
    corpus = write_corpus(root / "corpus")
    raw = text_config({"name": "sentences", "path": str(corpus)}, train={"epochs": 2})
    config = write_config(root / "text.toml", raw)
    done = vaecore("train", config, "--out", root / "run", cwd=root)
    assert done.returncode == 0, done.stderr
    return root


def test_eval_reports_perplexity_per_word(trained):
    results = json.loads((trained / "run" / "eval.json").read_text())
    assert results["ppl"] > 1 and results["nll_per_unit"] == pytest.approx(
        results["nll"] * results["split_rows"] / 18, rel=1e-6
    )  # 3 test sentences: 6 + 3 + 6 words, + 3 </s> = 18 tokens
    manifest = json.loads((trained / "run" / "run.json").read_text())
    assert manifest["data_meta"]["vocabulary"][:4] == ["<pad>", "<unk>", "<s>", "</s>"]


def test_the_model_loads_without_its_data(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    shutil.move(trained / "corpus", tmp_path / "moved")
    try:
        loaded = load_run(run)
        assert loaded.data_source == "sample"
        assert loaded.dataset.test.x.dtype.is_floating_point is False
        assert loaded.model.likelihood.render(loaded.dataset.test.x[:1])[0]
        exported = load_exported(export_run(loaded, tmp_path / "model.pt"))
        assert exported.data_meta == loaded.model.data_meta
    finally:
        shutil.move(tmp_path / "moved", trained / "corpus")


def test_changed_vocabulary_is_refused(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    manifest = json.loads((run / "run.json").read_text())
    manifest["data_meta"]["vocabulary"].append("extra")
    (run / "run.json").write_text(json.dumps(manifest))
    done = vaecore("sample", run, "--n", 2, cwd=tmp_path)
    assert done.returncode != 0 and "vocabulary changed" in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("command", "heading"),
    [
        (["sample", "--n", "3"], "prior samples (sampled):"),
        (["interpolate", "--from", "0", "--to", "1", "--steps", "3"], "fisher-rao:"),
        (["traverse", "--dims", "2", "--steps", "3"], "random direction:"),
    ],
)
def test_analysis_commands_print_sentences(trained, command, heading):
    pytest.importorskip("matplotlib")
    done = vaecore(command[0], trained / "run", *command[1:], cwd=trained)
    assert done.returncode == 0, done.stderr
    assert heading in done.stdout
    lines = [line.strip() for line in done.stdout.splitlines() if line.startswith("  ")]
    assert lines and all(
        set(line.split()) <= {"the", "cat", "sat", "on", "mat", "dog", "a", "ran", "<unk>"} for line in lines
    )
    written = json.loads(next((trained / "run" / "analysis" / command[0]).glob("*.json")).read_text())
    assert written["text"] and written["figures"] == []


def test_a_malformed_corpus_is_one_line_and_a_nonzero_exit(tmp_path):
    from conftest import write_corpus

    corpus = write_corpus(tmp_path / "corpus", labelled=True)
    (corpus / "toy.valid.txt").write_text("0\tfine\nbroken line\n")
    raw = text_config({"name": "labelled", "path": str(corpus)})
    done = vaecore("train", write_config(tmp_path / "bad.toml", raw), "--out", tmp_path / "run", cwd=tmp_path)
    assert done.returncode != 0
    assert done.stderr.strip().endswith("toy.valid.txt, line 2: no tab; expected label<TAB>text")
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "run" / "checkpoints").exists()
