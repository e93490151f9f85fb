"""The LSTM encoder and decoder of the text VAEs (He et al. 2019; Bowman et al. 2016).

Both take batches of ids ``(B, L)`` padded with ``<pad>`` and trim them to the longest sentence
of the batch first, so a batch of short sentences costs what its sentences cost.

* encoder: embedding, one LSTM layer, the hidden state at each sentence's last token (its
  ``</s>``), a linear layer to the mean and log-variance of q(y|x);
* decoder: embedding of ``<s>`` and the words, one LSTM layer, a linear layer to logits over the
  vocabulary. z enters at the initial state (c0 = W z, h0 = tanh(c0), He et al.'s code), at every
  input (concatenated to each embedding), or both (``z_at``); word dropout (Bowman et al.)
  replaces input words by ``<unk>`` in training. ``<pad>`` and ``<s>`` are never targets, so
  their logits are pinned very low (they are never drawn).
"""

from __future__ import annotations

from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from vaecore import validators as v
from vaecore.likelihoods import Likelihood
from vaecore_text.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Vocabulary

NEVER = -1e4
"""The logit of a token the decoder never emits (``<pad>``, ``<s>``): probability ~ e^-10000."""


@attrs.define(kw_only=True)
class LSTMEncoderOptions:
    """``lstm`` encoder."""

    embed: int = attrs.field(default=512, validator=v.gt(0))
    """embedding size (He et al.: 512)"""
    hidden: int = attrs.field(default=1024, validator=v.gt(0))
    """LSTM units (He et al.: 1024)"""


@attrs.define(kw_only=True)
class LSTMDecoderOptions:
    """``lstm`` decoder."""

    embed: int = attrs.field(default=512, validator=v.gt(0))
    """embedding size (He et al.: 512)"""
    hidden: int = attrs.field(default=1024, validator=v.gt(0))
    """LSTM units (He et al.: 1024)"""
    z_at: str = attrs.field(default="both", validator=v.one_of(("init", "input", "both")))
    """where z conditions the LSTM: its initial state, every input, or both (He et al.: both)"""
    word_dropout: float = attrs.field(default=0.0, validator=v.between(0.0, 1.0))
    """probability of replacing each input word by <unk> in training (Bowman et al.); 0: off"""
    dropout: float = attrs.field(default=0.0, validator=v.between(0.0, 1.0))
    """dropout on the input embeddings and the LSTM outputs in training (He et al.: 0.5)"""


def lengths_of(x: torch.Tensor) -> torch.Tensor:
    """Tokens per sentence (``</s>`` included), at least 1."""
    return (x != PAD_ID).sum(-1).clamp_min(1)


class LSTMEncoder(nn.Module):
    """ids -> embedding -> LSTM -> the hidden state at the last token -> (mean, log-variance)."""

    Options = LSTMEncoderOptions

    def __init__(
        self, options: LSTMEncoderOptions, input_shape: tuple[int, ...], latent_dim: int, data_meta: dict[str, Any]
    ):
        super().__init__()
        vocab = Vocabulary.from_meta(data_meta, "model.encoder 'lstm'")
        self.embedding = nn.Embedding(len(vocab), options.embed, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(options.embed, options.hidden, batch_first=True)
        self.head = nn.Linear(options.hidden, 2 * latent_dim)
        self.feature_dim = options.hidden

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x.long()
        lengths = lengths_of(x)
        x = x[:, : int(lengths.max())]
        out, _ = self.lstm(self.embedding(x))
        h = out[torch.arange(x.shape[0], device=x.device), lengths - 1]
        loc, log_var = self.head(h).chunk(2, dim=-1)
        return loc, log_var, h


class LSTMDecoder(nn.Module):
    """p(x|z) = prod_t p(x_t | x_<t, z) with an LSTM over ``<s> x_1 ... x_{T-1}``."""

    autoregressive = True
    Options = LSTMDecoderOptions

    def __init__(
        self, options: LSTMDecoderOptions, latent_dim: int, param_shape: tuple[int, ...], data_meta: dict[str, Any]
    ):
        super().__init__()
        vocab = Vocabulary.from_meta(data_meta, "model.decoder 'lstm'")
        self.length, n_words = param_shape
        if n_words != len(vocab):
            raise ValueError(
                f"the lstm decoder needs the categorical likelihood ({len(vocab)} words), got {param_shape}"
            )
        self.options = options
        self.z_input = options.z_at in ("input", "both")
        self.z_init = options.z_at in ("init", "both")
        self.embedding = nn.Embedding(n_words, options.embed, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(options.embed + (latent_dim if self.z_input else 0), options.hidden, batch_first=True)
        self.init = nn.Linear(latent_dim, options.hidden) if self.z_init else None
        self.drop = nn.Dropout(options.dropout)
        self.output = nn.Linear(options.hidden, n_words)
        never = torch.zeros(n_words)
        never[[PAD_ID, BOS_ID]] = NEVER
        self.never: torch.Tensor
        self.register_buffer("never", never, persistent=False)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Logits over the vocabulary; ``<pad>`` and ``<s>``, never a target, get ``NEVER``."""
        return F.linear(h, self.output.weight, self.output.bias + self.never)

    def initial_state(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.init is None:
            return None
        c = self.init(z).unsqueeze(0)
        return torch.tanh(c), c

    def _inputs(self, tokens: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        e = self.drop(self.embedding(tokens))
        if self.z_input:
            e = torch.cat([e, z.unsqueeze(1).expand(-1, tokens.shape[1], -1)], -1)
        return e

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits ``(N, L', V)`` of each token given z and the tokens before it,
        L' the longest sentence of the batch."""
        x = x.long()
        width = int(lengths_of(x).max())
        inputs = torch.cat([torch.full_like(x[:, :1], BOS_ID), x[:, : width - 1]], 1)
        if self.training and self.options.word_dropout > 0:
            drop = torch.rand(inputs.shape, device=inputs.device) < self.options.word_dropout
            drop[:, 0] = False  # <s> stays
            inputs = inputs.masked_fill(drop & (inputs != PAD_ID), UNK_ID)
        out, _ = self.lstm(self._inputs(inputs, z), self.initial_state(z))
        return self.logits(self.drop(out))

    @torch.no_grad()
    def generate(
        self, z: torch.Tensor, likelihood: Likelihood, greedy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sentences drawn token by token (each from ``likelihood`` given the tokens so far, the
        mode when ``greedy``), until ``</s>`` or the length cap: ``(ids (N, L), logits (N, L, V))``,
        ``<pad>`` after ``</s>`` (its logits put all mass on ``<pad>``, which the likelihood masks)."""
        n, length = z.shape[0], self.length
        ids = torch.full((n, length), PAD_ID, dtype=torch.int64, device=z.device)
        logits = torch.full((n, length, self.output.out_features), NEVER, device=z.device)
        logits[..., PAD_ID] = 0.0
        token = torch.full((n, 1), BOS_ID, dtype=torch.int64, device=z.device)
        state = self.initial_state(z)
        done = torch.zeros(n, dtype=torch.bool, device=z.device)
        for t in range(length):
            out, state = self.lstm(self._inputs(token, z), state)
            step = self.logits(out)  # (n, 1, V)
            drawn = (likelihood.mode(step) if greedy else likelihood.sample(step)).long()
            if t == length - 1:
                drawn = torch.full_like(drawn, EOS_ID)  # the cap: the last position ends the sentence
            live = ~done
            ids[live, t] = drawn[live, 0]
            logits[live, t] = step[live, 0]
            done = done | (drawn[:, 0] == EOS_ID)
            if bool(done.all()):
                break
            token = drawn
        return ids, logits
