"""Every hook spec is documented in docs/hooks.md and exercised by a test (as datasette does)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import vaecore.hookspecs as hs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name in dir(hs) if hasattr(getattr(hs, name), "vaecore_spec"))


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    text = (ROOT / "docs" / "hooks.md").read_text()
    assert f"## `{hook}`" in text, f"docs/hooks.md has no section for {hook}"
    assert (getattr(hs, hook).__doc__ or "").strip(), f"hookspec {hook} has no docstring"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test_implementation(hook):
    source = "".join((ROOT / "tests" / name).read_text() for name in ("recording_plugins.py", "component_plugin.py"))
    assert re.search(rf"@(vaecore\.)?hookimpl(\(.*\))?\n\s+def {hook}\(", source), f"no test plugin implements {hook}"


def _generator():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_pages", ROOT / "docs" / "gen_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("page", ["hooks.md", "config.md", "cli.md"])
def test_generated_page_is_up_to_date(page):
    """The reference pages are generated from the code: regenerate with `python docs/gen_pages.py`."""
    expected = _generator().PAGES[page]()
    actual = (ROOT / "docs" / page).read_text()
    assert actual == expected, f"docs/{page} is out of date: run `python docs/gen_pages.py`"


def test_every_hook_has_a_row_in_the_timing_table():
    assert set(_generator().WHEN) == set(HOOKS)


def test_config_reference_lists_every_key():
    import attrs

    from vaecore.builtin_components import builtin_registry
    from vaecore.config import COMPONENT_FIELDS, ComponentConfig, Config

    text = (ROOT / "docs" / "config.md").read_text()

    def walk(cls, section):
        attrs.resolve_types(cls)
        for f in attrs.fields(cls):
            if issubclass(cls, ComponentConfig) and f.name in COMPONENT_FIELDS:
                continue
            if attrs.has(f.type):
                yield from walk(f.type, f"{section}.{f.name}" if section else f.name)
            elif section:
                yield section, f.name

    for section, key in walk(Config, ""):
        body = text.split(f"## `[{section}]`", 1)[1].split("\n## ", 1)[0]
        assert f"| `{key}` |" in body, f"docs/config.md: [{section}] lacks {key}"
    # every built-in component is listed under its table, with each of its options
    sections = {
        "encoder": "model.encoder",
        "decoder": "model.decoder",
        "likelihood": "model.likelihood",
        "dataset": "data",
    }
    for component in builtin_registry().all():
        section = sections[component.role]
        assert f"* `{component.name}`: " in text.split(f"## `[{section}]`", 1)[1].split("\n## ", 1)[0]
        if component.options is not None:
            body = text.split(f'### `[{section}]` {"name" if section == "data" else "kind"} = "{component.name}"', 1)[1]
            for f in attrs.fields(component.options):
                assert f"| `{f.name}` |" in body.split("\n## ", 1)[0].split("\n### ", 1)[0], (component.name, f.name)


def test_cli_reference_lists_every_command():
    from vaecore.cli import COMMANDS

    text = (ROOT / "docs" / "cli.md").read_text()
    for command in COMMANDS:
        assert f"## `vaecore {command}`" in text


def test_method_pages_are_made_from_the_plugin_readmes(tmp_path):
    """The mkdocs hook turns plugins/<x>/README.md into methods/<x>.md with repository links as paths."""
    pytest.importorskip("mkdocs")
    import importlib.util

    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "docs" / "mkdocs_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    readme = tmp_path / "README.md"
    readme.write_text(
        "# vaecore-ne-plugin\n\nSee [the example](examples/a.toml) and [paper](https://x.org).\n"
        "![curve](figs/c.png)\n\n```sh\n# a comment\n```\n"
    )
    page = hooks.method_page("ne", readme)
    assert page.startswith("# NE-VAE")
    assert "\n## vaecore-ne-plugin\n" in page
    assert "the example (`plugins/ne/examples/a.toml`)" in page
    assert "[paper](https://x.org)" in page
    assert "`plugins/ne/figs/c.png`" in page
    assert "\n# a comment\n" in page  # code blocks are left alone
    assert set(hooks.METHODS) == {p.parent.name for p in (ROOT / "plugins").glob("*/pyproject.toml")}
    assert "not written yet" in hooks.method_page("ne", None)
