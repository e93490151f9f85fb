"""The example and reproduction configs parse, with the plugins they name."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaecore.config import load_config
from vaecore.testing import make_registry

HERE = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", ["examples/kjv.toml", "reproduce/kjv.toml"])
def test_config_parses(path):
    registry = make_registry()
    if path.startswith("examples") and "du" not in registry.names():
        pytest.skip("vaecore-du-plugin is not installed")
    config = load_config(HERE / path, [], registry)
    assert config.model.decoder.kind == "lstm" and config.eval.mi_batch_size == 32
    assert "shared" not in str(config.data.path)  # the product names no path of this machine
