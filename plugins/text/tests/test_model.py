"""The decoder's log-likelihood against a per-token reference, padding, generation, rendering."""

from __future__ import annotations

import attrs
import pytest
import torch
from vaecore_text.likelihood import Categorical
from vaecore_text.networks import LSTMDecoder, LSTMDecoderOptions, LSTMEncoder, LSTMEncoderOptions
from vaecore_text.vocab import BOS_ID, EOS_ID, PAD_ID, Vocabulary

WORDS = ["the", "cat", "sat", "on", "mat", "dog"]
META = Vocabulary([*("<pad>", "<unk>", "<s>", "</s>"), *WORDS]).meta()
LENGTH = 7


def batch() -> torch.Tensor:
    rows = [[4, 5, 6, 7, 4, 8, EOS_ID], [4, 9, 6, EOS_ID, 0, 0, 0], [5, EOS_ID, 0, 0, 0, 0, 0]]
    return torch.tensor(rows)


def decoder(z_at: str = "both", **options) -> LSTMDecoder:
    return LSTMDecoder(LSTMDecoderOptions(embed=5, hidden=6, z_at=z_at, **options), 3, (LENGTH, 10), META)


def reference_log_likelihood(dec: LSTMDecoder, z: torch.Tensor, x: torch.Tensor) -> list[float]:
    """log p(x|z) by stepping the LSTM cell one token at a time, summing torch.log_softmax of
    each target until </s>: a second implementation, not the decoder's batched path."""
    cell = torch.nn.LSTMCell(dec.lstm.input_size, dec.lstm.hidden_size)
    cell.weight_ih.data, cell.weight_hh.data = dec.lstm.weight_ih_l0.data, dec.lstm.weight_hh_l0.data
    cell.bias_ih.data, cell.bias_hh.data = dec.lstm.bias_ih_l0.data, dec.lstm.bias_hh_l0.data
    totals = []
    for n in range(x.shape[0]):
        zn = z[n : n + 1]
        if dec.init is not None:
            c = dec.init(zn)
            h = torch.tanh(c)
        else:
            h = c = torch.zeros(1, dec.lstm.hidden_size)
        previous, total = BOS_ID, 0.0
        for t in range(x.shape[1]):
            target = int(x[n, t])
            if target == PAD_ID:
                break
            e = dec.embedding.weight[previous].unsqueeze(0)
            if dec.z_input:
                e = torch.cat([e, zn], -1)
            h, c = cell(e, (h, c))
            logits = dec.output(h)[0].clone()
            logits[[PAD_ID, BOS_ID]] = -1e4  # never targets: pinned low by the decoder
            total += float(torch.log_softmax(logits, -1)[target])
            previous = target
            if target == EOS_ID:
                break
        totals.append(total)
    return totals


@pytest.mark.parametrize("z_at", ["init", "input", "both"])
def test_log_likelihood_equals_a_per_token_reference(z_at):
    dec, lik = decoder(z_at).eval(), Categorical((LENGTH,), META)
    x, z = batch(), torch.randn(3, 3)
    with torch.no_grad():
        ours = lik.log_prob(x, dec(z, x).unsqueeze(0))[0]
        expected = reference_log_likelihood(dec, z, x)
    assert ours.tolist() == pytest.approx(expected, abs=1e-5)


@torch.no_grad()
def test_padding_is_masked_and_batches_are_trimmed():
    dec, lik = decoder().eval(), Categorical((LENGTH,), META)
    x, z = batch()[1:], torch.randn(2, 3)
    params = dec(z, x)
    assert params.shape == (2, 4, 10)  # the longest sentence of the batch: 3 words + </s>
    alone = lik.log_prob(x[1:], dec(z[1:], x[1:]).unsqueeze(0))[0]
    assert float(lik.log_prob(x, params.unsqueeze(0))[0, 1]) == pytest.approx(float(alone[0]), abs=1e-5)
    assert lik.units(batch()).tolist() == [7, 4, 2]


def test_word_dropout_only_in_training():
    dec = decoder(word_dropout=1.0)
    x, z = batch(), torch.randn(3, 3)
    dec.train()
    noisy = dec(z, x)
    dec.eval()
    clean = dec(z, x)
    assert not torch.allclose(noisy, clean)
    plain = decoder(word_dropout=0.0)
    plain.load_state_dict(dec.state_dict())
    assert torch.allclose(plain.eval()(z, x), clean)


def test_generation_stops_at_the_end_token_or_the_cap():
    dec, lik = decoder().eval(), Categorical((LENGTH,), META)
    with torch.no_grad():
        dec.output.bias.fill_(0.0)
        dec.output.bias[EOS_ID] = 50.0  # </s> at once
        ids, logits = dec.generate(torch.randn(4, 3), lik, greedy=True)
        assert ids[:, 0].tolist() == [EOS_ID] * 4 and (ids[:, 1:] == PAD_ID).all()
        assert logits.shape == (4, LENGTH, 10)
        assert (lik.log_prob(ids, logits) == lik.log_prob(ids, logits)).all()
        dec.output.bias[EOS_ID] = -50.0
        dec.output.bias[4] = 50.0  # "the" forever: cut at the cap, the last position </s>
        ids, _ = dec.generate(torch.randn(2, 3), lik, greedy=False)
        assert ids[:, -1].tolist() == [EOS_ID] * 2 and (ids[:, :-1] == 4).all()
    assert lik.render(ids) == ["the the the the the the"] * 2


def test_log_prob_of_a_draw_is_its_generation_probability():
    dec, lik = decoder().eval(), Categorical((LENGTH,), META)
    torch.manual_seed(1)
    z = torch.randn(5, 3)
    with torch.no_grad():
        ids, logits = dec.generate(z, lik)
        teacher = lik.log_prob(ids, dec(z, ids).unsqueeze(0))[0]
        drawn = lik.log_prob(ids, logits.unsqueeze(0))[0]
    assert drawn.tolist() == pytest.approx(teacher.tolist(), abs=1e-4)


def test_encoder_reads_up_to_the_last_token():
    enc = LSTMEncoder(LSTMEncoderOptions(embed=5, hidden=6), (LENGTH,), 3, META).eval()
    x = batch()
    loc, _, h = enc(x)
    assert loc.shape == (3, 3) and h.shape == (3, 6)
    wider = torch.cat([x, torch.zeros(3, 5, dtype=torch.long)], 1)
    assert torch.allclose(enc(wider)[0], loc)  # padding after </s> changes nothing


def test_render_and_check_data():
    lik = Categorical((LENGTH,), META)
    assert lik.render(batch()) == ["the cat sat on the mat", "the dog sat", "cat"]
    assert lik.param_shape((LENGTH,)) == (LENGTH, 10)
    assert lik.check_data(False, 0, 9) is None
    assert "token ids in [0, 9]" in lik.check_data(False, 0, 10)


def test_components_without_a_vocabulary_say_what_is_missing():
    from vaecore.errors import ConfigError

    with pytest.raises(ConfigError, match="needs a vocabulary"):
        Categorical((LENGTH,), {})
    with pytest.raises(ConfigError, match="needs a vocabulary"):
        LSTMEncoder(attrs.evolve(LSTMEncoderOptions()), (LENGTH,), 3, {})
