"""``vaecore new-plugin``: the generated distribution installs, is listed, passes its own tests
(which run the conformance suite) and trains in a stack with ``ne``.

The plugin is installed editable into a fresh virtual environment layered on this test session's
own: a ``.pth`` file adds the session's site-packages (vaecore, the installed plugins, pytest),
never the base interpreter's, while the session itself never sees the generated plugin. pip builds
the plugin in its own isolated build environment, with the setuptools its pyproject.toml asks for.
"""

from __future__ import annotations

import json
import math
import site
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import tomllib

from vaecore.cli import main
from vaecore.plugin_manager import PluginRegistry
from vaecore.scaffold import class_name, new_plugin
from vaecore.testing import synthetic_dataset, tiny_config, write_config, write_npz

NAME = "kitdemo"


def run(cmd: list[str], cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


# the generator ------------------------------------------------------------------------------


def test_writes_a_complete_distribution(tmp_path):
    dest = new_plugin("my_method", tmp_path)
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "examples/my_method.toml",
        "pyproject.toml",
        "tests/conftest.py",
        "tests/test_my_method.py",
        "vaecore_my_method/__init__.py",
        "vaecore_my_method/plugin.py",
    ]
    project = tomllib.loads((dest / "pyproject.toml").read_text())
    assert project["project"]["name"] == "vaecore-my_method-plugin"
    assert project["project"]["entry-points"]["vaecore.plugins"] == {"my_method": "vaecore_my_method:MyMethodPlugin"}
    assert any(dep.startswith("vaecore>=") for dep in project["project"]["dependencies"])
    for path in dest.rglob("*"):
        if path.is_file():
            assert "{{" not in path.read_text(), path
            if path.suffix == ".py":
                compile(path.read_text(), str(path), "exec")
    example = tomllib.loads((dest / "examples" / "my_method.toml").read_text())
    assert example["plugins"] == [{"name": "my_method", "weight": 0.01, "norm": "l2"}]


def test_class_names():
    assert class_name("ne") == "NePlugin"
    assert class_name("my_method") == "MyMethodPlugin"
    assert class_name("vr2") == "Vr2Plugin"


@pytest.mark.parametrize("name", ["My-Plugin", "class", "_hidden", "Upper", "1abc"])
def test_bad_names_are_refused(name, tmp_path, capsys):
    assert main(["new-plugin", name, "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vaecore: error: plugin name") and "lowercase Python identifier" in err
    assert not any(tmp_path.iterdir())


def test_a_non_empty_folder_is_refused(tmp_path, capsys):
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / "keep.txt").write_text("mine")
    assert main(["new-plugin", NAME, "--dir", str(tmp_path)]) == 1
    assert "already exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / NAME).iterdir()] == ["keep.txt"]


def test_an_installed_name_is_refused(tmp_path, capsys):
    installed = [n for n in PluginRegistry().names() if n.isidentifier() and n not in ("as", "if", "in")]
    if not installed:
        pytest.skip("no plugin installed")
    assert main(["new-plugin", installed[0], "--dir", str(tmp_path)]) == 1
    assert "is already installed" in capsys.readouterr().err


# acceptance: install, list, test, stack ------------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The generated plugin installed editable into a venv that sees this session's packages."""
    root = tmp_path_factory.mktemp("new_plugin")
    assert main(["new-plugin", NAME, "--dir", str(root)]) == 0
    venv = root / "venv"
    made = run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    venv_site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    # addsitedir (not a bare path) so that the session's own .pth files (editable installs) apply too
    layered = "".join(f"import site; site.addsitedir({d!r})\n" for d in site.getsitepackages())
    (Path(venv_site) / "_session_site.pth").write_text(layered)
    pip = run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "-e",
            str(root / NAME),
        ]
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return root, python


def test_appears_in_vaecore_plugins(installed):
    _, python = installed
    listed = run([str(python), "-m", "vaecore.cli", "plugins", "--json"])
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows[NAME]["distribution"] == f"vaecore-{NAME}-plugin"
    assert rows[NAME]["hooks"] == ["extra_loss"]
    assert rows[NAME]["status"] == "ok"
    assert NAME not in PluginRegistry().names(), "the test's own environment must not see the generated plugin"


def test_passes_its_own_tests_and_the_conformance_suite(installed):
    root, python = installed
    report = root / "junit.xml"
    result = run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}"], cwd=root / NAME)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    cases = ET.parse(report).getroot().iter("testcase")
    outcome = {}
    for case in cases:
        status = (
            "skipped"
            if case.find("skipped") is not None
            else "failed"
            if (case.find("failure") is not None or case.find("error") is not None)
            else "passed"
        )
        outcome[f"{case.get('classname').split('.')[-1]}::{case.get('name')}"] = status
    conformance = {k: v for k, v in outcome.items() if k.startswith("TestConformance::")}
    for test in (
        "registers_with_no_pending_hooks",
        "options_round_trip_through_the_config",
        "bad_options_are_refused_with_their_path",
        "hooks_keep_shapes_and_gradients",
        "state_survives_a_checkpoint_round_trip",
        "deterministic_under_a_seed",
        "composes_with_itself",
    ):
        assert conformance[f"TestConformance::test_{test}"] == "passed", test
    if "ne" in PluginRegistry():
        assert conformance["TestConformance::test_composes_with_installed_plugins[ne]"] == "passed"
    assert outcome["test_kitdemo::test_the_penalty_shrinks_the_code"] == "passed"


def test_trains_in_a_stack_with_ne(installed):
    if "ne" not in PluginRegistry():
        pytest.skip("the ne plugin is not installed")
    root, python = installed
    data = write_npz(synthetic_dataset(n=128, dim=16), root / "tiny.npz")
    stack = [{"name": NAME, "weight": 0.5}, {"name": "ne", "weight": 1.0}]
    raw = tiny_config(stack, data={"name": "npz", "path": data}, eval={"nll_samples": 5, "probes": False})
    config = write_config(root / "stack.toml", raw)
    out = root / "run"
    trained = run([str(python), "-m", "vaecore.cli", "train", str(config), "--out", str(out)])
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        for split in ("train", "valid"):
            # the loss is the negative ELBO plus each plugin's weighted term (KL weight 1: no warm-up)
            expected = -r[f"{split}.elbo"] + 0.5 * r[f"{split}.{NAME}.penalty"] + 1.0 * r[f"{split}.ne.reencode"]
            assert math.isclose(r[f"{split}.loss"], expected, rel_tol=1e-5, abs_tol=1e-5)
    assert json.loads((out / "eval.json").read_text())["epoch"] in (1, 2)
