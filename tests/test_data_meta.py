"""Data metadata through the core (``Dataset.meta`` -> ``run.json`` ``data_meta`` -> the
components), integer inputs, ``Likelihood.units`` (``nll_per_unit``, ``ppl``) and
``Likelihood.render`` (text in the analysis commands), on a toy token model written against
the public API alone (no text plugin installed)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vaecore
from vaecore.components import Component, takes_argument
from vaecore.data import Dataset, Split
from vaecore.errors import CheckpointError
from vaecore.likelihoods import Likelihood
from vaecore.metrics import ImportanceSampledNLL
from vaecore.provenance import read_sample, write_sample
from vaecore.restore import export_run, load_exported, load_run
from vaecore.testing import make_registry, run_training, tiny_config

WORDS = ["a", "b", "c", "d", "e"]
LENGTH = 25  # a square number: the inputs would pass for 5x5 images


def tokens(data) -> Dataset:
    gen = torch.Generator().manual_seed(0)

    def split(n):
        return Split(torch.randint(0, len(WORDS), (n, LENGTH), generator=gen))

    return Dataset("tokens", split(64), split(16), split(16), binary=False, meta={"words": list(WORDS)})


class TokenEncoder(nn.Module):
    def __init__(self, input_shape, latent_dim, data_meta):
        super().__init__()
        self.embed = nn.Embedding(len(data_meta["words"]), 4)
        self.head = nn.Linear(4 * input_shape[0], 2 * latent_dim)
        self.feature_dim = 4 * input_shape[0]

    def forward(self, x):
        h = self.embed(x).flatten(1)
        loc, log_var = self.head(h).chunk(2, -1)
        return loc, log_var, h


class TokenDecoder(nn.Module):
    autoregressive = False

    def __init__(self, latent_dim, param_shape, data_meta):
        super().__init__()
        assert param_shape == (LENGTH, len(data_meta["words"]))
        self.param_shape = param_shape
        self.net = nn.Linear(latent_dim, LENGTH * len(data_meta["words"]))

    def forward(self, z):
        return self.net(z).view(z.shape[0], *self.param_shape)


class Words(Likelihood):
    """A categorical per position; every position is a unit."""

    def __init__(self, input_shape, data_meta):
        super().__init__()
        self.words = data_meta["words"]

    def param_shape(self, input_shape):
        return (input_shape[0], len(self.words))

    def log_prob_pixels(self, x, params):
        return -F.cross_entropy(params.movedim(-1, 1), x.expand(params.shape[:-1]), reduction="none")

    def mean(self, params):
        return params.argmax(-1)

    def sample(self, params):
        return torch.distributions.Categorical(logits=params).sample()

    def units(self, x):
        return torch.full(x.shape[:1], x.shape[-1])

    def render(self, x):
        return [" ".join(self.words[i] for i in row) for row in x.long().tolist()]


class TokenKit:
    api_version = vaecore.HOOK_API_VERSION

    @staticmethod
    @vaecore.hookimpl
    def components():
        return [
            Component("dataset", "tokens", tokens),
            Component("encoder", "tokens", TokenEncoder),
            Component("decoder", "tokens", TokenDecoder),
            Component("likelihood", "words", Words),
        ]


@pytest.fixture
def registry():
    return make_registry({"tokenkit": TokenKit}, entry_points=False)


def raw_config():
    return tiny_config(
        [{"name": "tokenkit"}],
        data={"name": "tokens"},
        model={"encoder": {"kind": "tokens"}, "decoder": {"kind": "tokens"}, "likelihood": {"kind": "words"}},
        eval={"nll_samples": 4, "probes": False},
    )


@pytest.fixture
def trained(registry, tmp_path):
    from vaecore.data import load_dataset
    from vaecore.testing import load

    config = load(raw_config(), registry)
    trainer, results = run_training(raw_config(), tmp_path / "run", load_dataset(config.data), registry)
    return trainer, tmp_path / "run", results


@pytest.fixture
def run(trained):
    return trained[1:]


def test_text_gets_no_image_grids(trained):
    assert trained[0]._image_grids() == {}  # 25 token ids are not a 5x5 image


def test_data_meta_reaches_only_the_factories_that_name_it():
    assert takes_argument(TokenEncoder, "data_meta") and not takes_argument(nn.Linear, "data_meta")
    seen = {}

    def factory(input_shape, **rest):
        seen.update(rest)
        return input_shape

    assert Component("encoder", "x", factory).build(None, input_shape=(1,), data_meta={"k": 1}) == (1,)
    assert seen == {"data_meta": {"k": 1}}
    built = Component("encoder", "y", lambda input_shape: input_shape).build(None, input_shape=(2,), data_meta={})
    assert built == (2,)


def test_run_json_records_the_meta_and_eval_the_units(run):
    path, results = run
    manifest = json.loads((path / "run.json").read_text())
    assert manifest["data_meta"] == {"words": WORDS}
    assert results["nll_per_unit"] == pytest.approx(results["nll"] / LENGTH)
    assert results["ppl"] == pytest.approx(math.exp(results["nll_per_unit"]))


def test_load_run_rebuilds_from_the_recorded_meta(run, registry, tmp_path):
    path, _ = run
    loaded = load_run(path, registry=registry)
    assert loaded.model.data_meta == {"words": WORDS} and loaded.dataset.meta == {"words": WORDS}
    exported = load_exported(export_run(loaded, tmp_path / "m.pt"), registry=registry)
    assert exported.data_meta == {"words": WORDS}
    manifest = json.loads((path / "run.json").read_text())
    manifest["data_meta"] = {"words": [*WORDS, "f"]}
    (path / "run.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="vocabulary changed"):
        load_run(path, registry=registry)


def test_integer_inputs_survive_the_stored_sample(tmp_path):
    x = torch.tensor([[3, 1, 4], [1, 5, 9]])
    write_sample(tmp_path / "s.npz", Split(x))
    with np.load(tmp_path / "s.npz") as stored:
        assert stored["x"].dtype == np.int64
    back = read_sample(tmp_path / "s.npz", "tokens", False, {"words": WORDS})
    assert back.test.x.dtype == torch.int64 and torch.equal(back.test.x.sort(0).values, x.sort(0).values)
    assert back.meta == {"words": WORDS}
    floats = Split(torch.tensor([[0.0, 1.0], [1.0, 1.0]]))
    write_sample(tmp_path / "f.npz", floats)
    assert read_sample(tmp_path / "f.npz", "b", True).test.x.dtype == torch.float32


def test_nll_per_unit_is_the_summed_nll_over_the_summed_units():
    metric = ImportanceSampledNLL()
    log_w = torch.log(torch.tensor([[0.5, 0.25], [0.5, 0.25]], dtype=torch.float64))
    metric.update(log_w, torch.tensor([2, 6]))
    out = metric.compute()
    assert float(out["nll_per_unit"]) == pytest.approx((math.log(2) + math.log(4)) / 8)
    assert float(out["ppl"]) == pytest.approx(math.exp(float(out["nll_per_unit"])))
    plain = ImportanceSampledNLL()
    plain.update(log_w)
    assert "ppl" not in plain.compute()


def test_analysis_commands_render_text(run, registry, tmp_path):
    pytest.importorskip("matplotlib")
    from vaecore.analysis import commands

    path, _ = run
    loaded = load_run(path, registry=registry)
    result = commands.sample(loaded, tmp_path / "s", n=4)
    assert result["figures"] == [] and len(result["text"]["prior samples (sampled)"]) == 4
    assert all(set(s.split()) <= set(WORDS) for s in result["text"]["reconstructions (greedy)"])
    assert len(result["text"]["reconstructions (sampled)"]) == 4
    assert "fisher-rao" in commands.interpolate(loaded, tmp_path / "i", 0, 1, steps=3)["text"]
    assert "random direction" in commands.traverse(loaded, tmp_path / "t", dims=2, steps=3)["text"]


def test_images_are_not_text(tiny_data):
    assert Likelihood().render(tiny_data.test.x) is None and Likelihood().units(tiny_data.test.x) is None


def test_autoregressive_decode_mean_is_greedy(tiny_data):
    from vaecore.analysis.commands import decode_mean
    from vaecore.testing import make_model

    raw = tiny_config(model={"decoder": {"kind": "pixelcnn", "kernel_sizes": [3, 3], "width": 4, "z_channels": 1}})
    model = make_model(raw, tiny_data).eval()
    y = torch.randn(2, model.latent_dim)
    torch.manual_seed(0)
    first = decode_mean(model, y)
    torch.manual_seed(1)
    assert torch.equal(first, decode_mean(model, y))  # no random draw: the greedy decoding
    assert torch.equal(first, model.likelihood.mean(model.generate(model.latent_map(y), greedy=True)[1]))
