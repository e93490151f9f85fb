"""Finding, loading and registering plugins, and calling their hooks in stack order.

``PluginRegistry`` knows the installed plugins (entry points of the group ``vaecore.plugins``)
without importing them, and imports one only when asked, reporting failures with the plugin's
distribution and version. ``PluginStack`` registers one run's plugin instances with pluggy,
checks them against the hook specs, and calls each hook the way ``vaecore.hookspecs`` says.
"""

from __future__ import annotations

import inspect
import math
import os
import traceback
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from typing import Any

import attrs
import pluggy

from vaecore import hookspecs
from vaecore.errors import ConfigError, PluginError, VaecoreError
from vaecore.hookspecs import (
    CLAIMED_HOOKS,
    FOLDED_HOOKS,
    HOOK_API_VERSION,
    MIN_HOOK_API_VERSION,
    PROJECT,
)
from vaecore.hooktypes import EpochResult, Term, as_epoch_result

ENTRY_POINT_GROUP = "vaecore.plugins"
IMPL_ATTR = f"{PROJECT}_impl"


@attrs.frozen
class PluginInfo:
    """An installed plugin as its entry point describes it (nothing imported)."""

    name: str
    target: str
    distribution: str
    version: str
    entry_point: metadata.EntryPoint | None = attrs.field(default=None, eq=False, repr=False)
    cls: type | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def origin(self) -> str:
        return f"{self.distribution} {self.version}"


def hook_names(cls: type) -> list[str]:
    """The hook implementations a plugin class defines, by hook name (read without registering)."""
    names = []
    for attr, value in inspect.getmembers(cls):
        opts = getattr(value, IMPL_ATTR, None)
        if isinstance(opts, dict):
            names.append(opts.get("specname") or attr)
    return sorted(names)


class PluginRegistry:
    """The plugins that can be named in a config: installed entry points plus registered classes."""

    def __init__(self, *, entry_points: bool = True, plugins: dict[str, type] | None = None):
        self._infos: dict[str, PluginInfo] = {}
        self._loaded: dict[str, type] = {}
        if entry_points:
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
                dist = getattr(ep, "dist", None)
                self._infos.setdefault(
                    ep.name,
                    PluginInfo(
                        name=ep.name,
                        target=ep.value,
                        distribution=dist.name if dist else "unknown",
                        version=dist.version if dist else "unknown",
                        entry_point=ep,
                    ),
                )
        for name, cls in (plugins or {}).items():
            self.register(name, cls)

    def register(self, name: str, cls: type, distribution: str = "(registered)", version: str = "-") -> None:
        """Make a plugin class available under ``name`` without an entry point (tests, notebooks)."""
        self._infos[name] = PluginInfo(
            name=name,
            target=f"{cls.__module__}:{cls.__qualname__}",
            distribution=distribution,
            version=version,
            cls=cls,
        )
        self._loaded.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._infos)

    def info(self, name: str) -> PluginInfo:
        return self._infos[name]

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def unknown_message(self, name: str) -> str:
        installed = ", ".join(self.names()) or "none"
        return (
            f"unknown plugin {name!r}; installed plugins: {installed}. "
            f"If it is published, install it with: pip install vaecore-{name}-plugin"
        )

    def load(self, name: str) -> type:
        """Import a plugin class and check it targets this hook API; failures name the distribution."""
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._infos:
            raise PluginError(self.unknown_message(name))
        info = self._infos[name]
        cls = info.cls
        if cls is None:
            assert info.entry_point is not None
            try:
                cls = info.entry_point.load()
            except (Exception, SystemExit) as exc:  # isolate any failure of third-party code, sys.exit too
                what = f"it called sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else describe(exc)
                raise PluginError(f"plugin {name!r} ({info.origin}) failed to import {info.target}: {what}") from exc
        check_plugin_class(name, cls, info.origin)
        self._loaded[name] = cls
        return cls


def check_plugin_class(name: str, cls: Any, origin: str) -> None:
    """Refuse an object that is not a plugin class of this hook API."""
    if not inspect.isclass(cls):
        raise PluginError(f"plugin {name!r} ({origin}): the entry point must name a class, got {cls!r}")
    api = getattr(cls, "api_version", None)
    if api is None:
        raise PluginError(f"plugin {name!r} ({origin}) does not declare api_version")
    if not isinstance(api, int) or not MIN_HOOK_API_VERSION <= api <= HOOK_API_VERSION:
        raise PluginError(
            f"plugin {name!r} ({origin}) targets hook API version {api!r}; this vaecore provides versions "
            f"{MIN_HOOK_API_VERSION} to {HOOK_API_VERSION}"
            + (" (upgrade vaecore)" if isinstance(api, int) and api > HOOK_API_VERSION else "")
        )
    options = getattr(cls, "Options", None)
    if options is not None and not attrs.has(options):
        raise PluginError(f"plugin {name!r} ({origin}): Options must be an attrs class")
    if not hook_names(cls):
        raise PluginError(f"plugin {name!r} ({origin}) implements no hook")


def is_identifier(name: str) -> bool:
    """Plugin ids and term names: letters, digits and underscores, not starting with a digit.

    Keywords are fine (the ``as`` plugin): ids are only used as keys and name prefixes."""
    return name.isidentifier()


_Call = tuple[str, Callable[..., Any], tuple[str, ...]]


class PluginStack:
    """One run's plugin instances, registered with pluggy and called in config order.

    ``instances`` is the stack as ``(id, plugin)`` pairs in config order. ``fallbacks`` are the
    built-in implementations of claimed hooks (the ELBO for ``bound``), registered only when no
    plugin of the stack claims the hook.
    """

    def __init__(self, instances: Sequence[tuple[str, object]], fallbacks: Iterable[tuple[str, object]] = ()):
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.ids = [pid for pid, _ in instances]
        self.plugins = dict(instances)
        for pid, plugin in instances:
            self._register(pid, plugin)
        claimed = {hook for hook in CLAIMED_HOOKS if self._implementers(hook)}
        self.builtin: set[str] = set()
        """The ids of the built-in fallbacks registered (their failures are vaecore's, not a plugin's)."""
        for pid, plugin in fallbacks:
            if not set(hook_names(type(plugin))) & claimed:
                self.builtin.add(pid)
                self.ids.append(pid)
                self.plugins[pid] = plugin
                self._register(pid, plugin)
        self._check_claims()
        self._calls = {name: self._ordered_calls(name) for name in self._spec_names()}

    # registration and checks -------------------------------------------------------------

    def _register(self, pid: str, plugin: object) -> None:
        try:
            self.pm.register(plugin, name=pid)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=pid)
            raise PluginError(f"plugin {pid!r} does not match the hook specs: {exc}") from exc
        for impl in self._impls_of(pid):
            hook = impl.function.__name__ if impl.opts.get("specname") is None else impl.opts["specname"]
            if impl.kwargnames:
                raise PluginError(
                    f"plugin {pid!r}: hook {hook} has arguments with defaults "
                    f"({', '.join(impl.kwargnames)}); pluggy never passes them"
                )
            if hook in FOLDED_HOOKS and (impl.tryfirst or impl.trylast or impl.hookwrapper or impl.wrapper):
                raise PluginError(
                    f"plugin {pid!r}: {hook} is folded in config order; "
                    "tryfirst, trylast and wrappers are not allowed on it"
                )

    def _impls_of(self, pid: str) -> list[pluggy.HookImpl]:
        return [
            impl
            for caller in self.pm.get_hookcallers(self.pm.get_plugin(pid)) or []
            for impl in caller.get_hookimpls()
            if impl.plugin_name == pid
        ]

    def _spec_names(self) -> list[str]:
        return [name for name in dir(self.pm.hook) if not name.startswith("_")]

    def _implementers(self, hook: str) -> list[str]:
        caller = getattr(self.pm.hook, hook)
        return [impl.plugin_name for impl in caller.get_hookimpls()]

    def _check_claims(self) -> None:
        problems = []
        for hook in CLAIMED_HOOKS:
            ids = self._implementers(hook)
            if len(ids) > 1:
                ordered = sorted(ids, key=self.ids.index)
                problems.append(
                    f"plugins: {', '.join(repr(i) for i in ordered)} all implement {hook}; "
                    "only one plugin of a stack may provide it"
                )
        if problems:
            raise ConfigError(problems)

    def _ordered_calls(self, hook: str) -> list[_Call]:
        impls = getattr(self.pm.hook, hook).get_hookimpls()
        impls = sorted(impls, key=lambda impl: self.ids.index(impl.plugin_name))
        return [(impl.plugin_name, impl.function, tuple(impl.argnames)) for impl in impls]

    def implementers(self, hook: str) -> list[str]:
        """The ids of the plugins implementing ``hook``, in config order."""
        return [pid for pid, _, _ in self._calls[hook]]

    # calls ---------------------------------------------------------------------------------

    # Every call of a plugin's hook sits in a try whose handler marks an escaping exception with
    # the plugin and the hook (mark_hook_failure) and re-raises it unchanged: free when nothing is
    # raised (Python 3.11+), and the CLI reports a marked exception as that plugin's error.

    @staticmethod
    def _call(fn: Callable[..., Any], names: tuple[str, ...], kwargs: dict[str, Any]) -> Any:
        return fn(*[kwargs[n] for n in names])

    def _fold(self, hook: str, first: str, value: Any, kwargs: dict[str, Any]) -> Any:
        for pid, fn, names in self._calls[hook]:
            kwargs[first] = value
            try:
                result = fn(*[kwargs[n] for n in names])
            except Exception as exc:
                self._mark(exc, pid, hook, fn)
                raise
            if result is not None:
                value = result
        return value

    def _claimed(self, hook: str, kwargs: dict[str, Any]) -> Any:
        for pid, fn, names in self._calls[hook]:
            try:
                return self._call(fn, names, kwargs)
            except Exception as exc:
                self._mark(exc, pid, hook, fn)
                raise
        return None

    def _lifecycle(self, hook: str, kwargs: dict[str, Any]) -> None:
        for pid, fn, names in self._calls[hook]:
            try:
                self._call(fn, names, kwargs)
            except Exception as exc:
                self._mark(exc, pid, hook, fn)
                raise

    def _mark(self, exc: Exception, pid: str, hook: str, fn: Callable[..., Any]) -> None:
        if pid not in self.builtin:
            mark_hook_failure(exc, pid, hook, fn)

    def has(self, hook: str) -> bool:
        return bool(self._calls[hook])

    def _isolated(self, hook: str, kwargs: dict[str, Any]) -> Any:
        """Call a build-time hook in config order; a failure is reported with the plugin's id."""
        result = None
        for pid, fn, names in self._calls[hook]:
            try:
                value = self._call(fn, names, kwargs)
            except VaecoreError:
                raise
            except Exception as exc:
                mark_hook_failure(exc, pid, hook, fn)
                raise PluginError(hook_failure(exc) or f"plugin {pid!r} failed in {hook}") from exc
            result = value if result is None else result
        return result

    def setup(self, info: Any) -> None:
        self._isolated("setup", {"info": info})

    def pre_encode(self, x: Any, ctx: Any) -> Any:
        return self._fold("pre_encode", "x", x, {"ctx": ctx})

    def post_posterior(self, posterior: Any, features: Any, ctx: Any) -> Any:
        return self._fold("post_posterior", "posterior", posterior, {"features": features, "ctx": ctx})

    def latent_map(self, y: Any, ctx: Any) -> Any:
        return self._fold("latent_map", "y", y, {"ctx": ctx})

    def kl_weight(self, weight: float, ctx: Any) -> float:
        """The step's KL weight after every plugin's schedule, checked where it enters the core."""
        if not self._calls["kl_weight"]:
            return weight
        value = self._fold("kl_weight", "weight", weight, {"ctx": ctx})
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and value >= 0):
            last = self._calls["kl_weight"][-1][0]
            raise PluginError(f"plugin {last!r} failed in kl_weight: returned {value!r}, not a finite number >= 0")
        return float(value)

    def forward_samples(self, training: bool) -> int | None:
        return self._claimed("forward_samples", {"training": training})

    def bound(self, out: Any, ctx: Any) -> Any:
        return self._claimed("bound", {"out": out, "ctx": ctx})

    def prior(self, info: Any, model: Any) -> Any:
        return self._isolated("prior", {"info": info, "model": model})

    def train_step(self, batch: Any, ctx: Any, loop: Any) -> Any:
        return self._claimed("train_step", {"batch": batch, "ctx": ctx, "loop": loop})

    def on_step_end(self, ctx: Any) -> None:
        self._lifecycle("on_step_end", {"ctx": ctx})

    def extra_loss(self, out: Any, ctx: Any) -> list[tuple[str, Term]]:
        """Every plugin's loss terms as ``(namespaced name, Term)`` in config order."""
        terms: list[tuple[str, Term]] = []
        for pid, fn, names in self._calls["extra_loss"]:
            try:
                result = fn(*[{"out": out, "ctx": ctx}[n] for n in names])
                for name, value in (result or {}).items():
                    term = value if isinstance(value, Term) else Term(value)
                    terms.append((namespaced(pid, name, "extra_loss"), term))
            except Exception as exc:
                self._mark(exc, pid, "extra_loss", fn)
                raise
        return terms

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], ctx: Any) -> tuple[dict[str, float], list[str]]:
        """Metrics from every plugin (namespaced) and the reasons of those asking to stop."""
        merged: dict[str, float] = {}
        stops: list[str] = []
        for pid, fn, names in self._calls["on_epoch_end"]:
            kwargs = {"epoch": epoch, "metrics": dict(metrics), "ctx": ctx}
            try:
                result: EpochResult = as_epoch_result(self._call(fn, names, kwargs))
                for name, value in result.metrics.items():
                    merged[namespaced(pid, name, "on_epoch_end")] = value
            except Exception as exc:
                self._mark(exc, pid, "on_epoch_end", fn)
                raise
            if result.stop:
                stops.append(f"{pid}: {result.reason or 'requested stop'}")
        return merged, stops

    def eval_metrics(self, model: Any, split: Any, ctx: Any) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for pid, fn, names in self._calls["eval_metrics"]:
            try:
                result = self._call(fn, names, {"model": model, "split": split, "ctx": ctx})
                for name, value in (result or {}).items():
                    merged[namespaced(pid, name, "eval_metrics")] = value
            except Exception as exc:
                self._mark(exc, pid, "eval_metrics", fn)
                raise
        return merged


def namespaced(pid: str, name: str, hook: str) -> str:
    """``pid.name``; a name that is not an identifier could reach into another namespace: refused."""
    if not isinstance(name, str) or not is_identifier(name):
        raise PluginError(f"plugin {pid!r}: {hook} returned the name {name!r}; names must be identifiers")
    return f"{pid}.{name}"


# failures of plugin code -------------------------------------------------------------------------

_HOOK_FAILURE = "_vaecore_hook_failure"


def describe(exc: BaseException) -> str:
    """``Type: first line of the message``: an exception as the last line of its traceback, on one line."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__


def mark_hook_failure(exc: BaseException, pid: str, hook: str, fn: Callable[..., Any]) -> None:
    """Record on ``exc`` that it escaped plugin ``pid``'s ``hook`` (the innermost plugin is kept,
    and errors of vaecore's own, :class:`VaecoreError`, keep their message). The exception itself is
    unchanged, so code calling the model directly still catches its own types."""
    if isinstance(exc, VaecoreError) or getattr(exc, _HOOK_FAILURE, None) is not None:
        return
    code = getattr(fn, "__code__", None)
    try:
        setattr(exc, _HOOK_FAILURE, (pid, hook, code.co_filename if code is not None else None))
    except AttributeError:  # an exception class with __slots__
        return
    add_note = getattr(exc, "add_note", None)  # Python 3.11+: shown under the traceback
    if add_note is not None:
        add_note(f"(raised in plugin {pid!r}, hook {hook})")


def hook_failure(exc: BaseException) -> str | None:
    """For an exception marked by :func:`mark_hook_failure`, one line naming the plugin, the hook,
    the exception and where in the plugin's code it was raised; None for any other exception."""
    mark = getattr(exc, _HOOK_FAILURE, None)
    if mark is None:
        return None
    pid, hook, source = mark
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if source and frames:
        folder = os.path.dirname(source)
        own = [f for f in frames if f.filename == source or os.path.dirname(f.filename) == folder]
        frame = own[-1] if own else frames[-1]
        where = f" (at {frame.filename}:{frame.lineno})"
    return f"plugin {pid!r} failed in {hook}: {describe(exc)}{where}"
