"""Config: TOML to attrs classes, every problem reported at once with its path, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from tests.recording_plugins import ALL
from vaecore import ConfigError
from vaecore.config import apply_overrides, config_to_dict, dump_config, load_config
from vaecore.testing import load, make_registry, merge, tiny_config, write_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def registry():
    return make_registry(ALL, entry_points=False)


def problems_of(raw, registry):
    with pytest.raises(ConfigError) as err:
        load(raw, registry)
    return err.value.problems


def test_defaults_build_a_config(registry):
    config = load({}, registry)
    assert config.data.name == "binarized_mnist" and config.model.latent_dim == 32
    assert config.train.kl_warmup.epochs == 0 and config.plugins == []


def test_all_problems_are_reported_with_paths(registry):
    raw = tiny_config(
        [{"name": "recorder", "scale": -1.0, "colour": "red"}, {"name": "recorder", "tag": 3}],
        train={"epochs": 0, "lr": "fast", "batch_size": 1.5, "kl_warmup": {"start": 2.0}},
        model={"latent_dim": 4, "likelihood": {"kind": "poisson"}, "encoder": {"hidden": [32, -2]}},
        trian={"epochs": 1},
    )
    found = problems_of(raw, registry)
    expected = [
        "trian: unknown key",
        "model.encoder.hidden: must be > 0, got -2",
        "model.likelihood.kind: unknown likelihood 'poisson'; available: bernoulli, gaussian, laplace",
        "train.epochs: must be > 0, got 0",
        "train.lr: expected a number, got 'fast'",
        "train.batch_size: expected an integer, got 1.5",
        "train.kl_warmup.start: must be between 0.0 and 1.0, got 2.0",
        "plugins[0].colour: unknown key",
        "plugins[0].scale: must be > 0, got -1.0",
        "plugins[1].tag: expected a string, got 3",
    ]
    for text in expected:
        assert any(p.startswith(text) for p in found), (text, found)
    assert len(found) == len(expected)


def test_types_are_strict(registry):
    found = problems_of({"train": {"progress": 1, "seed": True, "grad_clip": "1"}}, registry)
    assert sorted(found) == [
        "train.grad_clip: expected a number, got '1'",
        "train.progress: expected true or false, got 1",
        "train.seed: expected an integer, got True",
    ]


def test_ints_are_accepted_as_floats_and_inf_strings(registry):
    config = load({"train": {"lr": 1, "grad_clip": "inf"}}, registry)
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert config.train.grad_clip == float("inf")


def test_missing_plugin_name_and_non_table_entries(registry):
    found = problems_of({"plugins": [{"tag": "x"}, 3]}, registry)
    assert found == ["plugins[0].name: required (the plugin's name)", "plugins[1]: expected a table with a name, got 3"]


def test_plugin_without_options_refuses_keys(registry):
    assert problems_of({"plugins": [{"name": "scaled_bound", "k": 1}]}, registry) == [
        "plugins[0].k: unknown key (plugin 'scaled_bound' takes no options)"
    ]


def test_overrides_by_dotted_path():
    raw = {"train": {"lr": 0.1}, "plugins": [{"name": "a"}, {"name": "b", "gamma": 1.0}]}
    apply_overrides(
        raw,
        [
            "train.lr=3e-4",
            "plugins.1.gamma=0.5",
            "model.encoder.hidden=[8, 8]",
            "data.name=mnist",
            "train.progress=false",
        ],
    )
    assert raw["train"]["lr"] == 3e-4 and raw["plugins"][1]["gamma"] == 0.5
    assert raw["model"]["encoder"]["hidden"] == [8, 8] and raw["data"]["name"] == "mnist"
    assert raw["train"]["progress"] is False


def test_bad_overrides_are_all_reported():
    raw = {"plugins": [{"name": "a"}]}
    with pytest.raises(ConfigError) as err:
        apply_overrides(raw, ["train.lr", "plugins.3.gamma=1", "plugins.x.gamma=1"])
    assert err.value.problems == [
        "--set train.lr: expected key=value",
        "--set plugins.3.gamma: index 3 is out of range; the list has 1 entries",
        "--set plugins.x.gamma: 'x' must be a list index (0 to 0)",
    ]


def test_toml_file_errors(tmp_path, registry):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml", registry=registry)
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepochs = = 3\n")
    with pytest.raises(ConfigError, match=r"bad.toml: not valid TOML: .*line 2"):
        load_config(bad, registry=registry)


def test_resolved_config_round_trips(tmp_path, registry):
    raw = tiny_config([{"name": "recorder", "tag": "a", "scale": 2.0}, {"name": "recorder"}], train={"grad_clip": 5.0})
    config = load(raw, registry)
    path = tmp_path / "config.toml"
    path.write_text(dump_config(config))
    again = load_config(path, registry=registry)
    assert config_to_dict(again) == config_to_dict(config)
    assert [e.id for e in again.plugins] == ["recorder1", "recorder2"]
    assert again.plugins[0].options.scale == 2.0


def test_write_config_round_trips(tmp_path, registry):
    stack = [{"name": "recorder", "tag": "a", "scale": 2.0}, {"name": "recorder"}]
    raw = tiny_config(stack, data={"name": "npz", "path": tmp_path / "x.npz"}, train={"kl_warmup": {"start": 0.1}})
    path = write_config(tmp_path / "sub" / "c.toml", raw)
    assert path == tmp_path / "sub" / "c.toml"
    again = load_config(path, registry=registry)
    assert again.data.path == str(tmp_path / "x.npz")  # a Path is written as its string
    as_text = merge(raw, {"data": {"path": str(tmp_path / "x.npz")}})
    assert tomllib.loads(path.read_text()) == as_text
    assert config_to_dict(again) == config_to_dict(load(as_text, registry))
    assert [(e.id, e.options.scale) for e in again.plugins] == [("recorder1", 2.0), ("recorder2", 1.0)]


def test_set_null_removes_a_key_so_its_default_applies():
    raw = tiny_config(data={"train_size": 100}, train={"lr": 0.01})
    config = load_config(None, ["data.train_size=null", "train.lr=null", "train.grad_clip=null"], raw=raw)
    assert config.data.train_size is None and config.train.lr == 1e-3 and config.train.grad_clip is None
    # a whole component table: back to its default kind
    assert load_config(None, ["model.encoder=null"], raw=raw).model.encoder.kind == "mlp"
    with pytest.raises(ConfigError, match=r"--set plugins.0: '0' is a list entry; only table keys can be unset"):
        load_config(None, ["plugins.0=null"], raw=tiny_config([{"name": "x"}]))
    # the string "null" is still possible, quoted
    assert load_config(None, ['train.device="null"'], raw=raw).train.device == "null"


def test_init_writes_each_starter_config_and_never_overwrites(tmp_path, capsys):
    from vaecore.cli import config_templates, main

    templates = config_templates()
    assert {"vae", "iwae", "collapse"} <= set(templates)
    from vaecore.plugin_manager import PluginRegistry

    installed = PluginRegistry()
    for name in templates:
        path = tmp_path / f"{name}.toml"
        assert main(["init", str(path), "--template", name]) == 0
        assert f"wrote {path}" in capsys.readouterr().out
        raw = tomllib.loads(path.read_text())
        plugins = [entry["name"] for entry in raw.get("plugins", [])]
        assert all((ROOT / "plugins" / p / "pyproject.toml").is_file() for p in plugins)  # plugins of this repo
        if not all(p in installed for p in plugins):  # the core session: check the rest of the config
            raw.pop("plugins")
        assert load_config(None, raw=raw).train.epochs > 0  # a valid config
    assert tomllib.loads((tmp_path / "iwae.toml").read_text())["plugins"][0]["name"] == "renyi"
    before = (tmp_path / "vae.toml").read_text()
    assert main(["init", str(tmp_path / "vae.toml")]) == 5
    assert "already exists; choose another path (nothing was written)" in capsys.readouterr().err
    assert (tmp_path / "vae.toml").read_text() == before
    assert main(["init", str(tmp_path / "x.toml"), "--template", "nope"]) == 2
    assert "unknown template 'nope'; templates: collapse, iwae, vae" in capsys.readouterr().err
