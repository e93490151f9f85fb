"""The vocabulary of a text corpus: built on the training split, stored in the run folder.

Ids 0-3 are the special tokens ``<pad>``, ``<unk>``, ``<s>`` and ``</s>``; the words follow by
decreasing training count (ties alphabetically), those seen at least ``min_count`` times, at
most ``size`` of them. The vocabulary travels as the dataset's ``meta`` (``{"vocabulary": [...]}``),
which the core writes into ``run.json`` and hands to the text components, so a trained model
loads without rebuilding it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from vaecore.errors import ConfigError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
META_KEY = "vocabulary"


class Vocabulary:
    """Words to ids and back; ``words[i]`` is the word of id i (the specials first)."""

    def __init__(self, words: Sequence[str]):
        if tuple(words[:4]) != SPECIALS:
            raise ConfigError(f"a vocabulary starts with {', '.join(SPECIALS)}; got {list(words[:4])}")
        self.words = list(words)
        self.ids = {word: i for i, word in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], size: int | None = None, min_count: int = 1) -> Vocabulary:
        """The vocabulary of tokenised training ``sentences``."""
        counts = Counter(token for sentence in sentences for token in sentence)
        kept = sorted(
            (w for w, c in counts.items() if c >= min_count and w not in SPECIALS), key=lambda w: (-counts[w], w)
        )
        return cls([*SPECIALS, *kept[:size]])

    def encode(self, sentences: Sequence[Sequence[str]], length: int) -> torch.Tensor:
        """``(N, length)`` int64 ids: each sentence's words, ``</s>``, then ``<pad>`` (sentences
        must have at most ``length - 1`` words). Unknown words are ``<unk>``."""
        out = torch.full((len(sentences), length), PAD_ID, dtype=torch.int64)
        get = self.ids.get
        flat = [[get(w, UNK_ID) for w in sentence] + [EOS_ID] for sentence in sentences]
        for row, ids in enumerate(flat):
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """The sentence of one row of ids: its words up to ``</s>`` (or the first ``<pad>``)."""
        words = []
        for i in ids:
            if i in (EOS_ID, PAD_ID):
                break
            words.append(self.words[i] if 0 <= i < len(self.words) else UNK)
        return " ".join(words)

    def meta(self) -> dict[str, Any]:
        """The dataset metadata that carries this vocabulary (``Dataset.meta``)."""
        return {META_KEY: list(self.words)}

    @classmethod
    def from_meta(cls, data_meta: dict[str, Any] | None, what: str) -> Vocabulary:
        """The vocabulary a component is built with; a clear error when the data gave none."""
        words = (data_meta or {}).get(META_KEY)
        if not words:
            raise ConfigError(
                f"{what} needs a vocabulary: use a text dataset of the 'text' plugin "
                "(data.name = 'sentences', 'labelled' or 'kjv'), whose training split builds it"
            )
        return cls(words)
