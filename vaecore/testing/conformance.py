"""The conformance suite every vaecore plugin's tests subclass.

A plugin author writes, in the plugin's ``tests/``::

    from vaecore.testing.conformance import PluginConformance

    class TestConformance(PluginConformance):
        plugin_name = "mine"                 # the entry point name, as written in [[plugins]]
        options = {"weight": 0.5}            # options for the tests (prefer non-default values)
        bad_options = {"weight": (-1.0, "must be >= 0")}

and pytest runs every ``test_*`` method below against the installed plugin: it registers with no
pending hook, its options round-trip through the config, its hooks keep shapes and gradients, its
state survives a checkpoint round trip, it is deterministic under a seed, and it composes with
every other installed plugin (one test per partner, both orders) and with itself.

Class attributes to set (only ``plugin_name`` is required):

``plugin_name``
    The plugin's name in ``[[plugins]]`` (its entry point name).
``plugin_id``
    The entry's ``id`` in the tests (default: none given, so the id is the name). Set it when the
    name cannot be an id (a Python keyword such as ``as``).
``plugin_class``
    Test this class under ``plugin_name`` instead of the installed entry point (a plugin under
    development that is not installed yet). None (default): the installed entry point.
``options``
    Options of the plugin's entry in every test (default: none, the plugin's defaults).
``bad_options``
    ``{option: (bad value, expected message fragment)}``; each must be refused with a config
    error reading ``plugins[0].<option>: <message>``.
``config``
    Raw config sections merged into :func:`vaecore.testing.tiny_config` (e.g. a Gaussian
    likelihood for a plugin that needs continuous data, with the ``conformance_dataset`` fixture
    overridden to match).
``partners``
    Plugin names to compose with; None (default): every other installed plugin.
``partner_options``
    ``{partner: {option: value}}`` for the partners' entries (default: their defaults).
``incompatible``
    ``{partner: reason}``: partners this plugin cannot be stacked with (skipped, with the reason).
``must_precede`` / ``must_follow``
    Partners this plugin works with in one order only (``du`` must come before ``iaf``). The other
    order must then fail with an error whose message names one of the two plugins.
``logs_extra_terms``
    The plugin's ``extra_loss`` logs at least one term with these options (default True). Set
    False for options under which it adds nothing (it returns None).
``expect_plugin_gradients``
    The plugin's own parameters (if it is an ``nn.Module`` with any) must receive gradients from
    one training loss (default True). Set False for parameters trained some other way.

Override the class-scoped fixture ``conformance_dataset`` to test on other data, as a
classmethod (pytest 9 deprecates class-scoped fixtures on instances)::

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_dataset(cls):
        return my_dataset()
"""

from __future__ import annotations

import copy
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from vaecore.build import build_model
from vaecore.checkpoint import load_checkpoint
from vaecore.config import dump_config, load_config
from vaecore.data import Dataset
from vaecore.errors import ConfigError, PluginError
from vaecore.hookspecs import CLAIMED_HOOKS, HOOK_API_VERSION, MIN_HOOK_API_VERSION
from vaecore.hooktypes import Batch, Bound, Term
from vaecore.plugin_manager import PluginRegistry, hook_names, is_identifier, unmarked_hooks
from vaecore.testing import (
    load,
    make_registry,
    merge,
    run_training,
    streamed_through_the_device,
    synthetic_dataset,
    tiny_config,
    train_steps,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["PluginConformance"]

RUN_SECTIONS: dict[str, Any] = {
    "train": {"epochs": 2, "batch_size": 32},
    "eval": {"nll_samples": 5, "probes": False, "mi_batch_size": 16},
}
"""Short runs: 2 epochs of the tiny dataset, a cheap final evaluation."""


def _tensors_equal(a: Any, b: Any) -> bool:
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)


def _records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines if line.strip()]


def _eval(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))


class PluginConformance:
    """Subclass as ``class TestConformance(PluginConformance)`` and set ``plugin_name``."""

    plugin_name: ClassVar[str] = ""
    plugin_id: ClassVar[str | None] = None
    plugin_class: ClassVar[type | None] = None
    options: ClassVar[dict[str, Any]] = {}
    bad_options: ClassVar[dict[str, tuple[Any, str]]] = {}
    config: ClassVar[dict[str, Any]] = {}
    partners: ClassVar[Sequence[str] | None] = None
    partner_options: ClassVar[dict[str, dict[str, Any]]] = {}
    incompatible: ClassVar[dict[str, str]] = {}
    must_precede: ClassVar[Sequence[str]] = ()
    must_follow: ClassVar[Sequence[str]] = ()
    expect_plugin_gradients: ClassVar[bool] = True
    logs_extra_terms: ClassVar[bool] = True

    # set-up --------------------------------------------------------------------------------

    @classmethod
    def conformance_registry(cls) -> PluginRegistry:
        """The installed plugins, plus ``plugin_class`` under ``plugin_name`` when given."""
        extra = {cls.plugin_name: cls.plugin_class} if cls.plugin_class is not None else None
        return make_registry(extra)

    @classmethod
    def entry(cls, **extra: Any) -> dict[str, Any]:
        """The plugin's ``[[plugins]]`` entry with ``options``."""
        ids = {"id": cls.plugin_id} if cls.plugin_id else {}
        return {"name": cls.plugin_name, **ids, **copy.deepcopy(cls.options), **extra}

    @classmethod
    def pid(cls) -> str:
        """The plugin's id in a stack where it appears once."""
        return cls.plugin_id or cls.plugin_name

    @classmethod
    def raw_config(cls, stack: list[dict[str, Any]], **sections: Any) -> dict[str, Any]:
        return tiny_config(stack, **merge(cls.config, sections))

    @classmethod
    def partner_names(cls) -> list[str]:
        names = list(cls.partners) if cls.partners is not None else make_registry().names()
        return [n for n in names if n != cls.plugin_name]

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """One composition test per partner plugin (pytest calls this hook on test classes)."""
        if "conformance_partner" in metafunc.fixturenames:
            params = [
                pytest.param(name, marks=pytest.mark.skip(reason=self.incompatible[name]))
                if name in self.incompatible
                else name
                for name in self.partner_names()
            ]
            metafunc.parametrize(
                "conformance_partner",
                params or [pytest.param(None, marks=pytest.mark.skip(reason="no partner plugin to compose with"))],
            )

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_dataset(cls) -> Dataset:
        """The data of every test: tiny and binary. Override for a plugin that needs other data."""
        return synthetic_dataset(n=128, dim=16)

    @pytest.fixture
    def registry(self) -> PluginRegistry:
        if not self.plugin_name:
            pytest.fail(f"{type(self).__name__}: set plugin_name to the plugin's name in [[plugins]]")
        return self.conformance_registry()

    @pytest.fixture(scope="class")
    @classmethod
    def reference_run(cls, tmp_path_factory: pytest.TempPathFactory, conformance_dataset: Dataset) -> Path:
        """Two epochs of the plugin alone, trained once per class and shared by the run tests."""
        torch.set_num_threads(1)
        out = tmp_path_factory.mktemp("reference") / "run"
        run_training(
            cls.raw_config([cls.entry()], **RUN_SECTIONS), out, conformance_dataset, cls.conformance_registry()
        )
        return out

    def _claims(self, registry: PluginRegistry, name: str) -> set[str]:
        return set(hook_names(registry.load(name))) & set(CLAIMED_HOOKS)

    # registration --------------------------------------------------------------------------

    def test_registers_with_no_pending_hooks(self, registry: PluginRegistry, conformance_dataset: Dataset) -> None:
        """The class loads, targets this hook API, and every hook matches a spec (``check_pending``)."""
        assert self.plugin_name in registry, registry.unknown_message(self.plugin_name)
        cls = registry.load(self.plugin_name)  # api_version, Options is attrs, at least one hook
        assert MIN_HOOK_API_VERSION <= getattr(cls, "api_version", 0) <= HOOK_API_VERSION
        options_cls = getattr(cls, "Options", None)
        if options_cls is not None:
            import attrs

            positional = [f.name for f in attrs.fields(options_cls) if not f.kw_only]
            assert not positional, f"{cls.__name__}.Options should be kw_only (positional: {positional})"
        config = load(self.raw_config([self.entry()]), registry)
        model = build_model(config, conformance_dataset, registry)  # registers, check_pending, no defaults
        stack = model.stack
        assert stack.ids[0] == self.pid()
        plugin = stack.plugins[self.pid()]
        assert isinstance(plugin, cls)
        implemented = set(hook_names(cls))
        registered = {caller.name for caller in stack.pm.get_hookcallers(plugin) or []}
        assert implemented == registered, f"hooks not registered: {sorted(implemented - registered)}"
        unmarked = unmarked_hooks(cls)
        assert not unmarked, f"methods named like hooks but not marked @hookimpl (never called): {unmarked}"
        if isinstance(plugin, torch.nn.Module):
            assert model.plugins[self.pid()] is plugin, "an nn.Module plugin is attached under model.plugins"

    # options --------------------------------------------------------------------------------

    def test_options_round_trip_through_the_config(self, registry: PluginRegistry) -> None:
        """``dump_config`` then ``load_config`` gives equal options; the TOML is stable."""
        bare = {k: val for k, val in self.entry().items() if k in ("name", "id")}
        for entry in (bare, self.entry()):
            try:
                config = load(self.raw_config([entry]), registry)
            except ConfigError:
                if entry is bare:
                    continue  # the plugin has required options
                raise
            text = dump_config(config)
            again = load_config(None, registry=registry, raw=tomllib.loads(text))
            assert again.plugins[0].name == self.plugin_name
            assert again.plugins[0].options == config.plugins[0].options, text
            assert dump_config(again) == text
        options = load(self.raw_config([self.entry()]), registry).plugins[0].options
        for key, value in self.options.items():
            got = getattr(options, key)
            assert got == value or (isinstance(value, float) and math.isclose(got, value)), (key, got, value)

    def test_unknown_option_is_refused_with_its_path(self, registry: PluginRegistry) -> None:
        with pytest.raises(ConfigError) as info:
            load(self.raw_config([self.entry(no_such_option_xyz=1)]), registry)
        assert "plugins[0].no_such_option_xyz" in str(info.value)

    def test_bad_options_are_refused_with_their_path(self, registry: PluginRegistry) -> None:
        if not self.bad_options:
            pytest.skip("no bad_options declared")
        for key, (value, message) in self.bad_options.items():
            with pytest.raises(ConfigError) as info:
                load(self.raw_config([self.entry(**{key: value})]), registry)
            assert f"plugins[0].{key}: {message}" in str(info.value) or (
                "plugins[0]" in str(info.value) and message in str(info.value)
            ), str(info.value)

    # hooks -----------------------------------------------------------------------------------

    def test_hooks_keep_shapes_and_gradients(self, registry: PluginRegistry, conformance_dataset: Dataset) -> None:
        """Every tensor keeps its documented shape, the loss is a finite scalar and its gradient
        reaches the encoder, the decoder and the plugin's own parameters."""
        torch.manual_seed(0)
        config = load(self.raw_config([self.entry()]), registry)
        model = build_model(config, conformance_dataset, registry)
        stack, d = model.stack, config.model.latent_dim
        split = conformance_dataset.train.head(16)
        x = split.inputs()
        b, k = x.shape[0], 2
        batch = Batch(x, torch.arange(b), split.y)
        model.train()
        ctx = model.context(training=True, batch=batch)

        assert stack.pre_encode(x, ctx).shape == x.shape, "pre_encode must keep the input's shape"
        out = model(x, ctx, k)
        assert out.x.shape == x.shape
        assert tuple(out.posterior.mean.shape) == (b, d), "post_posterior must keep q(y|x) of shape (B, D)"
        assert tuple(out.y.shape) == (k, b, d)
        assert tuple(out.z.shape) == (k, b, d), "latent_map must keep the leading dimensions and the size"
        for name in ("log_px", "log_py", "log_qy"):
            value = getattr(out, name)
            assert tuple(value.shape) == (k, b), f"{name} must be (K, B), got {tuple(value.shape)}"
            assert torch.isfinite(value).all(), f"{name} has non-finite values"
        for lead in [(5,), (3, 4)]:
            y = torch.randn(*lead, d)
            assert tuple(model.latent_map(y, ctx).shape) == (*lead, d), "latent_map must accept any leading dims"

        bound = stack.bound(out, ctx)
        assert isinstance(bound, Bound) and bound.loss.dim() == 0 and torch.isfinite(bound.loss)
        loss = bound.loss
        for name, term in stack.extra_loss(out, ctx):
            assert isinstance(term, Term)
            assert term.value.dim() == 0, f"{name} must be a scalar (the batch mean)"
            assert torch.isfinite(term.value), f"{name} is not finite"
            loss = loss + term.weight * term.value
        model.zero_grad(set_to_none=True)
        loss.backward()
        for part in ("encoder", "decoder"):
            grads = [p.grad for p in getattr(model, part).parameters() if p.requires_grad]
            assert any(g is not None and g.abs().sum() > 0 for g in grads), f"no gradient reaches the {part}"
        for name, param in model.named_parameters():
            if param.grad is not None:
                assert torch.isfinite(param.grad).all(), f"non-finite gradient in {name}"
        plugin = stack.plugins[self.pid()]
        own = [p for p in plugin.parameters() if p.requires_grad] if isinstance(plugin, torch.nn.Module) else []
        if own and self.expect_plugin_gradients:
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in own), (
                "no gradient reaches the plugin's own parameters (set expect_plugin_gradients = False "
                "if they are trained another way)"
            )

        model.eval()
        with torch.no_grad():
            ectx = model.context(training=False, batch=batch)
            eout = model(x, ectx, 1)
            assert tuple(eout.y.shape) == (1, b, d)
            assert torch.isfinite(stack.bound(eout, ectx).loss)
            assert tuple(model.represent(x, ectx).shape) == (b, d)
            samples = model.sample_prior(6)
            assert tuple(samples.shape) == (6, *conformance_dataset.input_shape)
            metrics = stack.eval_metrics(model, conformance_dataset.test, ectx)
            try:
                json.dumps(metrics)
            except TypeError as exc:
                pytest.fail(f"eval_metrics must return JSON-serialisable values (floats, lists): {exc}")
            assert all(name.startswith(f"{self.pid()}.") for name in metrics)

    # runs ---------------------------------------------------------------------------------

    def test_state_survives_a_checkpoint_round_trip(
        self, reference_run: Path, tmp_path: Path, conformance_dataset: Dataset
    ) -> None:
        """1 epoch + resume to 2 equals 2 uninterrupted epochs, and a checkpoint reloads every tensor."""
        torch.set_num_threads(1)
        registry = self.conformance_registry()
        resumed = tmp_path / "resumed"
        raw = self.raw_config([self.entry()], **merge(RUN_SECTIONS, {"train": {"epochs": 1}}))
        run_training(raw, resumed, conformance_dataset, registry)
        run_training(
            self.raw_config([self.entry()], **RUN_SECTIONS), resumed, conformance_dataset, registry, resume=True
        )
        assert _records(resumed) == _records(reference_run), "a resumed run differs from an uninterrupted one"
        assert _eval(resumed) == _eval(reference_run)

        state = load_checkpoint(reference_run / "checkpoints" / "last.pt")
        config = load(self.raw_config([self.entry()], **RUN_SECTIONS), registry)
        torch.manual_seed(12345)  # a different initialisation: everything must come from the checkpoint
        model = build_model(config, conformance_dataset, registry)
        model.load_state_dict(state["model"])
        for pid, plugin_state in state.get("plugin_state", {}).items():
            model.stack.plugins[pid].load_state_dict(plugin_state)  # type: ignore[attr-defined]
        reloaded = model.state_dict()
        for key, value in state["model"].items():
            assert _tensors_equal(reloaded[key], value), f"{key} differs after loading the checkpoint"

    def test_deterministic_under_a_seed(
        self, reference_run: Path, tmp_path: Path, conformance_dataset: Dataset
    ) -> None:
        """The same config and seed give the same numbers, epoch by epoch, and the same evaluation."""
        torch.set_num_threads(1)
        again = tmp_path / "again"
        run_training(
            self.raw_config([self.entry()], **RUN_SECTIONS), again, conformance_dataset, self.conformance_registry()
        )
        assert _records(again) == _records(reference_run)
        assert _eval(again) == _eval(reference_run)

    # composition ------------------------------------------------------------------------------

    def _check_refused(self, stack: list[dict[str, Any]], conformance_dataset: Dataset) -> None:
        """A stack in the wrong order fails, and says which plugin objects."""
        registry = self.conformance_registry()
        with pytest.raises(Exception) as info:  # any error, as long as it names the plugin
            train_steps(self.raw_config(stack), conformance_dataset, steps=1, registry=registry)
        names = {e["name"] for e in stack} | {e.get("id", e["name"]) for e in stack}
        assert any(name in str(info.value) for name in names), f"the error does not name the plugin: {info.value}"

    def _check_stack(self, stack: list[dict[str, Any]], ids: list[str], conformance_dataset: Dataset) -> None:
        registry = self.conformance_registry()
        names = [e["name"] for e in stack]
        clash = set.intersection(*(self._claims(registry, n) for n in names)) if len(names) > 1 else set()
        if clash:
            with pytest.raises((ConfigError, PluginError)) as info:
                build_model(load(self.raw_config(stack), registry), conformance_dataset, registry)
            assert all(repr(i) in str(info.value) for i in ids), str(info.value)
            return
        result = train_steps(self.raw_config(stack), conformance_dataset, steps=3, registry=registry)
        assert result.model.stack.ids[: len(ids)] == ids
        bad = {k: v for k, v in result.metrics.items() if isinstance(v, float) and not math.isfinite(v)}
        assert not bad, f"non-finite values in the stack {ids}: {bad}"
        if not self.logs_extra_terms:
            return
        for pid in ids:  # partners may legitimately add nothing with their options; the tested plugin must
            plugin = result.model.stack.plugins[pid]
            tested = type(plugin).__name__ == self.conformance_registry().load(self.plugin_name).__name__
            if tested and "extra_loss" in hook_names(type(plugin)):
                assert any(k.startswith(f"train.{pid}.") for k in result.metrics), f"no {pid}.* loss term logged"

    def test_eval_metrics_stream_the_split_through_the_models_device(
        self, registry: PluginRegistry, conformance_dataset: Dataset
    ) -> None:
        """``eval_metrics`` reads the split through :func:`vaecore.device_batches` (or
        :func:`vaecore.encode_split`), so its batches reach the model's device, and returns
        plain numbers."""
        cls = registry.load(self.plugin_name)
        if "eval_metrics" not in hook_names(cls):
            pytest.skip("the plugin has no eval_metrics")
        torch.manual_seed(0)
        model = build_model(load(self.raw_config([self.entry()]), registry), conformance_dataset, registry)
        with streamed_through_the_device():
            metrics = model.stack.eval_metrics(model, conformance_dataset.test, model.context(training=False))
        json.dumps(metrics)

    def test_composes_with_installed_plugins(self, conformance_partner: str, conformance_dataset: Dataset) -> None:
        """Stacked before and after every other installed plugin, a few steps train to finite
        values and both plugins' terms are logged; two claimants of one hook are a config error."""
        torch.set_num_threads(1)
        registry = self.conformance_registry()
        try:
            registry.load(conformance_partner)
        except PluginError as exc:
            pytest.skip(f"partner {conformance_partner!r} does not load: {exc}")
        partner_id = conformance_partner if is_identifier(conformance_partner) else f"{conformance_partner}_"
        partner = {"name": conformance_partner, "id": partner_id, **self.partner_options.get(conformance_partner, {})}
        try:
            partner_config = load(self.raw_config([partner]), registry)
        except ConfigError as exc:
            pytest.skip(f"partner {conformance_partner!r} needs options (set partner_options): {exc}")
        try:  # a broken partner is its author's problem, not a failure of this plugin
            build_model(partner_config, conformance_dataset, registry)
        except (PluginError, ConfigError) as exc:
            pytest.skip(f"partner {conformance_partner!r} does not register on its own: {exc}")
        if conformance_partner in self.must_follow:
            self._check_refused([self.entry(), partner], conformance_dataset)
        else:
            self._check_stack([self.entry(), partner], [self.pid(), partner_id], conformance_dataset)
        if conformance_partner in self.must_precede:
            self._check_refused([partner, self.entry()], conformance_dataset)
        else:
            self._check_stack([partner, self.entry()], [partner_id, self.pid()], conformance_dataset)

    def test_composes_with_itself(self, conformance_dataset: Dataset) -> None:
        """The same plugin twice in a stack gets two ids (``name1``, ``name2``) and two namespaces."""
        torch.set_num_threads(1)
        pid = self.pid()
        first, second = self.entry(id=f"{pid}1"), self.entry(id=f"{pid}2")
        self._check_stack([first, second], [f"{pid}1", f"{pid}2"], conformance_dataset)
