"""The run configuration: TOML in, attrs classes out, every error reported at once with its path.

The core sections are structured by a strict cattrs converter. Each ``[[plugins]]`` entry is
checked against the installed plugins before its options are structured into the plugin's own
``Options`` class, so an unknown name gets its own message and a plugin's option errors carry the
entry's path (``plugins[1].gamma: must be > 0, got -1``).
"""

from __future__ import annotations

import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, cast

import attrs
import cattrs
import tomli_w

from vaecore import validators as v
from vaecore.components import BUILTIN, Component, ComponentRegistry, plugin_components
from vaecore.errors import ConfigError, PluginError
from vaecore.plugin_manager import PluginRegistry, is_identifier

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ComponentConfig:
    """A config table that chooses a component (:mod:`vaecore.components`) and holds its options.

    ``component_key`` names the key that chooses it (``kind``, or ``name`` for data); every key of
    the table that is not one of the class's own fields is one of the component's options,
    structured into its ``Options`` class. ``options`` and ``component`` are filled in when the
    config is read (or, for a config made in Python, from the built-in components).
    """

    component_role: ClassVar[str]
    component_key: ClassVar[str] = "kind"
    options: Any
    component: Component | None

    def __attrs_post_init__(self) -> None:
        if getattr(self, "component", None) is None:
            from vaecore.builtin_components import builtin_registry

            component = builtin_registry().get(self.component_role, getattr(self, self.component_key))
            self.component = component
            if self.options is None and component.options is not None:
                self.options = component.options()

    @classmethod
    def of(cls, name: str, components: ComponentRegistry | None = None, **options: Any) -> Any:
        """The table choosing component ``name`` with these options, from Python:
        ``EncoderConfig.of("conv", channels=[8, 16])`` (``components``: default the built-ins)."""
        from vaecore.builtin_components import builtin_registry

        component = (components or builtin_registry()).get(cls.component_role, name)
        if component.options is None and options:
            raise ConfigError(f"{cls.component_role} {name!r} takes no options, got {', '.join(options)}")
        made = component.options(**options) if component.options is not None else None
        return cast(Any, cls)(**{cls.component_key: name}, options=made, component=component)

    @property
    def chosen(self) -> Component:
        """The component this table chooses (resolved when the table was made)."""
        assert self.component is not None
        return self.component

    def build(self, **arguments: Any) -> Any:
        """The component built with this table's options and ``arguments`` (its role's, see
        :mod:`vaecore.components`)."""
        return self.chosen.build(self.options, **arguments)


@attrs.define(kw_only=True)
class EncoderConfig(ComponentConfig):
    """The encoder network: ``kind`` (``mlp``, ``conv``, ``resnet`` or a plugin's) and its options."""

    component_role: ClassVar[str] = "encoder"
    kind: str = "mlp"
    options: Any = None
    component: Component | None = attrs.field(default=None, eq=False, repr=False)


@attrs.define(kw_only=True)
class DecoderConfig(ComponentConfig):
    """The decoder network: ``kind`` (``mlp``, ``conv``, ``pixelcnn`` or a plugin's) and its options."""

    component_role: ClassVar[str] = "decoder"
    kind: str = "mlp"
    options: Any = None
    component: Component | None = attrs.field(default=None, eq=False, repr=False)


@attrs.define(kw_only=True)
class LikelihoodConfig(ComponentConfig):
    """The decoder's distribution p(x|z): ``kind`` (``bernoulli``, ``gaussian``, ``laplace`` or a
    plugin's) and its options (``scale``, ``learn_scale`` for the location-scale families)."""

    component_role: ClassVar[str] = "likelihood"
    kind: str = "bernoulli"
    options: Any = None
    component: Component | None = attrs.field(default=None, eq=False, repr=False)


LEGACY_DEFAULTS: dict[str, Any] = {
    "hidden": [500, 500],
    "activation": "tanh",
    "batch_norm": True,
    "width": 32,
    "z_channels": 4,
    "scale": 1.0,
    "learn_scale": False,
}
"""Keys that the first release wrote into every network and likelihood table of a resolved
config, whatever the kind, with their defaults. Read back with a built-in kind that does not take
them, a key at this value is dropped, so run folders of that release still load and compare equal;
any other value is an unknown key."""


@attrs.define(kw_only=True)
class ModelConfig:
    latent_dim: int = attrs.field(default=32, validator=v.gt(0))
    encoder: EncoderConfig = attrs.field(factory=EncoderConfig)
    decoder: DecoderConfig = attrs.field(factory=DecoderConfig)
    likelihood: LikelihoodConfig = attrs.field(factory=LikelihoodConfig)


@attrs.define(kw_only=True)
class DataConfig(ComponentConfig):
    """Which dataset, where to find it, and optional subsets (n rows at random, or the first n) for quick runs.

    ``name`` chooses a dataset component (built in, a listed plugin's, or ``module:factory``);
    keys of ``[data]`` that are not listed here are that component's options."""

    component_role: ClassVar[str] = "dataset"
    component_key: ClassVar[str] = "name"
    name: str = "binarized_mnist"
    path: str | None = None
    root: str | None = None
    train_size: int | None = attrs.field(default=None, validator=v.gt(0))
    valid_size: int | None = attrs.field(default=None, validator=v.gt(0))
    test_size: int | None = attrs.field(default=None, validator=v.gt(0))
    subset: str = attrs.field(default="random", validator=v.one_of(("random", "first")))
    """Which rows ``train_size``/``valid_size``/``test_size`` keep: ``random`` (default), n rows
    drawn without replacement by a numpy generator seeded from ``seed`` and the split's name
    (each split drawn on its own; the same seed always gives the same rows), stratified by label
    where the data has labels, kept in their file order; ``first``, the first n rows of each split.
    Files are often not in random order: the shipped binarized MNIST test split is sorted by
    class (its first 2,000 rows are zeros and ones), so ``first`` measures a few classes."""
    # the synthetic 2-D sets (circle, infinity, mog, sparse): training size, noise std, seed
    n_points: int | None = attrs.field(default=None, validator=v.gt(0))
    noise: float | None = attrs.field(default=None, validator=v.ge(0, finite=True))
    seed: int = attrs.field(default=0, validator=v.between(0, 2**32 - 1))
    # image sets (vaecore.data.images): binarization, class subsets, validation hold-out, downloads
    binarize: str = attrs.field(default="none", validator=v.one_of(("none", "static", "dynamic")))
    """``static``: every split binarized once (Bernoulli of the intensities, seeded by ``seed``);
    ``dynamic``: the train split re-drawn every epoch, valid/test binarized once as ``static``."""
    digits: list[int] | None = attrs.field(default=None, validator=v.each(v.ge(0)))
    """Keep only the rows whose label is in this list (``[0, 1]`` gives MNIST-01)."""
    valid_holdout: int | None = attrs.field(default=None, validator=v.gt(0))
    """Rows from the end of the training file held out as validation when the file has no
    ``x_valid`` (default: 10000, at most a sixth of the training rows)."""
    download: bool = False
    """Fetch a missing ``mnist``/``fashion_mnist`` from its public source into the data folder
    (``root``, ``VAECORE_DATA``, else ``~/.cache/vaecore``), verified by sha256."""
    options: Any = None
    component: Component | None = attrs.field(default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # data locations are absolute in a resolved config, so that a run folder names its data
        # wherever it is moved or read from (relative paths are relative to the working directory)
        for key in ("path", "root"):
            value = getattr(self, key)
            if isinstance(value, str) and value:
                setattr(self, key, str(Path(value).expanduser().resolve()))


@attrs.define(kw_only=True)
class WarmupConfig:
    """Linear KL warm-up per iteration, from ``start`` to 1 over ``epochs`` epochs (0: none)."""

    start: float = attrs.field(default=1.0, validator=v.between(0.0, 1.0))
    epochs: float = attrs.field(default=0.0, validator=v.ge(0))


@attrs.define(kw_only=True)
class LRDecayConfig:
    """Multiply the learning rate by ``factor`` when the monitored value (``train.monitor``) has
    not improved for ``patience`` epochs; stop after ``max_decays`` decays (He et al. 2019). Off
    when patience is 0."""

    factor: float = attrs.field(default=0.5, validator=v.gt(0, finite=True))
    patience: int = attrs.field(default=0, validator=v.ge(0))
    max_decays: int | None = attrs.field(default=None, validator=v.gt(0))


MONITOR_MODES = ("auto", "min", "max")
MAXIMISED_TERMS = frozenset({"elbo", "bound", "iwae", "rec"})
"""Logged terms that improve by rising: the bounds on log p(x) and the reconstruction term."""
MINIMISED_TERMS = frozenset({"loss", "kl", "nll"})
"""Logged terms that improve by falling."""


def monitor_direction(key: str | None, mode: str = "auto") -> str | None:
    """``min`` or ``max`` for the monitored ``key`` (``mode`` unless it is ``auto``: then by the
    key's last part, None when that does not tell, or when no key is given)."""
    if mode != "auto" or key is None:
        return None if key is None else mode
    last = key.rsplit(".", 1)[-1]
    return "max" if last in MAXIMISED_TERMS else "min" if last in MINIMISED_TERMS else None


@attrs.define(kw_only=True)
class TrainConfig:
    epochs: int = attrs.field(default=10, validator=v.gt(0))
    batch_size: int = attrs.field(default=100, validator=v.gt(0))
    lr: float = attrs.field(default=1e-3, validator=v.gt(0, finite=True))
    beta: float = attrs.field(default=1.0, validator=v.ge(0, finite=True))
    kl_warmup: WarmupConfig = attrs.field(factory=WarmupConfig)
    free_bits: float = attrs.field(default=0.0, validator=v.ge(0, finite=True))
    samples: int = attrs.field(default=1, validator=v.gt(0))
    grad_clip: float | None = attrs.field(default=None, validator=v.gt(0))
    early_stopping: int | None = attrs.field(default=None, validator=v.gt(0))
    """Stop after this many epochs without an improvement of the monitored value (``monitor``)."""
    lr_decay: LRDecayConfig = attrs.field(factory=LRDecayConfig)
    monitor: str | None = None
    """The logged value that selects ``checkpoints/best.pt`` and drives ``early_stopping`` and
    ``lr_decay``: a key of the ``metrics.jsonl`` records, such as ``valid.elbo``, ``valid.loss``
    (the training objective on the validation split, with plugin terms and free bits),
    ``valid.<plugin>.<term>`` or a plugin's epoch metric ``<plugin>.<name>``. Unset: the active
    bound, maximised: ``valid.bound`` when the objective logs one (a plugin claiming ``bound``,
    such as ``renyi``), else ``valid.elbo``. Every record says what was monitored (``monitor``,
    ``monitor_mode``, ``monitor_value``, ``best_epoch``). A key the run does not log is refused at
    the first validation, before anything is checkpointed."""
    monitor_mode: str = attrs.field(default="auto", validator=v.one_of(MONITOR_MODES))
    """Whether ``monitor`` improves by falling (``min``) or rising (``max``); ``auto``: ``max``
    for a bound or reconstruction term (``elbo``, ``bound``, ``iwae``, ``rec``), ``min`` for
    ``loss``, ``kl`` and ``nll``; any other key needs ``min`` or ``max``."""
    seed: int = attrs.field(default=0, validator=v.between(0, 2**32 - 1))
    eval_batch_size: int = attrs.field(default=500, validator=v.gt(0))
    device: str = "cpu"
    compile: bool = False
    precision: str = attrs.field(default="32", validator=v.one_of(("32", "bf16", "16")))
    """Precision of the encoder and decoder networks: ``32``; ``bf16`` (autocast, CPU or GPU); ``16``
    (float16 autocast with a gradient scaler, CUDA only). Densities and bounds stay float32."""
    threads: int | None = attrs.field(default=None, validator=v.between(1, 1024))
    """CPU threads for torch (torch.set_num_threads); unset keeps torch's default. On a shared or
    small machine 1 thread per process is often much faster than oversubscribed defaults. At most
    1024: OpenMP cannot start a thread pool of a million (the process crashes)."""
    flush_denormal: bool = True
    """Flush subnormal floats to zero on the CPU (``torch.set_flush_denormal``). Importance-weighted
    bounds make many tiny sample weights whose gradients are subnormal, and CPU arithmetic on those
    is slow: IWAE with K = 50 trains 1.5x faster (2-3x later in training) with it on."""
    keep_every: int | None = attrs.field(default=None, validator=v.gt(0))
    """Also keep ``checkpoints/epoch_NNNN.pt`` every this many epochs (for analysis over training)."""
    progress: bool = True

    def validate(self) -> None:
        if self.monitor is None:
            if self.monitor_mode != "auto":
                raise ValueError(
                    f"monitor_mode: {self.monitor_mode!r} needs a monitor; unset, the monitor is the "
                    "active bound (valid.bound or valid.elbo), which is maximised"
                )
        elif not self.monitor.strip():
            raise ValueError("monitor: must name a logged value such as 'valid.elbo', got ''")
        elif monitor_direction(self.monitor, self.monitor_mode) is None:
            raise ValueError(
                f"monitor_mode: 'auto' cannot tell whether {self.monitor!r} improves by falling or rising; "
                "set monitor_mode to 'min' or 'max'"
            )


@attrs.define(kw_only=True)
class EvalConfig:
    """The final evaluation run at the end of training and by ``vaecore eval``."""

    split: str = attrs.field(default="test", validator=v.one_of(("train", "valid", "test")))
    checkpoint: str = attrs.field(default="best", validator=v.one_of(("best", "last")))
    nll_samples: int = attrs.field(default=500, validator=v.ge(0))
    """K, importance samples per example for ``nll``/``iwae_bound`` (0 skips them)."""
    train_nll_samples: int | None = attrs.field(default=None, validator=v.ge(0))
    """K for the evaluation that ends ``vaecore train`` (None: ``nll_samples``); a cheaper K here
    leaves ``vaecore eval`` at the full one."""
    nll_chunk: int = attrs.field(default=100, validator=v.gt(0))
    """Importance samples per forward pass."""
    nll_batch_size: int = attrs.field(default=50, validator=v.gt(0))
    """Examples per importance-sampling pass: memory is O(nll_batch_size * nll_chunk), whatever K."""
    batch_size: int | None = attrs.field(default=None, validator=v.gt(0))
    """Examples per evaluation batch (None: ``train.eval_batch_size``)."""
    mi_batch_size: int = attrs.field(default=50, validator=v.gt(1))
    """Minibatch whose aggregate posterior ``mi_batch`` uses. The default is He et al.'s (2019)
    for images, 50 (their text experiments use 32); the minibatches are drawn from the split
    shuffled with ``seed``. The estimate is at most about log(mi_batch_size): compare runs at
    the same size."""
    mi_chunk: int = attrs.field(default=1024, validator=v.gt(0))
    """Rows of the N x N matrix of ``mi_split`` computed at a time."""
    au_threshold: float = attrs.field(default=0.01, validator=v.gt(0, finite=True))
    pca_threshold: float = attrs.field(default=0.01, validator=v.gt(0, finite=True))
    reencoding: bool = True
    """Compute the re-encoding error (off: ``reencoding_error`` is null). With an autoregressive
    decoder it decodes every example pixel by pixel, by far the costliest diagnostic."""
    probes: bool = True
    """Linear-probe accuracies (when the data has labels)."""
    probe_split: str = attrs.field(default="train", validator=v.one_of(("train", "valid", "test")))
    """The split the linear probes are fitted on."""
    probe_train_size: int | None = attrs.field(default=None, validator=v.gt(0))
    """Fit the probes on n rows of ``probe_split`` drawn with ``seed`` (stratified by label), not all."""
    probe_weight_decay: float = attrs.field(default=1e-4, validator=v.ge(0, finite=True))
    seed: int = attrs.field(default=0, validator=v.between(0, 2**32 - 1))
    """Seed of the evaluation's own random stream (the caller's RNG state is left untouched)."""


@attrs.define(kw_only=True)
class LoggerConfig(ComponentConfig):
    """One experiment tracker (``[[loggers]]``): ``kind`` (``csv``, ``tensorboard``, ``mlflow``,
    ``wandb`` or a plugin's) and its options; see :mod:`vaecore.loggers`. Loggers do not change
    what a run computes: a resumed run or a reused sweep point may add or change them."""

    component_role: ClassVar[str] = "logger"
    kind: str = "csv"
    every_n_steps: int = attrs.field(default=50, validator=v.gt(0))
    """log the step's terms every this many optimiser steps (the epoch's values every epoch)"""
    image_every: int = attrs.field(default=1, validator=v.ge(0))
    """log grids of prior samples and test reconstructions every this many epochs (0: never;
    only for image inputs)"""
    options: Any = None
    component: Component | None = attrs.field(default=None, eq=False, repr=False)


@attrs.define(kw_only=True)
class PluginEntry:
    """One entry of the stack: the plugin's name, its id in this run and its validated options."""

    name: str
    id: str
    options: Any = None


@attrs.define(kw_only=True)
class Config:
    """A whole run's settings, as read from a TOML config (:func:`load_config`) and validated."""

    data: DataConfig = attrs.field(factory=DataConfig)
    model: ModelConfig = attrs.field(factory=ModelConfig)
    train: TrainConfig = attrs.field(factory=TrainConfig)
    eval: EvalConfig = attrs.field(factory=EvalConfig)
    loggers: list[LoggerConfig] = attrs.field(factory=list)
    plugins: list[PluginEntry] = attrs.field(factory=list)
    launcher: dict[str, Any] | None = None
    """The ``[launcher]`` table: where ``vaecore sweep`` runs its grid points (``kind`` and the
    launcher's options, validated by :mod:`vaecore.launchers`); training ignores it."""


# structuring -------------------------------------------------------------------------------

_FAIL = object()


def _strict(kind: type) -> Any:
    def structure(value: Any, _type: Any) -> Any:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if kind is float and value in ("inf", "-inf", "+inf"):
            return float(value)
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            raise TypeError(f"expected {_type_name(kind)}, got {value!r}")
        return value

    return structure


def make_converter() -> cattrs.Converter:
    """A cattrs converter that never coerces (1.5 is not an int, "1" is not a float)."""
    conv = cattrs.Converter(forbid_extra_keys=True)
    for kind in (int, float, str, bool):
        conv.register_structure_hook(kind, _strict(kind))
    return conv


CONVERTER = make_converter()


def _unstructure_component(obj: ComponentConfig) -> dict[str, Any]:
    """A component table as written in TOML: its own keys, then its options' beside them."""
    own = {
        f.name: CONVERTER.unstructure(getattr(obj, f.name))
        for f in attrs.fields(cast(Any, type(obj)))
        if f.name not in COMPONENT_FIELDS
    }
    return {**own, **(CONVERTER.unstructure(obj.options) if obj.options is not None else {})}


CONVERTER.register_unstructure_hook_func(
    lambda tp: isinstance(tp, type) and issubclass(tp, ComponentConfig), _unstructure_component
)


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin is dict:
        return "a table"
    if origin in (list, Sequence):
        return f"a list of {_type_name(typing.get_args(tp)[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    return getattr(tp, "__name__", str(tp))


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def structure(raw: Any, cls: Any, path: str, problems: list[str], components: ComponentRegistry | None = None) -> Any:
    """Structure ``raw`` into ``cls``, appending every problem (with its path) to ``problems``.

    Unlike a plain cattrs call this keeps going after the first error and also runs every attrs
    validator, so one pass reports all that is wrong. A :class:`ComponentConfig` table is resolved
    in ``components`` (default: the built-in ones). Returns the object, or ``_FAIL``.
    """
    if attrs.has(cls):
        return _structure_attrs(raw, cls, path, problems, components)
    origin = typing.get_origin(cls)
    if origin is list:
        if not isinstance(raw, list):
            problems.append(f"{path}: expected {_type_name(cls)}, got {raw!r}")
            return _FAIL
        (item_type,) = typing.get_args(cls)
        items = [structure(item, item_type, _join(path, i), problems, components) for i, item in enumerate(raw)]
        return _FAIL if any(item is _FAIL for item in items) else items
    try:
        return CONVERTER.structure(raw, cls)
    except Exception:
        problems.append(f"{path}: expected {_type_name(cls)}, got {raw!r}")
        return _FAIL


def _structure_attrs(
    raw: Any, cls: type, path: str, problems: list[str], components: ComponentRegistry | None = None
) -> Any:
    where = path or "config"
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a table, got {raw!r}")
        return _FAIL
    attrs.resolve_types(cls)
    fields = attrs.fields(cls)
    values: dict[str, Any] = {}
    if issubclass(cls, ComponentConfig):
        chosen = _structure_component(raw, cls, path, problems, components)
        if chosen is _FAIL:
            return _FAIL
        raw, values = chosen
        fields = tuple(f for f in fields if f.name not in COMPONENT_FIELDS)
    known = {f.name for f in fields}
    for key in raw:
        if key not in known:
            problems.append(f"{_join(path, key)}: unknown key (expected one of: {', '.join(sorted(known))})")
    failed = any(key not in known for key in raw)
    for f in fields:
        if f.name in raw:
            value = structure(raw[f.name], f.type, _join(path, f.name), problems, components)
            if value is _FAIL:
                failed = True
                continue
            values[f.name] = value
            if f.validator is not None:
                try:
                    f.validator(None, f, value)
                except (ValueError, TypeError) as exc:
                    problems.append(f"{_join(path, f.name)}: {exc}")
                    failed = True
        elif f.default is attrs.NOTHING:
            problems.append(f"{_join(path, f.name)}: required")
            failed = True
    if failed:
        return _FAIL
    with attrs.validators.disabled():
        obj = cls(**values)
    cross_check = getattr(obj, "validate", None)
    if callable(cross_check):
        try:
            cross_check()
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            return _FAIL
    return obj


COMPONENT_FIELDS = ("options", "component")
"""The fields of a :class:`ComponentConfig` filled in from its component, never read from TOML."""


def _structure_component(
    raw: dict[str, Any], cls: type, path: str, problems: list[str], components: ComponentRegistry | None
) -> Any:
    """Resolve the component a table chooses and structure its options: ``(the table's own
    keys, {"options": ..., "component": ...})``, or ``_FAIL`` with the problems reported."""
    from vaecore.builtin_components import builtin_registry

    registry = components if components is not None else builtin_registry()
    key = cls.component_key  # type: ignore[attr-defined]
    role = cls.component_role  # type: ignore[attr-defined]
    name = raw.get(key, attrs.fields_dict(cls)[key].default)
    if not isinstance(name, str):
        problems.append(f"{_join(path, key)}: expected a string (the {role}'s name), got {name!r}")
        return _FAIL
    try:
        component = registry.get(role, name)
    except ConfigError as exc:
        problems.extend(f"{_join(path, key)}: {problem}" for problem in exc.problems)
        return _FAIL
    own = {f.name for f in attrs.fields(cast(Any, cls)) if f.name not in COMPONENT_FIELDS}
    option_names = {f.name for f in attrs.fields(component.options)} if component.options is not None else set()
    rest = {k: val for k, val in raw.items() if k not in own}
    if component.origin == BUILTIN and role != "dataset":
        rest = {k: val for k, val in rest.items() if k in option_names or LEGACY_DEFAULTS.get(k, _FAIL) != val}
    unknown = [k for k in rest if k not in option_names]
    for k in unknown:
        takes = f"takes {', '.join(sorted(option_names))}" if option_names else "takes no options"
        problems.append(
            f"{_join(path, k)}: unknown key ({role} {name!r} {takes}; the table's own keys: {', '.join(sorted(own))})"
        )
    options = None
    if component.options is not None:
        options = structure({k: val for k, val in rest.items() if k in option_names}, component.options, path, problems)
    if unknown or options is _FAIL:
        return _FAIL
    return {k: val for k, val in raw.items() if k in own}, {"options": options, "component": component}


def component_registry(entries: Sequence[PluginEntry], registry: PluginRegistry) -> ComponentRegistry:
    """The built-in components and those of every plugin the stack lists (each plugin once)."""
    from vaecore.builtin_components import builtin_registry

    components = ComponentRegistry(builtin_registry().all())
    for name in dict.fromkeys(entry.name for entry in entries):
        components.add(plugin_components(name, registry.load(name)))
    return components


def structure_plugins(raw: Any, registry: PluginRegistry, problems: list[str]) -> list[PluginEntry]:
    """Check each ``[[plugins]]`` entry's name, load its class and structure its options."""
    if not isinstance(raw, list):
        problems.append(f"plugins: expected a list of tables ([[plugins]]), got {raw!r}")
        return []
    entries: list[PluginEntry] = []
    names = [item.get("name") if isinstance(item, dict) else None for item in raw]
    counts = {n: names.count(n) for n in names}
    seen_ids: dict[str, str] = {}
    occurrence: dict[str, int] = {}
    for i, item in enumerate(raw):
        path = f"plugins[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{path}: expected a table with a name, got {item!r}")
            continue
        name = item.get("name")
        if not isinstance(name, str):
            problems.append(f"{path}.name: required (the plugin's name)")
            continue
        if name not in registry:
            problems.append(f"{path}.name: {registry.unknown_message(name)}")
            continue
        try:
            cls = registry.load(name)
        except PluginError as exc:
            problems.append(f"{path}.name: {exc}")
            continue
        occurrence[name] = occurrence.get(name, 0) + 1
        pid = item.get("id")
        if pid is None:
            pid = name if counts[name] == 1 else f"{name}{occurrence[name]}"
        if not isinstance(pid, str) or not is_identifier(pid):
            problems.append(f"{path}.id: must be an identifier (letters, digits, _), got {pid!r}")
            continue
        if pid in seen_ids:
            problems.append(f"{path}.id: {pid!r} is already the id of {seen_ids[pid]}; give each entry its own id")
            continue
        seen_ids[pid] = path
        raw_options = {k: val for k, val in item.items() if k not in ("name", "id")}
        options_cls = getattr(cls, "Options", None)
        if options_cls is None:
            for key in raw_options:
                problems.append(f"{path}.{key}: unknown key (plugin {name!r} takes no options)")
            options = None
        else:
            options = structure(raw_options, options_cls, path, problems)
        if options is not _FAIL:
            entries.append(PluginEntry(name=name, id=pid, options=options))
    return entries


def structure_config(raw: dict[str, Any], registry: PluginRegistry) -> Config:
    """Build a :class:`Config` from a raw dict, raising one ConfigError listing every problem."""
    problems: list[str] = []
    core_raw = {k: val for k, val in raw.items() if k != "plugins"}
    plugins = structure_plugins(raw.get("plugins", []), registry, problems)
    components = None
    try:
        components = component_registry(plugins, registry)
    except PluginError as exc:
        problems.append(f"plugins: {exc}")
    config = structure(core_raw, Config, "", problems, components)
    if problems:
        raise ConfigError(problems)
    config.plugins = plugins
    return config


# reading, overriding, writing --------------------------------------------------------------


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8-sig"))  # a byte-order mark (Windows editors) is fine
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not a text file ({exc.reason})") from exc


def parse_value(text: str) -> Any:
    """A ``--set`` value: any TOML value (``0.5``, ``[1, 2]``, ``true``, ``"x"``), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


UNSET = "null"
"""The ``--set`` value that removes a key, so that its default applies (None for an optional key)."""


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides with dotted paths (``plugins.1.gamma=0.5``) to a raw config;
    ``key=null`` removes the key (TOML has no null), so its default applies."""
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            problems.append(f"--set {item}: expected key=value")
            continue
        parts = key.split(".")
        node: Any = raw
        try:
            for part in parts[:-1]:
                node = _step(node, part, create=True)
            if text.strip() == UNSET:
                if isinstance(node, dict):
                    node.pop(parts[-1], None)
                else:
                    raise TypeError(f"{parts[-1]!r} is a list entry; only table keys can be unset with null")
            else:
                _assign(node, parts[-1], parse_value(text))
        except (KeyError, IndexError, TypeError) as exc:
            problems.append(f"--set {key}: {exc.args[0]}")
    if problems:
        raise ConfigError(problems)
    return raw


def _step(node: Any, part: str, create: bool) -> Any:
    if isinstance(node, list):
        index = _index(node, part)
        return node[index]
    if not isinstance(node, dict):
        raise TypeError(f"{part!r} is inside a value that is not a table")
    if part not in node:
        if part == "plugins":
            raise KeyError("the config has no [[plugins]] entries")
        node[part] = {}
    return node[part]


def _assign(node: Any, part: str, value: Any) -> None:
    if isinstance(node, list):
        node[_index(node, part)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise TypeError(f"{part!r} is inside a value that is not a table")


def _index(node: list, part: str) -> int:
    if not part.isdigit():
        raise KeyError(f"{part!r} must be a list index (0 to {len(node) - 1})")
    index = int(part)
    if index >= len(node):
        raise IndexError(f"index {index} is out of range; the list has {len(node)} entries")
    return index


def load_config(
    path: str | Path | None,
    overrides: Sequence[str] = (),
    registry: PluginRegistry | None = None,
    raw: dict[str, Any] | None = None,
) -> Config:
    """Read a TOML config (or a raw dict), apply ``--set`` overrides and validate everything."""
    data = dict(raw) if raw is not None else read_toml(path) if path is not None else {}
    apply_overrides(data, overrides)
    return structure_config(data, registry if registry is not None else PluginRegistry())


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(val) for k, val in value.items() if val is not None}
    if isinstance(value, list):
        return [_drop_none(item) for item in value]
    return value


def config_to_dict(config: Config) -> dict[str, Any]:
    """The resolved config as plain data (None values left out, as TOML has no null)."""
    out = CONVERTER.unstructure(attrs.evolve(config, plugins=[]))
    out.pop("plugins", None)
    out["plugins"] = [
        {"name": e.name, "id": e.id, **(CONVERTER.unstructure(e.options) if e.options is not None else {})}
        for e in config.plugins
    ]
    return _drop_none(out)


def dump_config(config: Config) -> str:
    """The resolved config as TOML text: enough to reproduce the run."""
    return tomli_w.dumps(config_to_dict(config))
