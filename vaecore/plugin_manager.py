"""Finding, loading and registering plugins, and calling their hooks in stack order.

``PluginRegistry`` knows the installed plugins (entry points of the group ``vaecore.plugins``)
without importing them, and imports one only when asked, reporting failures with the plugin's
distribution and version. ``PluginStack`` registers one run's plugin instances with pluggy,
checks them against the hook specs, and calls each hook the way ``vaecore.hookspecs`` says.
"""

from __future__ import annotations

import ast
import difflib
import functools
import inspect
import itertools
import logging
import math
import os
import textwrap
import traceback
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from typing import Any

import attrs
import pluggy
import torch

from vaecore import hookspecs
from vaecore.distributions import Posterior
from vaecore.errors import ConfigError, PluginError, VaecoreError
from vaecore.hookspecs import (
    CLAIMED_HOOKS,
    FOLDED_HOOKS,
    HOOK_API_VERSION,
    MIN_HOOK_API_VERSION,
    PROJECT,
)
from vaecore.hooktypes import Bound, EpochResult, Term, as_epoch_result

ENTRY_POINT_GROUP = "vaecore.plugins"
IMPL_ATTR = f"{PROJECT}_impl"
SPEC_ATTR = f"{PROJECT}_spec"
TRACE_ENV = "VAECORE_TRACE_HOOKS"
"""Set to 1 to log every hook call (plugin id, hook, a summary of the result) to stderr."""

log = logging.getLogger("vaecore.plugins")
trace_log = logging.getLogger("vaecore.hooks")

IMPORT_FAILURES: dict[str, BaseException] = {}
"""The exception of each plugin that failed to import in this process, by name (for ``--debug``)."""


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
        """The names of the plugins that can be listed in a config, sorted."""
        return sorted(self._infos)

    def info(self, name: str) -> PluginInfo:
        """Where plugin ``name`` comes from (distribution, version, import target)."""
        return self._infos[name]

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def unknown_message(self, name: str) -> str:
        """The one line for a config naming a plugin that is not installed."""
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
                IMPORT_FAILURES[name] = exc
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


# registration checks: shared by the stack of a run and by `vaecore plugins` -----------------------


@functools.cache
def spec_arguments() -> dict[str, tuple[str, ...]]:
    """Every hook spec's name and its arguments, in the order of ``vaecore.hookspecs``."""
    specs = {}
    for name, fn in vars(hookspecs).items():
        if callable(fn) and isinstance(getattr(fn, SPEC_ATTR, None), dict):
            specs[name] = tuple(inspect.signature(fn).parameters)
    return specs


def _impl_signature(owner: object, attr: str) -> tuple[list[str], list[str]]:
    """The arguments of a hook implementation without ``self``: (plain, with defaults)."""
    fn = getattr(owner, attr)
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return [], []
    if inspect.isclass(owner) and not isinstance(inspect.getattr_static(owner, attr), (staticmethod, classmethod)):
        params = params[1:]  # an unbound method of a class: drop self
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    plain = [p.name for p in params if p.kind in kinds and p.default is inspect.Parameter.empty]
    defaulted = [p.name for p in params if p.default is not inspect.Parameter.empty]
    return plain, defaulted


def _args_text(names: Iterable[str]) -> str:
    return f"({', '.join(names)})"


def implementation_problem(pid: str, plugin: object) -> str | None:
    """The first reason the hook implementations of ``plugin`` (an instance or a class) would be
    refused, as one line naming the plugin and the hook; None when they all match the specs."""
    specs = spec_arguments()
    for attr in sorted(dir(plugin)):
        opts = getattr(getattr(plugin, attr, None), IMPL_ATTR, None)
        if not isinstance(opts, dict):
            continue
        hook = opts.get("specname") or attr
        if hook not in specs:
            close = difflib.get_close_matches(hook, list(specs), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the hooks are {', '.join(specs)}"
            what = f"method {attr}" if attr == hook else f"method {attr} (specname {hook!r})"
            return f"plugin {pid!r}: {what} is marked @hookimpl but {hook!r} is not a hook; {hint}"
        plain, defaulted = _impl_signature(plugin, attr)
        spec_args = _args_text(specs[hook])
        if defaulted:
            return (
                f"plugin {pid!r}: hook {hook} has arguments with defaults ({', '.join(defaulted)}); "
                f"pluggy never passes them; the spec's arguments are {spec_args}"
            )
        extra = [a for a in plain if a not in specs[hook]]
        if extra:
            return (
                f"plugin {pid!r}: hook {hook} takes {_args_text(plain)}, but {', '.join(extra)} "
                f"{'is' if len(extra) == 1 else 'are'} not an argument of the spec {hook}{spec_args}; "
                "take any of the spec's arguments, by name"
            )
        if hook in FOLDED_HOOKS and any(opts.get(k) for k in ("tryfirst", "trylast", "hookwrapper", "wrapper")):
            return (
                f"plugin {pid!r}: {hook} is folded in config order; "
                "tryfirst, trylast and wrappers are not allowed on it"
            )
    return None


def unmarked_hooks(cls: type) -> list[str]:
    """Methods of ``cls`` named like a hook but not marked ``@hookimpl`` (never called)."""
    implemented = set(hook_names(cls))
    names = []
    for name in spec_arguments():
        value = getattr(cls, name, None)
        if name not in implemented and callable(value) and not isinstance(getattr(value, IMPL_ATTR, None), dict):
            names.append(name)
    return names


def unmarked_message(pid: str, name: str) -> str:
    return f"plugin {pid!r}: method {name} is named like a hook but not marked @hookimpl; it is never called"


def _validate(pm: pluggy.PluginManager, pid: str, plugin: object) -> None:
    """Register ``plugin`` in ``pm`` after vaecore's checks; refusals are one-line PluginErrors."""
    problem = implementation_problem(pid, plugin)
    if problem is not None:
        raise PluginError(problem)
    try:
        pm.register(plugin, name=pid)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        if pm.get_plugin(pid) is not None:
            pm.unregister(name=pid)
        one_line = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise PluginError(f"plugin {pid!r} does not match the hook specs: {one_line}") from exc


def required_options(cls: type) -> list[str]:
    """The options of a plugin class that have no default (a config must give them)."""
    options = getattr(cls, "Options", None)
    if options is None or not attrs.has(options):
        return []
    return [f.name for f in attrs.fields(options) if f.init and f.default is attrs.NOTHING]


def check_plugin(name: str, cls: type) -> str:
    """The checks a run makes when it registers a plugin, made on the class (nothing constructed):
    ``ok``, ``ok (...)`` with the options a config must give and any warning, or raises PluginError."""
    from vaecore.components import plugin_components

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    _validate(pm, name, cls)
    plugin_components(name, cls)
    notes = []
    required = required_options(cls)
    if required:
        notes.append(f"needs options: {', '.join(required)}")
    notes += [f"warning: method {m} is not marked @hookimpl, never called" for m in unmarked_hooks(cls)]
    return f"ok ({'; '.join(notes)})" if notes else "ok"


def _attribute_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a class (the string right after ``name: type = ...``)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def option_rows(cls: type) -> list[dict[str, str]]:
    """Each option of a plugin class: name, type, default and doc (attribute docstring or
    ``metadata={"doc": ...}``)."""
    options = getattr(cls, "Options", None)
    if options is None or not attrs.has(options):
        return []
    docs = _attribute_docs(options)
    rows = []
    for f in attrs.fields(options):
        if not f.init:
            continue
        if f.default is attrs.NOTHING:
            default = "(required)"
        elif isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
            try:
                default = repr(f.default.factory() if not f.default.takes_self else f.default)  # type: ignore[attr-defined]
            except Exception:
                default = "(computed)"
        else:
            default = repr(f.default)
        tp = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", None) or str(f.type)
        doc = str(f.metadata.get("doc", "")) or docs.get(f.name, "")
        rows.append({"name": f.name, "type": tp or "", "default": default, "doc": doc})
    return rows


def summarize(value: Any) -> str:
    """A short description of a hook's result without reading tensor values (no device sync)."""
    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, Term):
        return f"Term({summarize(value.value)}, weight={value.weight!r})"
    if isinstance(value, Bound):
        return f"Bound(loss={summarize(value.loss)}, terms=[{', '.join(map(str, value.terms))}])"
    if isinstance(value, dict):
        items = list(value.items())
        text = ", ".join(f"{k}: {summarize(v)}" for k, v in items[:6])
        return "{" + text + (", ..." if len(items) > 6 else "") + "}"
    if isinstance(value, (int, float, bool, str)):
        return repr(value)
    return type(value).__name__


def _traced(pid: str, hook: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        result = fn(*args)
        trace_log.info("hook %s of plugin %r -> %s", hook, pid, summarize(result))
        return result

    return call


def trace_enabled() -> bool:
    return os.environ.get(TRACE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def _trace_handler() -> None:
    """Hook traces go to stderr unless the application configured logging itself."""
    trace_log.setLevel(logging.INFO)
    if not trace_log.hasHandlers():
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("vaecore: trace: %(message)s"))
        trace_log.addHandler(handler)


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
        self.traced = trace_enabled()
        """Whether hook calls are logged (VAECORE_TRACE_HOOKS, read once here: no cost when off)."""
        if self.traced:
            _trace_handler()
            self._calls = {
                hook: [(pid, _traced(pid, hook, fn), names) for pid, fn, names in calls]
                for hook, calls in self._calls.items()
            }
        self._posterior_types: set[type] = set()

    # registration and checks -------------------------------------------------------------

    def _register(self, pid: str, plugin: object) -> None:
        _validate(self.pm, pid, plugin)
        for name in unmarked_hooks(type(plugin)):
            log.warning("vaecore: warning: %s", unmarked_message(pid, name))

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

    def _fold(
        self,
        hook: str,
        first: str,
        value: Any,
        kwargs: dict[str, Any],
        check: Callable[[str, Any, Any], None] | None = None,
    ) -> Any:
        for pid, fn, names in self._calls[hook]:
            kwargs[first] = value
            try:
                result = fn(*[kwargs[n] for n in names])
            except Exception as exc:
                self._mark(exc, pid, hook, fn)
                raise
            if result is not None:
                if check is not None:
                    check(pid, value, result)
                value = result
        return value

    # checks of hook results where they enter the core: attribute reads only, never a device sync

    def _check_posterior(self, pid: str, before: Any, result: Any) -> None:
        kind = type(result)
        if kind in self._posterior_types:
            return
        if not isinstance(result, Posterior):
            raise PluginError(
                f"plugin {pid!r} failed in post_posterior: returned {summarize(result)}, not a Posterior "
                "(mean, rsample, log_prob, kl_per_dim; see vaecore.distributions) or None"
            )
        self._posterior_types.add(kind)

    @staticmethod
    def _check_latent(pid: str, y: Any, z: Any) -> None:
        if not isinstance(z, torch.Tensor) or z.shape[:-1] != y.shape[:-1]:
            got = f"shape {tuple(z.shape)}" if isinstance(z, torch.Tensor) else summarize(z)
            raise PluginError(
                f"plugin {pid!r} failed in latent_map: returned {got} for y of shape {tuple(y.shape)}; "
                "z must keep y's leading dimensions (only the last may change)"
            )

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
        """Whether any plugin of the stack implements ``hook``."""
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
        """Each plugin's ``setup`` with the model's :class:`ModelInfo`, in config order."""
        self._isolated("setup", {"info": info})

    def pre_encode(self, x: Any, ctx: Any) -> Any:
        """The encoder input after every plugin's ``pre_encode``, each fed the previous result."""
        return self._fold("pre_encode", "x", x, {"ctx": ctx})

    def post_posterior(self, posterior: Any, features: Any, ctx: Any) -> Any:
        """The posterior after every plugin's ``post_posterior`` (each result checked to be a Posterior)."""
        return self._fold(
            "post_posterior", "posterior", posterior, {"features": features, "ctx": ctx}, self._check_posterior
        )

    def latent_map(self, y: Any, ctx: Any) -> Any:
        """z = g(y) through every plugin's ``latent_map`` (shape-checked); y itself without one."""
        return self._fold("latent_map", "y", y, {"ctx": ctx}, self._check_latent)

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
        """The claimant's posterior samples per example, or None (``train.samples`` applies)."""
        return self._claimed("forward_samples", {"training": training})

    def bound(self, out: Any, ctx: Any) -> Any:
        """The claimed training bound (the built-in ELBO without a claimant), its loss and terms checked."""
        result = self._claimed("bound", {"out": out, "ctx": ctx})
        if not isinstance(result, Bound):
            pid = self._calls["bound"][0][0] if self._calls["bound"] else "elbo"
            raise PluginError(
                f"plugin {pid!r} failed in bound: returned {summarize(result)}, not a vaecore.hooktypes.Bound"
            )
        bad = scalar_problem(result.loss)
        if bad:
            raise PluginError(f"plugin {self._calls['bound'][0][0]!r} failed in bound: the loss is {bad}")
        for name, value in result.terms.items():
            bad = scalar_problem(value)
            if bad:
                pid = self._calls["bound"][0][0]
                raise PluginError(f"plugin {pid!r} failed in bound: the term {name!r} is {bad}")
        return result

    def prior(self, info: Any, model: Any) -> Any:
        """The prior a plugin provides, or None (the standard normal)."""
        return self._isolated("prior", {"info": info, "model": model})

    def train_step(self, batch: Any, ctx: Any, loop: Any) -> Any:
        """The claimant's own training step's terms, or None (the core's step runs)."""
        return self._claimed("train_step", {"batch": batch, "ctx": ctx, "loop": loop})

    def on_step_end(self, ctx: Any) -> None:
        """Every plugin's ``on_step_end``, after the optimiser step."""
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
        for name, term in terms:
            bad = scalar_problem(term.value)
            if bad:
                pid, _, short = name.partition(".")
                raise PluginError(f"plugin {pid!r} failed in extra_loss: the term {short!r} is {bad}")
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
        """Every plugin's evaluation metrics, namespaced by plugin id."""
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


def scalar_problem(value: Any) -> str | None:
    """Why ``value`` is not a scalar tensor (a loss term), or None; reads no tensor values."""
    if not isinstance(value, torch.Tensor):
        return f"{summarize(value)}, not a tensor; a term must be a scalar tensor (a batch mean)"
    if value.ndim != 0:
        return f"of shape {tuple(value.shape)}, not a scalar; reduce it to a scalar (a batch mean, .mean())"
    return None


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
    code = getattr(getattr(fn, "__wrapped__", fn), "__code__", None)
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
