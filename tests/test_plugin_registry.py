"""Discovery through real entry points in throwaway installed distributions."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from vaecore import PluginError, PluginRegistry
from vaecore.cli import main
from vaecore.testing import load, make_model, tiny_config

GOOD = """
    import attrs
    from vaecore import HOOK_API_VERSION, hookimpl

    @attrs.define(kw_only=True)
    class Options:
        factor: float = 2.0

    class Doubler:
        api_version = HOOK_API_VERSION
        Options = Options

        def __init__(self, options):
            self.options = options

        @hookimpl
        def latent_map(self, y):
            return y * self.options.factor
"""

BROKEN = """
    import not_a_real_module_anywhere
"""

OLD = """
    from vaecore import hookimpl

    class Old:
        api_version = 0

        @hookimpl
        def latent_map(self, y):
            return y
"""


def install_fake_distribution(root, dist: str, version: str, module: str, source: str, entry: str) -> None:
    """Write a module and a .dist-info with an entry point, as pip would, under ``root``."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[vaecore.plugins]\n{entry}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    install_fake_distribution(
        root, "vaecore-doubler-plugin", "1.2.3", "fake_doubler", GOOD, "doubler = fake_doubler:Doubler"
    )
    install_fake_distribution(
        root, "vaecore-broken-plugin", "0.0.1", "fake_broken", BROKEN, "broken = fake_broken:Broken"
    )
    install_fake_distribution(root, "vaecore-old-plugin", "0.9", "fake_old", OLD, "old = fake_old:Old")
    monkeypatch.syspath_prepend(str(root))
    for module in ("fake_doubler", "fake_broken", "fake_old"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    return root


def test_lists_installed_plugins_without_importing_them(site):
    registry = PluginRegistry()
    assert {"doubler", "broken", "old"} <= set(registry.names())
    info = registry.info("doubler")
    assert (info.distribution, info.version, info.target) == ("vaecore-doubler-plugin", "1.2.3", "fake_doubler:Doubler")
    assert "fake_doubler" not in sys.modules and "fake_broken" not in sys.modules


def test_only_named_plugins_are_imported(site, tiny_data):
    raw = tiny_config([{"name": "doubler", "factor": 3.0}])
    model = make_model(raw, tiny_data, PluginRegistry())
    assert "fake_doubler" in sys.modules and "fake_broken" not in sys.modules
    y = model.latent_map(model.prior.sample(2), model.context())
    assert y.shape == (2, 4)


def test_broken_plugin_is_named_and_others_still_load(site):
    registry = PluginRegistry()
    with pytest.raises(PluginError) as err:
        registry.load("broken")
    assert "plugin 'broken' (vaecore-broken-plugin 0.0.1) failed to import fake_broken:Broken" in str(err.value)
    assert "not_a_real_module_anywhere" in str(err.value)
    assert registry.load("doubler").__name__ == "Doubler"


def test_other_hook_api_version_is_refused(site):
    with pytest.raises(
        PluginError,
        match=r"plugin 'old' \(vaecore-old-plugin 0.9\) targets hook API version 0; this vaecore provides "
        r"versions 1 to 2",
    ):
        PluginRegistry().load("old")


def test_a_plugin_written_for_api_version_1_loads_and_trains():
    """Every hook is optional: a version-1 plugin (no kl_weight, no new ModelInfo fields) works."""
    from vaecore import hookimpl
    from vaecore.hookspecs import HOOK_API_VERSION, MIN_HOOK_API_VERSION
    from vaecore.testing import make_registry, synthetic_dataset, train_steps

    class VersionOne:
        api_version = 1

        @hookimpl
        def latent_map(self, y):
            return 2 * y

    assert MIN_HOOK_API_VERSION == 1 < HOOK_API_VERSION
    registry = make_registry({"v1": VersionOne}, entry_points=False)
    result = train_steps([{"name": "v1"}], synthetic_dataset(n=64), steps=2, registry=registry)
    assert result.model.stack.ids[0] == "v1"

    class FromTheFuture(VersionOne):
        api_version = HOOK_API_VERSION + 1

    with pytest.raises(PluginError, match=r"targets hook API version 3; .* \(upgrade vaecore\)"):
        make_registry({"future": FromTheFuture}, entry_points=False).load("future")


def test_config_reports_broken_and_unknown_plugins_together(site):
    raw = tiny_config([{"name": "broken"}, {"name": "nope"}, {"name": "doubler", "factor": "x"}])
    with pytest.raises(Exception) as err:
        load(raw, PluginRegistry())
    text = str(err.value)
    assert "3 problems" in text
    assert "plugins[0].name: plugin 'broken' (vaecore-broken-plugin 0.0.1) failed to import" in text
    assert "plugins[1].name: unknown plugin 'nope'; installed plugins: " in text and "doubler" in text
    assert "pip install vaecore-nope-plugin" in text
    assert "plugins[2].factor: expected a number, got 'x'" in text


def test_plugins_command_shows_distribution_hooks_and_status(site, capsys):
    assert main(["plugins", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["doubler"]["distribution"] == "vaecore-doubler-plugin"
    assert rows["doubler"]["version"] == "1.2.3"
    assert rows["doubler"]["hooks"] == ["latent_map"] and rows["doubler"]["status"] == "ok"
    assert rows["broken"]["status"].startswith("error: plugin 'broken' (vaecore-broken-plugin 0.0.1) failed to import")
    assert "targets hook API version 0" in rows["old"]["status"]
    assert main(["plugins"]) == 0
    table = capsys.readouterr().out
    assert "doubler" in table and "vaecore-doubler-plugin" in table and "latent_map" in table


def test_plugins_options_prints_type_default_and_doc(site, capsys):
    assert main(["plugins", "--options", "doubler", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"name": "factor", "type": "float", "default": "2.0", "doc": ""}]
    assert main(["plugins", "--options", "nope"]) == 3
    assert "unknown plugin 'nope'" in capsys.readouterr().err
