"""Components from plugins and import paths: registration, options, errors, a run end to end,
configs of the first release, and the component interface (tests/component_plugin.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import vaecore
from tests.component_plugin import ContinuousBernoulli, GatedEncoder, LinearDecoder, Toykit
from vaecore import ConfigError
from vaecore.config import EncoderConfig, dump_config, load_config
from vaecore.testing import load, make_registry, tiny_config
from vaecore.trainer import Trainer

SMALL_STRIPES = {"name": "stripes", "rows": 96}


def toykit_config(**sections):
    model = {
        "latent_dim": 3,
        "encoder": {"kind": "gated", "width": 8},
        "decoder": {"kind": "linear"},
        "likelihood": {"kind": "continuous_bernoulli"},
    }
    return tiny_config([{"name": "toykit"}], model=model, data=SMALL_STRIPES, **sections)


@pytest.fixture
def registry():
    return make_registry({"toykit": Toykit}, entry_points=False)


def problems(raw, registry):
    with pytest.raises(ConfigError) as err:
        load(raw, registry)
    return err.value.problems


def test_a_run_trains_on_components_registered_by_a_plugin(registry, tmp_path):
    config = load(toykit_config(), registry)
    assert config.model.encoder.options.width == 8 and config.data.options.rows == 96
    assert config.model.encoder.component.origin == "toykit"
    trainer = Trainer(config, tmp_path / "run", registry=registry)
    result = trainer.fit()
    model = trainer.model
    assert isinstance(model.encoder, GatedEncoder) and model.encoder.feature_dim == 8
    assert isinstance(model.decoder, LinearDecoder) and isinstance(model.likelihood, ContinuousBernoulli)
    assert len(trainer.dataset.train) == 96 and trainer.dataset.input_shape == (16,)
    # the plugin's KL schedule is the weight used and logged
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {r["train.kl_weight"] for r in records} == {0.5}
    assert np.isfinite(result["nll"]) and result["kl"] > 0
    # the resolved config writes each component's options beside its kind, and reads back equal
    text = dump_config(config)
    assert 'kind = "gated"\nwidth = 8' in text and "rows = 96" in text
    assert load_config(tmp_path / "run" / "config.toml", registry=registry) == config


def test_a_component_needs_its_plugin_listed(registry):
    raw = toykit_config()
    raw["plugins"] = []
    found = problems(raw, registry)
    assert found[0].startswith("data.name: unknown dataset 'stripes'; available: binarized_mnist, circle, ")
    assert (
        "model.encoder.kind: unknown encoder 'gated'; available: conv, mlp, resnet (a plugin's components" in found[1]
    )
    assert any(p.startswith("model.likelihood.kind: unknown likelihood 'continuous_bernoulli'") for p in found)


def test_component_options_are_validated_like_plugin_options(registry):
    raw = toykit_config()
    raw["model"]["encoder"] = {"kind": "gated", "width": 0, "depth": 2}
    raw["model"]["decoder"] = {"kind": "linear", "hidden": [4]}
    raw["data"] = {"name": "stripes", "rows": "many", "colour": "red"}
    assert sorted(problems(raw, registry)) == sorted(
        [
            "data.colour: unknown key (dataset 'stripes' takes rows, side; the table's own keys: binarize, digits, "
            "download, n_points, name, noise, path, root, seed, subset, test_size, train_size, valid_holdout, "
            "valid_size)",
            "data.rows: expected an integer, got 'many'",
            "model.encoder.depth: unknown key (encoder 'gated' takes width; the table's own keys: kind)",
            "model.decoder.hidden: unknown key (decoder 'linear' takes no options; the table's own keys: kind)",
            "model.encoder.width: must be > 0, got 0",
        ]
    )
    raw = toykit_config()
    raw["model"]["encoder"]["width"] = 0
    assert problems(raw, registry) == ["model.encoder.width: must be > 0, got 0"]


def test_a_class_named_by_import_path_needs_no_plugin(tmp_path):
    raw = tiny_config(
        model={"encoder": {"kind": "tests.component_plugin:GatedEncoder", "width": 5}},
        data={"train_size": 200, "valid_size": 100, "test_size": 100},
    )
    config = load(raw)
    assert config.model.encoder.component.origin == "import path"
    trainer = Trainer(config, tmp_path / "run")
    trainer.fit()
    assert isinstance(trainer.model.encoder, GatedEncoder) and trainer.model.encoder.feature_dim == 5
    assert load_config(tmp_path / "run" / "config.toml") == config


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (
            "no_such_pkg.nets:Enc",
            "model.encoder.kind: cannot import module 'no_such_pkg.nets' of 'no_such_pkg.nets:Enc': "
            "ModuleNotFoundError: No module named 'no_such_pkg'",
        ),
        (
            "tests.component_plugin:Missing",
            "model.encoder.kind: module 'tests.component_plugin' has no attribute "
            "'Missing' (from 'tests.component_plugin:Missing')",
        ),
        (
            "tests.component_plugin:SMALL",
            "model.encoder.kind: module 'tests.component_plugin' has no attribute 'SMALL'",
        ),
        ("tests.component_plugin:math", "model.encoder.kind: 'tests.component_plugin:math' is not a class or function"),
    ],
)
def test_a_bad_import_path_is_one_line(kind, message):
    found = problems(tiny_config(model={"encoder": {"kind": kind}}), make_registry(entry_points=False))
    assert len(found) == 1 and found[0].startswith(message), found


class Clash:
    api_version = vaecore.HOOK_API_VERSION

    @staticmethod
    @vaecore.hookimpl
    def components():
        return [vaecore.Component("encoder", "mlp", GatedEncoder)]


class OnInstance:
    api_version = vaecore.HOOK_API_VERSION

    @vaecore.hookimpl
    def components(self):
        return []


class NotAComponent:
    api_version = vaecore.HOOK_API_VERSION

    @staticmethod
    @vaecore.hookimpl
    def components():
        return [("encoder", "x", GatedEncoder)]


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        (Clash, "plugins: encoder 'mlp' is registered by both 'vaecore' and 'bad'; a name may be registered once"),
        (OnInstance, "hook components must be a @staticmethod or @classmethod (it is called on the class"),
        (NotAComponent, "plugin 'bad' failed in components: returned ('encoder', 'x', "),
    ],
)
def test_bad_registrations_are_refused_with_the_plugin_named(plugin, message):
    registry = make_registry({"bad": plugin}, entry_points=False)
    found = problems(tiny_config([{"name": "bad"}]), registry)
    assert any(message in p for p in found), found
    # `vaecore plugins` makes the same check: its status is not ok
    from vaecore.cli import plugin_rows

    (row,) = plugin_rows(registry)
    if plugin is Clash:  # a clash is a property of a stack, not of the plugin alone
        assert row["status"] == "ok" and row["components"] == ["encoder mlp"]
    else:
        assert row["status"].startswith("error: ") and message.removeprefix("plugins: ") in row["status"]


def test_configs_of_the_first_release_still_load():
    """The first release wrote every shared network key, whatever the kind; at those defaults
    they are dropped for a kind that does not take them, at any other value they are refused."""
    old = {
        "encoder": {
            "kind": "conv",
            "hidden": [500, 500],
            "activation": "tanh",
            "batch_norm": True,
            "width": 32,
            "z_channels": 4,
            "channels": [8, 16],
        },
        "decoder": {
            "kind": "pixelcnn",
            "hidden": [500, 500],
            "activation": "tanh",
            "batch_norm": True,
            "width": 16,
            "z_channels": 4,
        },
        "likelihood": {"kind": "bernoulli", "scale": 1.0, "learn_scale": False},
    }
    config = load(tiny_config(model=old))
    assert (
        config.model
        == load(
            tiny_config(
                model={
                    "encoder": {"kind": "conv", "channels": [8, 16]},
                    "decoder": {"kind": "pixelcnn", "width": 16},
                    "likelihood": {"kind": "bernoulli"},
                }
            )
        ).model
    )
    old["encoder"]["hidden"] = [200]
    assert problems(tiny_config(model=old), make_registry(entry_points=False)) == [
        "model.encoder.hidden: unknown key (encoder 'conv' takes batch_norm, channels, features; "
        "the table's own keys: kind)"
    ]


def test_component_tables_from_python():
    table = EncoderConfig.of("conv", channels=[4])
    assert table.options.channels == [4] and table.options.batch_norm is True
    net = table.build(input_shape=(16,), latent_dim=2)
    assert net(torch.zeros(3, 16))[0].shape == (3, 2)
    with pytest.raises(ConfigError, match="unknown encoder 'lstm'"):
        EncoderConfig(kind="lstm")


def test_continuous_bernoulli_is_normalised():
    """exp(log p(x)) integrates to 1 over [0, 1] (trapezoid rule on 20001 points), for
    parameters on both sides of and at lambda = 1/2, where the normaliser switches to its series."""
    lik = ContinuousBernoulli((1,))
    x = torch.linspace(0, 1, 20001, dtype=torch.float64)[:, None]
    for logit in (-3.0, -0.5, 0.0, 1e-4, 2.0):
        params = torch.full((20001, 1), logit, dtype=torch.float64)
        density = lik.log_prob_pixels(x, params).exp()[:, 0]
        assert float(torch.trapezoid(density, x[:, 0])) == pytest.approx(1.0, abs=1e-6), logit
        mean = float(torch.trapezoid(density * x[:, 0], x[:, 0]))
        assert float(lik.mean(params[:1])) == pytest.approx(mean, abs=1e-5), logit
