"""The plugin's whole-split loop (``estimate``) streams the split to the model's device through
``vaecore.encode_split`` / ``vaecore.device_batches`` (issue 18, item 8)."""

from __future__ import annotations

import math

import pytest
import torch
from as_helpers import AS_ID, as_entry
from vaecore_as import estimate

import vaecore.streaming
from vaecore.hooktypes import Batch
from vaecore.testing import make_model, make_registry, synthetic_dataset, tiny_config

N_TRAIN = 256


def _model():
    data = synthetic_dataset(N_TRAIN)
    model = make_model(tiny_config([as_entry(alpha=2.0, hidden=[8])], model={"latent_dim": 3}), data, make_registry())
    return model, data


def test_estimate_encodes_the_batches_moved_to_the_models_device(monkeypatch):
    # No accelerator here, so the move is faked: the model is said to be on "cuda:0" (the
    # streaming helpers' view of its device) and Batch.to, which device_batches calls for any
    # non-CPU device, hands back recorded copies. A loop that reads split.batches() itself, or that
    # does not move what it reads, encodes batches that are not among the moved ones.
    model, data = _model()
    model.train()
    plugin = model.plugins[AS_ID]
    fake = torch.device("cuda", 0)
    moved: list[Batch] = []

    def to(batch: Batch, device: torch.device) -> Batch:
        assert device == fake
        copy = Batch(batch.x.clone(), batch.index.clone(), batch.y)
        moved.append(copy)
        return copy

    monkeypatch.setattr(vaecore.streaming, "model_device", lambda _model: fake)
    monkeypatch.setattr(Batch, "to", to)
    encoded, indices = [], []
    encode, statistics = model.encode, plugin.statistics

    def spy_encode(x, ctx):
        encoded.append((x, ctx.batch, model.training))
        return encode(x, ctx)

    def spy_statistics(y, index):
        indices.append(index)
        return statistics(y, index)

    monkeypatch.setattr(model, "encode", spy_encode)
    monkeypatch.setattr(plugin, "statistics", spy_statistics)
    est = estimate(model, plugin, data.train, batch_size=100)
    assert len(moved) == math.ceil(N_TRAIN / 100)
    assert all(x is b.x and batch is b for (x, batch, _), b in zip(encoded, moved, strict=True))
    assert all(i is b.index for i, b in zip(indices, moved, strict=True))
    assert not any(training for _, _, training in encoded)  # encoded in eval mode ...
    assert model.training  # ... and the mode restored
    assert est["md"] == pytest.approx(est["kl"] - est["mi"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_estimate_on_cuda():
    model, data = _model()
    model.to("cuda")
    plugin = model.plugins[AS_ID]
    est = estimate(model, plugin, data.train, batch_size=100)  # the split stays on the CPU
    assert all(math.isfinite(v) for v in est.values())
    assert est["mi_ba"] == pytest.approx(plugin.log_n - est["sc"])
