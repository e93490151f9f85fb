from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from vaecore.testing import shared_data_dir

SENTENCES = {
    "train": ["the cat sat on the mat", "the dog sat", "a cat ran on the mat", "the dog ran", "a dog sat on a cat"] * 4,
    "valid": ["the cat ran", "a dog sat on the mat"],
    "test": ["the dog sat on the mat", "a cat sat", "the cat ran on a mat"],
}


@pytest.fixture(autouse=True)
def _seed_and_thread():
    torch.manual_seed(0)
    torch.set_num_threads(1)


def write_corpus(folder: Path, labelled: bool = False, prefix: str = "toy") -> Path:
    """A tiny corpus in He et al.'s layout: prefix.{train,valid,test}.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, lines in SENTENCES.items():
        rows = [f"{i % 2}\t{line}" for i, line in enumerate(lines)] if labelled else lines
        (folder / f"{prefix}.{split}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def write_kjv(path: Path, lines: list[str]) -> Path:
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8")))
    return path


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus")


@pytest.fixture
def labelled_corpus(tmp_path):
    return write_corpus(tmp_path / "labelled", labelled=True)


@pytest.fixture(scope="session")
def kjv_file():
    root = shared_data_dir()
    path = None if root is None else root / "kjv_verses.tsv.gz"
    if path is None or not path.is_file():
        pytest.skip("shared/data/kjv_verses.tsv.gz is not beside this checkout")
    return path


def text_config(data: dict, plugins: list | None = None, **sections) -> dict:
    """A raw config of a tiny text VAE on ``data`` with the ``text`` plugin first in the stack."""
    raw = {
        "data": {"max_length": 8, **data},
        "model": {
            "latent_dim": 4,
            "encoder": {"kind": "lstm", "embed": 8, "hidden": 16},
            "decoder": {"kind": "lstm", "embed": 8, "hidden": 16},
            "likelihood": {"kind": "categorical"},
        },
        "train": {"epochs": 1, "batch_size": 4, "lr": 1e-2, "seed": 0, "progress": False, "eval_batch_size": 8},
        "eval": {"nll_samples": 5, "mi_batch_size": 4, "probes": False},
        "plugins": [{"name": "text"}, *(plugins or [])],
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return raw
