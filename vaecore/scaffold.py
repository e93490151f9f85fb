"""``vaecore new-plugin``: write a complete, installable plugin distribution from the template.

The template (``vaecore/templates/plugin/``, package data) gives a ``pyproject.toml`` with the
entry point, a package with an ``Options`` class and one hook, tests that run the conformance
suite, an example config and a README. The result passes its own tests right after
``pip install -e``.
"""

from __future__ import annotations

import keyword
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from vaecore import __version__
from vaecore.errors import VaecoreError

TEMPLATE = "plugin"
SUFFIX = ".tmpl"


class ScaffoldError(VaecoreError):
    """A plugin cannot be written (bad name, folder not empty)."""


def check_name(name: str) -> None:
    """A plugin name is a lowercase identifier: it is the entry point, the ``[[plugins]]`` name
    and part of the package name ``vaecore_<name>``."""
    if not name.isidentifier() or keyword.iskeyword(name) or name != name.lower() or name.startswith("_"):
        raise ScaffoldError(
            f"plugin name {name!r}: must be a lowercase Python identifier (letters, digits, _), "
            "not a keyword and not starting with _, e.g. 'my_method'"
        )


def class_name(name: str) -> str:
    """``my_method`` -> ``MyMethodPlugin``."""
    return "".join(part.capitalize() for part in name.split("_") if part) + "Plugin"


def _target(rel: str, name: str) -> str:
    rel = rel.removesuffix(SUFFIX)
    parts = rel.split("/")
    if parts[0] == "package":
        parts[0] = f"vaecore_{name}"
    if parts == ["tests", "test_plugin.py"]:
        parts = ["tests", f"test_{name}.py"]
    if parts == ["examples", "plugin.toml"]:
        parts = ["examples", f"{name}.toml"]
    return "/".join(parts)


def _walk(node: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    files = []
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        rel = f"{prefix}{child.name}"
        if child.is_dir():
            files += _walk(child, rel + "/")
        elif child.name.endswith(SUFFIX):
            files.append((rel, child))
    return files


def render(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        start = text.index("{{")
        raise ScaffoldError(f"template placeholder left unfilled: {text[start : start + 30]!r}")
    return text


def new_plugin(name: str, parent: str | Path = ".") -> Path:
    """Write the distribution ``vaecore-<name>-plugin`` into ``parent/<name>`` and return that folder."""
    check_name(name)
    dest = Path(parent) / name
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ScaffoldError(f"{dest} already exists and is not empty; choose another name or --dir")
    version = ".".join(__version__.split(".")[:2])
    values = {
        "name": name,
        "Class": class_name(name),
        "title": name.replace("_", " ").title().replace(" ", "-"),
        "vaecore_version": version,
    }
    files = _walk(resources.files("vaecore.templates") / TEMPLATE)
    if not files:
        raise ScaffoldError("the plugin template is missing from this vaecore installation; reinstall vaecore")
    for rel, source in files:
        path = dest / _target(rel, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(source.read_text(encoding="utf-8"), values), encoding="utf-8")
    return dest
