"""The categorical likelihood over a vocabulary, one distribution per token position.

The decoder gives logits ``(..., L', V)`` for the first L' positions of the batch (L' at most
the data's width: the decoder trims a batch to its longest sentence); positions that are
``<pad>`` in the target are masked out, so log p(x|z) sums over the words and ``</s>``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from vaecore.likelihoods import Likelihood
from vaecore_text.vocab import PAD_ID, Vocabulary


class Categorical(Likelihood):
    """A categorical distribution over the vocabulary at each position, ``<pad>`` masked out."""

    name = "categorical"

    def __init__(self, input_shape: tuple[int, ...], data_meta: dict[str, Any]):
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(f"the categorical likelihood models sentences of shape (length,), got {input_shape}")
        self.vocab = Vocabulary.from_meta(data_meta, "model.likelihood 'categorical'")

    def param_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (input_shape[0], len(self.vocab))

    def log_prob_pixels(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x_t | x_<t, z) at each position ``(..., L')``, 0 at ``<pad>`` targets."""
        width = params.shape[-2]
        if x.shape[-1] > width and bool((x[..., width:] != PAD_ID).any()):
            raise ValueError(f"the decoder scored {width} positions but the targets have tokens beyond them")
        target = x[..., :width].expand(params.shape[:-1])
        nll = F.cross_entropy(
            params.reshape(-1, params.shape[-1]), target.reshape(-1), ignore_index=PAD_ID, reduction="none"
        )
        return -nll.view(target.shape)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The most probable token at each position (a categorical over ids has no useful mean)."""
        return params.argmax(-1)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Categorical(logits=params).sample()

    def check_data(self, binary: bool, lo: float, hi: float) -> str | None:
        if lo < 0 or hi >= len(self.vocab) or lo != int(lo) or hi != int(hi):
            top = len(self.vocab) - 1
            return f"the categorical likelihood needs token ids in [0, {top}], the data spans [{lo:g}, {hi:g}]"
        return None

    def units(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens per sentence, ``</s>`` counted (the words of He et al.'s perplexity)."""
        return (x != PAD_ID).sum(-1)

    def render(self, x: torch.Tensor) -> list[str]:
        return [self.vocab.decode(row) for row in x.long().reshape(-1, x.shape[-1]).tolist()]
