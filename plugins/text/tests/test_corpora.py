"""The three corpus layouts, their errors, the vocabulary and the seeded KJV split."""

from __future__ import annotations

import pytest
import torch
from conftest import SENTENCES, text_config, write_kjv
from vaecore_text.vocab import EOS_ID, PAD_ID, SPECIALS, UNK_ID, Vocabulary

from vaecore.data import load_dataset
from vaecore.errors import DataError
from vaecore.testing import load


def dataset(data: dict):
    return load_dataset(load(text_config(data)).data)


def test_one_sentence_a_line(corpus):
    ds = dataset({"name": "sentences", "path": str(corpus)})
    assert [len(ds.split(s)) for s in ("train", "valid", "test")] == [20, 2, 3]
    assert ds.train.x.dtype == torch.int64 and ds.input_shape == (8,)
    vocab = Vocabulary(ds.meta["vocabulary"])
    assert tuple(vocab.words[:4]) == SPECIALS
    assert vocab.decode(ds.test.x[0].tolist()) == SENTENCES["test"][0]
    row = ds.train.x[2].tolist()  # "a cat ran on the mat": 6 words, </s>, one <pad>
    assert row[6] == EOS_ID and row[7] == PAD_ID
    assert ds.train.y is None


def test_labelled_layout_keeps_the_labels(labelled_corpus):
    ds = dataset({"name": "labelled", "path": str(labelled_corpus)})
    assert ds.train.y.tolist()[:4] == [0, 1, 0, 1]
    assert Vocabulary(ds.meta["vocabulary"]).decode(ds.valid.x[1].tolist()) == SENTENCES["valid"][1]


def test_vocabulary_on_the_training_split_with_cap_and_min_count(corpus):
    ds = dataset({"name": "sentences", "path": str(corpus), "vocab_size": 3, "min_count": 5})
    words = ds.meta["vocabulary"][4:]
    assert words == ["the", "a", "cat"]  # by count (the 20; a, cat, dog, on, sat 12: ties alphabetical), cap 3
    assert (ds.train.x == UNK_ID).any()


def test_build_orders_by_count_then_word():
    vocab = Vocabulary.build([["b", "a", "b", "c"], ["c", "a"]], min_count=2)
    assert vocab.words[4:] == ["a", "b", "c"]
    assert vocab.encode([["a", "zzz"]], 4).tolist() == [[4, UNK_ID, EOS_ID, PAD_ID]]


def test_long_sentences_dropped_or_truncated(corpus):
    ds = dataset({"name": "sentences", "path": str(corpus), "max_length": 4})
    assert len(ds.train) == 8  # only the 2- and 3-word sentences fit 3 words + </s>
    cut = dataset({"name": "sentences", "path": str(corpus), "max_length": 4, "too_long": "truncate"})
    assert len(cut.train) == 20 and int((cut.train.x != PAD_ID).sum(1).max()) == 4


def test_subsets_are_drawn_before_the_vocabulary(corpus):
    ds = dataset({"name": "sentences", "path": str(corpus), "train_size": 5})
    assert len(ds.train) == 5
    used = {w for row in ds.train.x.tolist() for w in row} - {0, 1, 2, 3}
    assert len(used) == len(ds.meta["vocabulary"]) - 4  # every vocabulary word occurs in those 5 rows


@pytest.mark.parametrize(
    ("layout", "content", "message"),
    [
        ("sentences", "a b\n\nc d\n", "line 2: empty line"),
        ("labelled", "0\ta b\n1 a b\n", "line 2: no tab"),
        ("labelled", "x\ta b\n", "line 1: label 'x' is not a whole number"),
        ("labelled", "-1\ta b\n", "line 1: label '-1' is not a whole number"),
        ("labelled", "0\ta b\n1\t  \n", "line 2: no text after the label"),
        ("sentences", "", r"is empty \(no sentences\)"),
        ("sentences", "\n\n", r"is empty \(no sentences\)"),
    ],
)
def test_malformed_lines_name_the_file_and_line(tmp_path, corpus, layout, content, message):
    folder = tmp_path / "bad"
    folder.mkdir()
    for split in ("valid", "test"):
        (folder / f"x.{split}.txt").write_text("0\ta b\n" if layout == "labelled" else "a b\n")
    (folder / "x.train.txt").write_text(content)
    with pytest.raises(DataError, match=message) as err:
        dataset({"name": layout, "path": str(folder)})
    assert "x.train.txt" in str(err.value) and "\n" not in str(err.value)


def test_non_utf8_names_the_line(tmp_path, corpus):
    (corpus / "toy.valid.txt").write_bytes(b"a b\nc \xff d\n")
    with pytest.raises(DataError, match=r"toy.valid.txt, line 2: not UTF-8"):
        dataset({"name": "sentences", "path": str(corpus)})


def test_missing_folder_file_and_ambiguous_split(tmp_path, corpus):
    with pytest.raises(DataError, match="is not a folder"):
        dataset({"name": "sentences", "path": str(tmp_path / "nowhere")})
    (corpus / "toy.test.txt").unlink()
    with pytest.raises(DataError, match="has no file ending in test.txt"):
        dataset({"name": "sentences", "path": str(corpus)})
    (corpus / "a.test.txt").write_text("a\n")
    (corpus / "b.test.txt").write_text("a\n")
    with pytest.raises(DataError, match="2 files"):
        dataset({"name": "sentences", "path": str(corpus)})
    with pytest.raises(DataError, match="data.path: required"):
        dataset({"name": "sentences"})


def test_no_sentence_fits(corpus):
    with pytest.raises(DataError, match="no sentence has 1 to 1 tokens"):
        dataset({"name": "sentences", "path": str(corpus), "max_length": 2})


def kjv_lines(n: int) -> list[str]:
    books = ["Ge", "Ex", "1Sa"]
    return [f"{books[i * 3 // n]}{1 + i // 10}:{1 + i % 10}\tAnd verse {i} said, Lo: word{i % 7}." for i in range(n)]


def test_kjv_seeded_random_split_and_book_labels(tmp_path):
    path = write_kjv(tmp_path / "kjv.tsv.gz", kjv_lines(60))
    data = {"name": "kjv", "path": str(path), "valid_rows": 10, "test_rows": 10, "max_length": 12}
    ds = dataset(data)
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [40, 10, 10]
    assert sorted(set(ds.train.y.tolist())) == [0, 1, 2]
    vocab = Vocabulary(ds.meta["vocabulary"])
    first = {vocab.decode(r) for r in ds.valid.x.tolist()}
    assert first != {f"and verse {i} said , lo : word{i % 7} ." for i in range(10)}  # not the first rows
    again = dataset(data)
    assert torch.equal(again.valid.x, ds.valid.x)
    other = dataset({**data, "seed": 1})
    assert not torch.equal(other.valid.x, ds.valid.x)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Ge1:1 no tab", "line 2: no tab"),
        ("Genesis\ttext", "line 2: reference 'Genesis'"),
        ("Ge1:2\t ", "line 2: no text"),
    ],
)
def test_kjv_malformed_lines(tmp_path, line, message):
    path = write_kjv(tmp_path / "kjv.tsv.gz", ["Ge1:1\tIn the beginning.", line])
    with pytest.raises(DataError, match=message) as err:
        dataset({"name": "kjv", "path": str(path), "valid_rows": 1, "test_rows": 1})
    assert "kjv.tsv.gz" in str(err.value)


def test_kjv_empty_and_too_small(tmp_path):
    with pytest.raises(DataError, match="is empty"):
        dataset({"name": "kjv", "path": str(write_kjv(tmp_path / "e.tsv.gz", [])), "valid_rows": 1, "test_rows": 1})
    path = write_kjv(tmp_path / "k.tsv.gz", kjv_lines(5))
    with pytest.raises(DataError, match="leaves no training rows"):
        dataset({"name": "kjv", "path": str(path), "valid_rows": 3, "test_rows": 2, "max_length": 12})
    bad = tmp_path / "bad.tsv.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="not readable"):
        dataset({"name": "kjv", "path": str(bad)})


def test_the_shipped_kjv_file(kjv_file):
    data = {"name": "kjv", "path": str(kjv_file), "max_length": 25, "valid_rows": 1000, "test_rows": 1000}
    ds = dataset({**data, "train_size": 5000, "vocab_size": 4000, "min_count": 2})
    assert [len(ds.train), len(ds.valid), len(ds.test)] == [5000, 1000, 1000]
    assert len(ds.meta["vocabulary"]) <= 4004
    assert len(set(ds.test.y.tolist())) > 40  # verses from most of the 66 books: a random split
