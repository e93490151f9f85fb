"""Sentence corpora from plain files, in the layouts researchers have, as vaecore datasets.

* ``sentences``: one sentence a line (the Penn Treebank files ``ptb.train.txt``, ...);
* ``labelled``: ``label<TAB>text`` a line (He et al.'s Yahoo and Yelp ``*.train.txt``,
  ``*.valid.txt``, ``*.test.txt``), the integer labels kept for the linear probes;
* ``kjv``: the King James verses file ``kjv_verses.tsv.gz`` (``reference<TAB>text``, in book
  order), split at random with ``data.seed`` (never the first rows), the book as the label.

Every sentence is tokenised once, at load time; sentences longer than ``max_length - 1``
tokens are dropped (or truncated); ``data.train_size``/``valid_size``/``test_size`` are drawn
before the vocabulary is built on the training rows, and the splits become ``(N, max_length)``
int64 tensors of ids (words, ``</s>``, ``<pad>``). A malformed line stops the load with one
line naming the file and the line.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch

from vaecore import validators as v
from vaecore.data import Dataset, Split
from vaecore.data.loaders import subset
from vaecore.errors import DataError
from vaecore_text.vocab import Vocabulary

TOKENIZERS: dict[str, Callable[[str], list[str]]] = {
    "whitespace": str.split,
    "words": re.compile(r"\w+(?:'\w+)*|[^\w\s]").findall,
}
"""``whitespace``: the text is already tokenised (PTB, He et al.'s files); ``words``: words and
punctuation marks apart (raw text such as the KJV)."""
SPLITS = ("train", "valid", "test")
KJV_REFERENCE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+)$")


@attrs.define(kw_only=True)
class TextOptions:
    """The keys of ``[data]`` a text corpus takes (beside the core's ``path``, sizes and seed)."""

    max_length: int = attrs.field(default=50, validator=v.gt(1))
    """tokens per sentence, ``</s>`` included: the width of the id tensors"""
    too_long: str = attrs.field(default="drop", validator=v.one_of(("drop", "truncate")))
    """what happens to a longer sentence: left out, or cut to ``max_length - 1`` words"""
    vocab_size: int | None = attrs.field(default=10_000, validator=v.gt(0))
    """most frequent training words kept (besides the 4 special tokens); None: all"""
    min_count: int = attrs.field(default=1, validator=v.gt(0))
    """training occurrences a word needs to be in the vocabulary (the others are ``<unk>``)"""
    tokenizer: str = attrs.field(default="whitespace", validator=v.one_of(TOKENIZERS))
    """``whitespace`` (pre-tokenised files) or ``words`` (words and punctuation apart)"""
    lowercase: bool = False
    """lower-case the text before tokenising"""


@attrs.define(kw_only=True)
class KJVOptions(TextOptions):
    """``kjv``: the verses file, split at random with ``data.seed`` into train/valid/test."""

    tokenizer: str = attrs.field(default="words", validator=v.one_of(TOKENIZERS))
    lowercase: bool = True
    valid_rows: int = attrs.field(default=3000, validator=v.gt(0))
    """verses of the random validation split"""
    test_rows: int = attrs.field(default=3000, validator=v.gt(0))
    """verses of the random test split (the rest, after the length filter, is the training split)"""


def read_lines(path: Path) -> list[str]:
    """The lines of a text file (``.gz`` read compressed); one-line errors for a missing,
    unreadable, non-UTF-8 or empty file."""
    if not path.is_file():
        raise DataError(f"corpus file not found: {path}")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: not readable ({exc})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text ({exc.reason})") from exc
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise DataError(f"{path}: is empty (no sentences)")
    return lines


def parse_sentences(path: Path) -> tuple[list[str], None]:
    """One sentence a line; a blank line is an error (it would be an empty sentence)."""
    lines = read_lines(path)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise DataError(f"{path}, line {number}: empty line (one sentence a line expected)")
    return lines, None


def parse_labelled(path: Path) -> tuple[list[str], list[int]]:
    """``label<TAB>text`` a line, the label a whole number >= 0."""
    texts, labels = [], []
    for number, line in enumerate(read_lines(path), 1):
        label, tab, text = line.partition("\t")
        if not tab:
            raise DataError(f"{path}, line {number}: no tab; expected label<TAB>text")
        if not label.strip().isdigit():
            raise DataError(f"{path}, line {number}: label {label!r} is not a whole number >= 0")
        if not text.strip():
            raise DataError(f"{path}, line {number}: no text after the label")
        texts.append(text)
        labels.append(int(label))
    return texts, labels


def parse_kjv(path: Path) -> tuple[list[str], list[int]]:
    """``reference<TAB>text`` a line (``Ge1:1<TAB>In the beginning ...``); the label is the book,
    numbered in the order of the file."""
    texts, labels, books = [], [], {}  # type: ignore[var-annotated]
    for number, line in enumerate(read_lines(path), 1):
        reference, tab, text = line.partition("\t")
        if not tab:
            raise DataError(f"{path}, line {number}: no tab; expected reference<TAB>text")
        match = KJV_REFERENCE.match(reference.strip())
        if match is None:
            raise DataError(f"{path}, line {number}: reference {reference!r} is not of the form Book1:1")
        if not text.strip():
            raise DataError(f"{path}, line {number}: no text after the reference")
        texts.append(text)
        labels.append(books.setdefault(match.group(1), len(books)))
    return texts, labels


def tokenise(texts: list[str], options: TextOptions) -> list[list[str]]:
    split = TOKENIZERS[options.tokenizer]
    return [split(t.lower() if options.lowercase else t) for t in texts]


def split_files(root: Path) -> dict[str, Path]:
    """``*train.txt``, ``*valid.txt`` and ``*test.txt`` (optionally ``.gz``) in a folder."""
    if not root.is_dir():
        raise DataError(f"data.path: {root} is not a folder (it should hold *train.txt, *valid.txt, *test.txt)")
    found = {}
    for split in SPLITS:
        matches = sorted(p for p in root.iterdir() if p.name.endswith((f"{split}.txt", f"{split}.txt.gz")))
        if len(matches) != 1:
            what = "no file" if not matches else f"{len(matches)} files ({', '.join(p.name for p in matches)})"
            raise DataError(f"data.path: {root} has {what} ending in {split}.txt; one per split is expected")
        found[split] = matches[0]
    return found


@attrs.frozen
class Sentences:
    """Tokenised sentences of one split and their labels (None without)."""

    tokens: list[list[str]]
    labels: list[int] | None

    def rows(self, index: list[int]) -> Sentences:
        return Sentences(
            [self.tokens[i] for i in index], None if self.labels is None else [self.labels[i] for i in index]
        )


def fit_length(sentences: Sentences, options: TextOptions, where: str) -> Sentences:
    """The sentences that fit ``max_length`` (with ``</s>``), or all of them cut to fit."""
    words = options.max_length - 1
    if options.too_long == "truncate":
        return Sentences([s[:words] for s in sentences.tokens], sentences.labels)
    kept = [i for i, s in enumerate(sentences.tokens) if 0 < len(s) <= words]
    if not kept:
        raise DataError(
            f"{where}: no sentence has 1 to {words} tokens (max_length = {options.max_length} counts </s>); "
            "raise data.max_length or set data.too_long = 'truncate'"
        )
    return sentences.rows(kept)


def draw(sentences: Sentences, n: int | None, data: Any, name: str) -> Sentences:
    """The core's seeded subset (``data.<split>_size``) drawn here, before the vocabulary is built,
    with the very rows :func:`vaecore.data.loaders.subset` would draw (stratified by label)."""
    index = torch.arange(len(sentences.tokens))[:, None]
    labels = None if sentences.labels is None else torch.tensor(sentences.labels)
    chosen = subset(Split(index, labels), n, data, name).x[:, 0]
    return sentences.rows(chosen.tolist())


def make_dataset(name: str, splits: dict[str, Sentences], data: Any, options: TextOptions) -> Dataset:
    """Length filter, subsets, vocabulary on the training split, id tensors."""
    sizes = {"train": data.train_size, "valid": data.valid_size, "test": data.test_size}
    fitted = {s: draw(fit_length(splits[s], options, f"{name} {s} split"), sizes[s], data, s) for s in SPLITS}
    vocab = Vocabulary.build(fitted["train"].tokens, options.vocab_size, options.min_count)

    def tensors(part: Sentences) -> Split:
        y = None if part.labels is None else torch.tensor(part.labels, dtype=torch.int64)
        return Split(vocab.encode(part.tokens, options.max_length), y)

    return Dataset(
        name=name,
        train=tensors(fitted["train"]),
        valid=tensors(fitted["valid"]),
        test=tensors(fitted["test"]),
        binary=False,
        meta=vocab.meta(),
    )


def _from_folder(parse: Callable[[Path], tuple[list[str], list[int] | None]]) -> Callable[..., Dataset]:
    def load(data: Any, options: TextOptions) -> Dataset:
        if not data.path:
            raise DataError(f"data.path: required when data.name = {data.name!r} (the folder of the split files)")
        files = split_files(Path(data.path))
        splits = {}
        for split, path in files.items():
            texts, labels = parse(path)
            splits[split] = Sentences(tokenise(texts, options), labels)
        return make_dataset(Path(data.path).name, splits, data, options)

    return load


load_sentences = _from_folder(parse_sentences)
"""``sentences``: ``data.path`` is a folder of ``*train.txt``, ``*valid.txt``, ``*test.txt``,
one sentence a line."""
load_labelled = _from_folder(parse_labelled)
"""``labelled``: the same folder layout, ``label<TAB>text`` a line."""


def load_kjv(data: Any, options: KJVOptions) -> Dataset:
    """``kjv``: ``data.path`` is ``kjv_verses.tsv.gz``. After the length filter the verses are
    permuted with ``data.seed``; the first ``valid_rows`` are the validation split, the next
    ``test_rows`` the test split, the rest the training split."""
    if not data.path:
        raise DataError("data.path: required when data.name = 'kjv' (the kjv_verses.tsv.gz file)")
    path = Path(data.path)
    texts, labels = parse_kjv(path)
    everything = fit_length(Sentences(tokenise(texts, options), labels), options, str(path))
    n = len(everything.tokens)
    if options.valid_rows + options.test_rows >= n:
        raise DataError(
            f"{path}: {n} verses fit max_length = {options.max_length}; valid_rows + test_rows = "
            f"{options.valid_rows + options.test_rows} leaves no training rows"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(data.seed)).tolist()
    cut = options.valid_rows + options.test_rows
    parts = {
        "valid": sorted(order[: options.valid_rows]),
        "test": sorted(order[options.valid_rows : cut]),
        "train": sorted(order[cut:]),
    }
    return make_dataset("kjv", {s: everything.rows(rows) for s, rows in parts.items()}, data, options)
