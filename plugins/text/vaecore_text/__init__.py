"""Text VAEs for vaecore: sentence corpora, a vocabulary, LSTM networks and the categorical
likelihood, registered as components of the plugin ``text`` (He et al. 2019; Bowman et al. 2016).

List the plugin in a config to name its components::

    [data]
    name = "kjv"                  # or "sentences" (one a line), "labelled" (label<TAB>text)
    path = "kjv_verses.tsv.gz"

    [model]
    encoder = { kind = "lstm", embed = 128, hidden = 256 }
    decoder = { kind = "lstm", embed = 128, hidden = 256, z_at = "both" }
    likelihood = { kind = "categorical" }

    [[plugins]]
    name = "text"
"""

from __future__ import annotations

import vaecore
from vaecore_text.corpora import KJVOptions, TextOptions, load_kjv, load_labelled, load_sentences
from vaecore_text.likelihood import Categorical
from vaecore_text.networks import LSTMDecoder, LSTMEncoder
from vaecore_text.vocab import Vocabulary

__all__ = ["Categorical", "LSTMDecoder", "LSTMEncoder", "TextPlugin", "Vocabulary"]


class TextPlugin:
    """Registers the text components; it has no hooks of its own."""

    api_version = vaecore.HOOK_API_VERSION

    @staticmethod
    @vaecore.hookimpl
    def components() -> list[vaecore.Component]:
        return [
            vaecore.Component(
                "dataset",
                "sentences",
                load_sentences,
                options=TextOptions,
                doc="one sentence a line: data.path/*train.txt, *valid.txt, *test.txt (PTB)",
            ),
            vaecore.Component(
                "dataset",
                "labelled",
                load_labelled,
                options=TextOptions,
                doc="label<TAB>text a line: data.path/*train.txt, *valid.txt, *test.txt (Yahoo, Yelp)",
            ),
            vaecore.Component(
                "dataset",
                "kjv",
                load_kjv,
                options=KJVOptions,
                doc="the KJV verses (kjv_verses.tsv.gz), split at random with data.seed",
            ),
            vaecore.Component("encoder", "lstm", LSTMEncoder, doc="embedding, LSTM, last hidden state (embed, hidden)"),
            vaecore.Component(
                "decoder", "lstm", LSTMDecoder, doc="LSTM on z (embed, hidden, z_at, word_dropout, dropout)"
            ),
            vaecore.Component(
                "likelihood", "categorical", Categorical, doc="categorical over the vocabulary, <pad> masked"
            ),
        ]
