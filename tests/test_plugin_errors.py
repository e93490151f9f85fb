"""The errors a plugin author hits: one line naming the plugin, the hook and what to change."""

from __future__ import annotations

import json
import logging
import sys

import attrs
import pytest
import torch

from tests.test_plugin_registry import install_fake_distribution
from vaecore import PluginError, hookimpl
from vaecore.cli import main
from vaecore.errors import NonFiniteError, VaecoreError
from vaecore.hooktypes import Term
from vaecore.plugin_manager import PluginStack, check_plugin, option_rows, summarize
from vaecore.testing import make_registry, synthetic_dataset, train_steps, write_config


class Misspelled:
    api_version = 2

    @hookimpl
    def latent_mapp(self, y):
        return y


class ExtraArgument:
    api_version = 2

    @hookimpl
    def latent_map(self, y, scale):
        return y


class Defaulted:
    api_version = 2

    @hookimpl
    def latent_map(self, y, scale=2.0):
        return y * scale


class Unmarked:
    api_version = 2

    @hookimpl
    def latent_map(self, y):
        return None

    def extra_loss(self, out):  # forgot @hookimpl
        return {"penalty": out.z.pow(2).mean()}


@attrs.define(kw_only=True)
class NeedsOptions:
    weight: float
    """The penalty's weight."""
    hidden: list[int] = attrs.field(factory=lambda: [16])
    """Hidden sizes."""
    mode: str = attrs.field(default="a", metadata={"doc": "how to penalise"})


class WithOptions:
    api_version = 2
    Options = NeedsOptions

    def __init__(self, options):
        self.options = options

    @hookimpl
    def latent_map(self, y):
        return None


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (
            Misspelled,
            "plugin 'p': method latent_mapp is marked @hookimpl but 'latent_mapp' is not a hook; "
            "did you mean 'latent_map'?",
        ),
        (
            ExtraArgument,
            "plugin 'p': hook latent_map takes (y, scale), but scale is not an argument of the spec "
            "latent_map(y, ctx); take any of the spec's arguments, by name",
        ),
        (
            Defaulted,
            "plugin 'p': hook latent_map has arguments with defaults (scale); pluggy never passes them; "
            "the spec's arguments are (y, ctx)",
        ),
    ],
)
def test_registration_errors_are_one_line_and_the_same_in_plugins_and_train(cls, message):
    with pytest.raises(PluginError) as err:
        PluginStack([("p", cls())])
    assert str(err.value) == message
    with pytest.raises(PluginError) as err:
        check_plugin("p", cls)
    assert str(err.value) == message


def test_unknown_hook_without_a_close_name_lists_the_hooks():
    class Far:
        api_version = 2

        @hookimpl(specname="zzz")
        def whatever(self):
            return None

    with pytest.raises(
        PluginError, match=r"'zzz' is not a hook; the hooks are setup, pre_encode, .*eval_metrics, components$"
    ):
        PluginStack([("p", Far())])


def test_a_method_named_like_a_hook_without_hookimpl_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="vaecore.plugins"):
        PluginStack([("p", Unmarked())])
    assert caplog.messages == [
        "vaecore: warning: plugin 'p': method extra_loss is named like a hook but not marked @hookimpl; "
        "it is never called"
    ]
    assert check_plugin("p", Unmarked) == "ok (warning: method extra_loss is not marked @hookimpl, never called)"


def test_plugins_status_names_required_options_and_options_lists_them(capsys):
    assert check_plugin("w", WithOptions) == "ok (needs options: weight)"
    assert option_rows(WithOptions) == [
        {"name": "weight", "type": "float", "default": "(required)", "doc": "The penalty's weight."},
        {"name": "hidden", "type": "list[int]", "default": "[16]", "doc": "Hidden sizes."},
        {"name": "mode", "type": "str", "default": "'a'", "doc": "how to penalise"},
    ]


def test_plugins_command_runs_the_registration_checks(tmp_path, monkeypatch, capsys):
    source = """
        import attrs
        from vaecore import hookimpl

        @attrs.define(kw_only=True)
        class Options:
            factor: float = 2.0
            \"\"\"The factor.\"\"\"

        class Typo:
            api_version = 2
            Options = Options

            def __init__(self, options):
                self.options = options

            @hookimpl
            def latent_mapp(self, y):
                return y
    """
    root = tmp_path / "site"
    root.mkdir()
    install_fake_distribution(root, "vaecore-typo-plugin", "0.1", "fake_typo", source, "typo = fake_typo:Typo")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "fake_typo", raising=False)
    assert main(["plugins", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["typo"]["status"] == (
        "error: plugin 'typo': method latent_mapp is marked @hookimpl but 'latent_mapp' is not a hook; "
        "did you mean 'latent_map'?"
    )
    assert main(["plugins", "--options", "typo"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["option", "type", "default", "description"]
    assert out.splitlines()[2].split() == ["factor", "float", "2.0", "The", "factor."]


class _LossTerm:
    api_version = 2

    def __init__(self, value):
        self.value = value

    @hookimpl
    def extra_loss(self, out):
        return {"penalty": self.value(out)}


def _stack_with(plugin):
    return {"name": "bad"}, make_registry({"bad": plugin}, entry_points=False)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            lambda out: out.z.pow(2).sum(-1),
            "plugin 'bad' failed in extra_loss: the term 'penalty' is of shape (1, 32), not a scalar; "
            "reduce it to a scalar (a batch mean, .mean())",
        ),
        (
            lambda out: Term(1.5, weight=0.1),
            "plugin 'bad' failed in extra_loss: the term 'penalty' is 1.5, not a tensor; "
            "a term must be a scalar tensor (a batch mean)",
        ),
    ],
)
def test_a_bad_extra_loss_term_names_plugin_hook_and_term(value, message):
    class Bad(_LossTerm):
        def __init__(self):
            super().__init__(value)

    entry, registry = _stack_with(Bad)
    with pytest.raises(PluginError) as err:
        train_steps([entry], synthetic_dataset(n=64), steps=1, registry=registry)
    assert str(err.value) == message


def test_a_non_finite_term_is_named_when_the_loss_is_non_finite():
    class Nan(_LossTerm):
        def __init__(self):
            super().__init__(lambda out: out.z.sum() * float("nan"))

    entry, registry = _stack_with(Nan)
    with pytest.raises(NonFiniteError, match=r"bad\.penalty=nan"):
        train_steps([entry], synthetic_dataset(n=64), steps=1, registry=registry)


def test_a_wrong_shaped_latent_map_and_a_non_posterior_are_named():
    class Flat:
        api_version = 2

        @hookimpl
        def latent_map(self, y):
            return y.reshape(-1)

    class NotPosterior:
        api_version = 2

        @hookimpl
        def post_posterior(self, posterior):
            return posterior.mean

    with pytest.raises(PluginError) as err:
        train_steps([{"name": "flat"}], synthetic_dataset(n=64), steps=1, registry=make_registry({"flat": Flat}))
    assert str(err.value) == (
        "plugin 'flat' failed in latent_map: returned shape (128,) for y of shape (1, 32, 4); "
        "z must keep y's leading dimensions (only the last may change)"
    )
    with pytest.raises(PluginError) as err:
        train_steps([{"name": "np"}], synthetic_dataset(n=64), steps=1, registry=make_registry({"np": NotPosterior}))
    assert str(err.value) == (
        "plugin 'np' failed in post_posterior: returned tensor(32, 4) float32, not a Posterior "
        "(mean, rsample, log_prob, kl_per_dim; see vaecore.distributions) or None"
    )


def test_a_bound_that_is_not_a_scalar_is_named():
    from vaecore.hooktypes import Bound

    class Vector:
        api_version = 2

        @hookimpl
        def bound(self, out):
            return Bound(loss=-out.log_w.mean(0), terms={})

    with pytest.raises(PluginError, match=r"^plugin 'v' failed in bound: the loss is of shape \(32,\), not a scalar"):
        train_steps([{"name": "v"}], synthetic_dataset(n=64), steps=1, registry=make_registry({"v": Vector}))


def test_hook_trace_is_off_by_default_and_logs_each_call_when_on(monkeypatch, caplog):
    class Id:
        api_version = 2

        @hookimpl
        def latent_map(self, y):
            return y + 0

    monkeypatch.delenv("VAECORE_TRACE_HOOKS", raising=False)
    plain = PluginStack([("id", Id())])
    assert not plain.traced and plain._calls["latent_map"][0][1].__name__ == "latent_map"
    monkeypatch.setenv("VAECORE_TRACE_HOOKS", "1")
    stack = PluginStack([("id", Id())])
    with caplog.at_level(logging.INFO, logger="vaecore.hooks"):
        stack.latent_map(torch.zeros(3, 4), None)
    assert caplog.messages == ["hook latent_map of plugin 'id' -> tensor(3, 4) float32"]
    assert summarize({"a": Term(torch.zeros(()))}) == "{a: Term(tensor() float32, weight=1.0)}"


def test_debug_shows_the_plugin_import_traceback(tmp_path, monkeypatch, capsys):
    root = tmp_path / "site"
    root.mkdir()
    source = """
        def helper():
            raise RuntimeError("the plugin's own failure")

        helper()
    """
    install_fake_distribution(root, "vaecore-crash-plugin", "0.1", "fake_crash", source, "crash = fake_crash:Crash")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "fake_crash", raising=False)
    raw = {"data": {"name": "npz", "path": "x.npz"}, "plugins": [{"name": "crash"}]}
    config = write_config(tmp_path / "c.toml", raw)
    assert main(["train", str(config)]) != 0
    assert "Traceback" not in capsys.readouterr().err
    with pytest.raises(VaecoreError):
        main(["--debug", "train", str(config)])
    err = capsys.readouterr().err
    assert "vaecore: traceback of plugin 'crash' failing to import:" in err
    assert "fake_crash.py" in err and "in helper" in err and "RuntimeError: the plugin's own failure" in err
    assert main(["--debug", "plugins"]) == 0
    assert "in helper" in capsys.readouterr().err


def test_train_with_a_non_scalar_term_fails_in_one_line_and_can_be_rerun(tmp_path, monkeypatch, capsys):
    import numpy as np

    source = """
        from vaecore import hookimpl

        class Vec:
            api_version = 2

            @hookimpl
            def extra_loss(self, out):
                return {"penalty": out.z.pow(2).sum(-1)}
    """
    root = tmp_path / "site"
    root.mkdir()
    install_fake_distribution(root, "vaecore-vec-plugin", "0.1", "fake_vec", source, "vec = fake_vec:Vec")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "fake_vec", raising=False)
    x = (np.random.default_rng(0).random((60, 6)) < 0.3).astype(np.uint8)
    np.savez(tmp_path / "toy.npz", x_train=x[:40], x_valid=x[40:50], x_test=x[50:])
    raw = {
        "data": {"name": "npz", "path": tmp_path / "toy.npz"},
        "model": {"latent_dim": 2, "encoder": {"hidden": [8]}, "decoder": {"hidden": [8]}},
        "train": {"epochs": 1, "batch_size": 20, "progress": False},
        "plugins": [{"name": "vec"}],
    }
    config = write_config(tmp_path / "toy.toml", raw)
    out = tmp_path / "run"
    for _ in range(2):  # the failed run leaves nothing that blocks the same command
        assert main(["train", str(config), "--out", str(out)]) == 3
        err = capsys.readouterr().err
        assert err == (
            "vaecore: error: plugin 'vec' failed in extra_loss: the term 'penalty' is of shape (1, 20), not a scalar; "
            "reduce it to a scalar (a batch mean, .mean())\n"
        )
