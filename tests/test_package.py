"""The package surface: every public name resolves, the hook markers import without torch or the
trainer, and ``python -m vaecore`` is the ``vaecore`` command."""

from __future__ import annotations

import subprocess
import sys

import vaecore


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)


def test_every_public_name_resolves():
    for name in vaecore.__all__:
        assert getattr(vaecore, name) is not None, name
    assert sorted(dir(vaecore)) == sorted(vaecore.__all__)
    assert vaecore.Trainer is __import__("vaecore.trainer", fromlist=["Trainer"]).Trainer


def test_hook_markers_import_without_torch_or_the_trainer():
    done = python(
        "import sys; from vaecore import hookimpl, hookspec, HOOK_API_VERSION, ConfigError; "
        "print(sorted(m for m in ('torch', 'vaecore.trainer', 'vaecore.model') if m in sys.modules))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_an_unknown_name_is_an_attribute_error():
    done = python("import vaecore; vaecore.Trainr")
    assert "AttributeError: module 'vaecore' has no attribute 'Trainr'" in done.stderr


def test_python_dash_m_is_the_command():
    done = subprocess.run(
        [sys.executable, "-m", "vaecore", "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert vaecore.__version__ in done.stdout
