"""Where ``vaecore sweep`` runs its grid points: ``local`` processes (the default), Slurm jobs
through submitit, or Ray tasks. Each launcher is a module with a :class:`~vaecore.launchers.base.Launcher`
subclass and an attrs class of its ``[launcher]`` options; :func:`make_launcher` picks one from the
config's ``[launcher]`` table (or ``--launcher``), checks that its engine's package is installed
and validates its options, each problem in one line with its path.
"""

from __future__ import annotations

import importlib
from typing import Any

from vaecore.errors import ConfigError
from vaecore.launchers.base import Launcher

LAUNCHERS: dict[str, tuple[str, str | None, str]] = {
    "local": ("vaecore.launchers.local", None, ""),
    "slurm": ("vaecore.launchers.slurm", "submitit", "slurm"),
    "ray": ("vaecore.launchers.ray", "ray", "ray"),
}
"""Each launcher's module, the package its engine needs (None: none) and the vaecore extra that
installs it."""


def require(kind: str, where: str) -> None:
    """Refuse, in one line naming ``where`` it was asked for, a launcher whose package is missing."""
    _, package, extra = LAUNCHERS[kind]
    if package is None:
        return
    try:
        importlib.import_module(package)
    except ImportError as exc:
        raise ConfigError(
            f"{where}: the {kind} launcher needs the package {package!r}, which is not installed "
            f"({exc}); install it with: pip install 'vaecore[{extra}]'"
        ) from None


def launcher_class(kind: str) -> type[Launcher]:
    """The launcher class of ``kind`` (its module imports without the engine's package)."""
    module = importlib.import_module(LAUNCHERS[kind][0])
    return module.LAUNCHER


def make_launcher(table: dict[str, Any] | None, kind: str | None = None, jobs: int | None = None) -> Launcher:
    """The launcher a sweep asks for: ``kind`` (``--launcher``) over ``table["kind"]`` (the
    config's ``[launcher]``; default ``local``), with the table's other keys as its options;
    ``jobs`` (``--jobs``) is the local launcher's ``jobs``. Raises ConfigError naming the flag or
    the ``launcher.*`` key that is wrong."""
    raw = dict(table or {})
    chosen = kind if kind is not None else raw.get("kind", "local")
    where = f"--launcher {chosen}" if kind is not None else "launcher.kind"
    if raw.get("kind", chosen) != chosen:  # --launcher replaces the table's choice and its options
        raw = {}
    raw.pop("kind", None)
    if not isinstance(chosen, str) or chosen not in LAUNCHERS:
        raise ConfigError(f"{where}: unknown launcher {chosen!r}; choose one of: {', '.join(LAUNCHERS)}")
    if jobs is not None:
        if chosen != "local":
            raise ConfigError(
                f"--jobs: only the local launcher runs a number of jobs at a time; the {chosen} launcher "
                f"runs as many as its resources allow (see its options in [launcher])"
            )
        raw["jobs"] = jobs
    require(chosen, where)
    cls = launcher_class(chosen)
    from vaecore.config import structure

    problems: list[str] = []
    options = structure(raw, cls.options_class, "launcher", problems)
    if problems:
        raise ConfigError(problems)
    return cls(options)


__all__ = ["LAUNCHERS", "Launcher", "launcher_class", "make_launcher", "require"]
