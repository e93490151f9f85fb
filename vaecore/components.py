"""Named components: the encoders, decoders, likelihoods and datasets a config can choose.

A component is a factory registered under a role and a name. The built-in ones
(:mod:`vaecore.builtin_components`) and those of a plugin listed in the config's ``[[plugins]]``
come through the same ``components`` hook; ``kind = "my_pkg.nets:MyEncoder"`` (or
``data.name = "my_pkg.data:load"``) names a factory by import path without any plugin.

A factory is called with keyword arguments (``options=`` only when it has an ``Options`` class)
and returns, by role:

* ``encoder``: ``factory(input_shape=, latent_dim=[, options=][, data_meta=])`` returns an ``nn.Module`` with
  an int ``feature_dim`` whose ``forward(x)`` gives ``(loc, log_var, features)``: the mean and
  log-variance of q(y|x), each ``(B, latent_dim)``, and the last hidden layer
  ``(B, feature_dim)`` (DU-VAE's and other plugins' ``features``).
* ``decoder``: ``factory(latent_dim=, param_shape=[, options=][, data_meta=])`` returns an ``nn.Module`` with
  a bool ``autoregressive``: ``forward(z)`` gives the likelihood's parameters
  ``(N, *param_shape)`` for codes ``(N, latent_dim)``; an autoregressive one takes
  ``forward(z, x)`` (teacher forcing) and has ``generate(z, likelihood, greedy)``.
* ``likelihood``: ``factory(input_shape=[, options=][, data_meta=])`` returns a
  :class:`vaecore.likelihoods.Likelihood` (``log_prob_pixels``, ``mean``, ``sample``, optional
  ``mode``, ``draw_pixel`` (one input dimension's draw, for autoregressive decoders; by default
  from a whole ``sample``), ``check_data``, ``units``, ``render`` and ``param_shape``, the decoder's output
  shape per example: by default the input's, one parameter per input dimension).

``data_meta`` (the dataset's :attr:`~vaecore.data.Dataset.meta`, ``{}`` when it has none, read
back from ``run.json`` when a run is loaded) is passed only to factories that name it.
* ``dataset``: ``factory(data=[, options=])`` (``data`` is the whole ``[data]`` table) returns a
  :class:`vaecore.data.Dataset` of train/valid/test splits; the core then applies
  ``digits``, ``binarize`` and the seeded subsets.
* ``logger``: ``factory(run_dir=[, options=])`` returns a :class:`vaecore.loggers.Logger`
  (``log_hyperparams``, ``log_metrics``, ``log_image``, ``finalize``), chosen by a
  ``[[loggers]]`` entry.

The options of a component sit in its config table beside ``kind`` (``[model.encoder]``) or
beside the core data keys (``[data]``), and are structured into its ``Options`` attrs class with
the same one-line errors as plugin options.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from vaecore.errors import ConfigError, PluginError

ROLES = ("encoder", "decoder", "likelihood", "dataset", "logger")
"""What a component can be, and so where a config names it."""

BUILTIN = "vaecore"
"""The origin of the built-in components."""


@attrs.frozen
class Component:
    """One registered component: its role, its name in configs, the factory and its options.

    ``options`` is an attrs class whose fields are the keys the component accepts in its config
    table (None: it takes none); when None, the factory's own ``Options`` attribute is used."""

    role: str = attrs.field(validator=attrs.validators.in_(ROLES))
    name: str
    factory: Callable[..., Any] = attrs.field(eq=False)
    options: type | None = attrs.field(default=None, eq=False)
    doc: str = ""
    origin: str = attrs.field(default=BUILTIN, eq=False)
    """Who registered it: ``vaecore``, a plugin's name, or ``import path``."""

    def __attrs_post_init__(self) -> None:
        own = getattr(self.factory, "Options", None)
        if self.options is None and own is not None and attrs.has(own):
            object.__setattr__(self, "options", own)

    @property
    def summary(self) -> str:
        """The first line of the doc (or of the factory's docstring)."""
        text = self.doc or inspect.getdoc(self.factory) or ""
        return text.strip().splitlines()[0] if text.strip() else ""

    def build(self, options: Any, **arguments: Any) -> Any:
        """Call the factory; a failure names the component (the caller adds what it was built for).

        Arguments in :data:`OPTIONAL_ARGUMENTS` (``data_meta``) are passed only to a factory whose
        signature names them (or takes ``**kwargs``), so the components that do not need them
        keep their signatures."""
        if self.options is not None:
            arguments["options"] = options
        for name in OPTIONAL_ARGUMENTS:
            if name in arguments and not takes_argument(self.factory, name):
                del arguments[name]
        return self.factory(**arguments)


OPTIONAL_ARGUMENTS = ("data_meta",)
"""Arguments a factory receives only when it asks for them by name: ``data_meta``, the dataset's
:attr:`vaecore.data.Dataset.meta` (a text corpus's vocabulary), given to encoders, decoders and
likelihoods."""


def takes_argument(factory: Callable[..., Any], name: str) -> bool:
    """Whether ``factory`` (a class: its ``__init__``) accepts the keyword argument ``name``."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def is_import_path(name: str) -> bool:
    """``module.path:attribute``: a component named by where it lives, not registered."""
    module, sep, attr = name.partition(":")
    return bool(sep and module and attr)


def import_component(role: str, name: str) -> Component:
    """The component an import path names; one-line ConfigErrors for every way it can fail."""
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(f"cannot import module {module_name!r} of {name!r}: {type(exc).__name__}: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"module {module_name!r} has no attribute {attr!r} (from {name!r})")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{name!r} is not a class or function (got {type(target).__name__})")
    options = getattr(target, "Options", None)
    if options is not None and not attrs.has(options):
        raise ConfigError(f"{name!r}: its Options must be an attrs class")
    return Component(role=role, name=name, factory=target, origin="import path")


class ComponentRegistry:
    """The components a run can name: the built-ins and those of the plugins it lists."""

    def __init__(self, components: Iterable[Component] = ()):
        self._by_key: dict[tuple[str, str], Component] = {}
        self.add(components)

    def add(self, components: Iterable[Component]) -> None:
        """Register components; a name already taken in its role is refused, naming both owners."""
        for component in components:
            key = (component.role, component.name)
            taken = self._by_key.get(key)
            if taken is not None:
                raise PluginError(
                    f"{component.role} {component.name!r} is registered by both {taken.origin!r} and "
                    f"{component.origin!r}; a name may be registered once"
                )
            self._by_key[key] = component

    def names(self, role: str) -> list[str]:
        """The names a config can give as ``kind`` for ``role`` (``encoder``, ``decoder``, ...), sorted."""
        return sorted(name for r, name in self._by_key if r == role)

    def all(self) -> list[Component]:
        """Every registered component, by role then name."""
        return sorted(self._by_key.values(), key=lambda c: (ROLES.index(c.role), c.name))

    def get(self, role: str, name: str) -> Component:
        """The component ``name`` of ``role``, or an import path's; ConfigError naming the choices."""
        found = self._by_key.get((role, name))
        if found is not None:
            return found
        if is_import_path(name):
            return import_component(role, name)
        raise ConfigError(
            f"unknown {role} {name!r}; available: {', '.join(self.names(role)) or 'none'} "
            "(a plugin's components are available once it is listed in [[plugins]]; "
            "a class of your own: 'my_pkg.module:MyClass')"
        )


def plugin_components(name: str, cls: type) -> list[Component]:
    """What a plugin class's ``components`` hook registers, checked, with the plugin as origin."""
    from vaecore.plugin_manager import IMPL_ATTR

    hook = next(
        (
            attr
            for attr, value in inspect.getmembers(cls)
            if ((getattr(value, IMPL_ATTR, None) or {}).get("specname") or attr) == "components"
            and isinstance(getattr(value, IMPL_ATTR, None), dict)
        ),
        None,
    )
    if hook is None:
        return []
    if not isinstance(inspect.getattr_static(cls, hook), (staticmethod, classmethod)):
        raise PluginError(
            f"plugin {name!r}: hook components must be a @staticmethod or @classmethod "
            "(it is called on the class, before any instance exists)"
        )
    try:
        result = getattr(cls, hook)()
    except Exception as exc:
        raise PluginError(f"plugin {name!r} failed in components: {type(exc).__name__}: {exc}") from exc
    items = list(result or [])
    for item in items:
        if not isinstance(item, Component):
            raise PluginError(f"plugin {name!r} failed in components: returned {item!r}, not a vaecore.Component")
    return [attrs.evolve(item, origin=name) for item in items]
