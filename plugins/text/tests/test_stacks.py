"""Every method composes with the text components: a few steps of each stack on a toy corpus,
finite losses, and the method's own effect where it shows after a few steps."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import text_config

from vaecore.data import load_dataset
from vaecore.testing import load, make_registry, train_steps

STEPS = 3


def needs(plugin: str):
    """Skip where the method's plugin is not installed (nox's per-plugin session installs this
    plugin alone; the ``stack`` session installs them all)."""
    return pytest.mark.skipif(plugin not in make_registry().names(), reason=f"the {plugin!r} plugin is not installed")


def run(corpus, plugins=None, **sections):
    raw = text_config({"name": "sentences", "path": str(corpus)}, plugins, **sections)
    data = load_dataset(load(raw).data)
    return train_steps(raw, data, steps=STEPS), data


def finite(metrics):
    bad = {k: v for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)}
    assert not bad, bad
    assert math.isfinite(metrics["train.loss"]) and math.isfinite(metrics["valid.loss"])


def test_plain_lstm_vae_with_kl_warmup(corpus):
    result, _ = run(corpus, train={"kl_warmup": {"start": 0.1, "epochs": 10}})
    finite(result.metrics)
    assert result.metrics["train.kl_weight"] < 0.2  # the warm-up's first steps
    assert result.model.likelihood.name == "categorical"


def test_free_bits(corpus):
    result, _ = run(corpus, train={"free_bits": 2.0})
    m = result.metrics
    finite(m)
    # the KL of an untrained encoder is below 2 nats per dimension: the loss pays the floor
    assert m["train.loss"] > -m["train.elbo"] + 0.5 * 4 * 2.0 - m["train.kl"]


@needs("du")
def test_du(corpus):
    from vaecore_du.du import ALPHA

    result, data = run(corpus, [{"name": "du", "gamma": 0.5, "drop": 0.2}])
    finite(result.metrics)
    model = result.model.train()
    with torch.no_grad():
        posterior, _ = model.encode(data.train.x[:16], model.context(training=True))
    assert float(posterior.var.min()) >= ALPHA - 1e-6  # the variance floor
    assert abs(float(posterior.loc.mean(0).abs().max())) < 0.2  # batch-normalised means


@needs("ne")
def test_ne(corpus):
    result, _ = run(corpus, [{"name": "ne", "weight": 0.5}])
    finite(result.metrics)
    assert result.metrics["train.ne.reencode"] > 0


@needs("as")
def test_as(corpus):
    result, _ = run(corpus, [{"name": "as", "alpha": 1.0, "beta": 1.0}])
    finite(result.metrics)
    assert "train.as.mi" in result.metrics and "train.as.sc" in result.metrics


@needs("renyi")
@pytest.mark.parametrize("alpha", [0.0, "-inf"])
def test_renyi(corpus, alpha):
    result, _ = run(corpus, [{"name": "renyi", "alpha": alpha, "samples": 3}])
    finite(result.metrics)
    assert result.metrics["train.K"] == 3 and "train.iwae" in result.metrics


@needs("aggressive")
def test_aggressive(corpus):
    result, _ = run(corpus, [{"name": "aggressive", "max_inner": 4, "window": 2}])
    finite(result.metrics)
    assert result.metrics["aggressive.inner_steps"] > 1


def test_word_dropout_in_a_stack(corpus):
    result, _ = run(
        corpus,
        model={"decoder": {"kind": "lstm", "embed": 8, "hidden": 16, "word_dropout": 0.3, "z_at": "init"}},
    )
    finite(result.metrics)
    assert torch.isfinite(torch.tensor(result.metrics["valid.elbo"]))
