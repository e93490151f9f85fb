"""What a run folder records about itself so that it loads anywhere, without its training data.

``run.json`` (the manifest) holds what building the model needs besides the config (the input
shape, the training-set size) and where the run came from (vaecore, plugin, torch and Python
versions, the git commit of the working directory). ``data_sample.npz`` holds a seeded,
label-stratified sample of the test split, which the analysis commands use when the data itself
is gone.
"""

from __future__ import annotations

import datetime
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaecore.config import Config
from vaecore.data import Dataset, Split
from vaecore.errors import CheckpointError
from vaecore.plugin_manager import PluginRegistry

SAMPLE_ROWS = 512
"""Test inputs kept in ``data_sample.npz`` (all of them when the test split is smaller)."""
SAMPLE_SEED = 0


def git_commit(folder: Path | None = None) -> dict[str, Any] | None:
    """The commit checked out in ``folder`` (default: the working directory) and whether the tree
    has uncommitted changes; None outside a git repository or without git."""
    where = str(folder or Path.cwd())
    try:
        head = subprocess.run(
            ["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def manifest(config: Config, dataset: Dataset, registry: PluginRegistry) -> dict[str, Any]:
    """The contents of ``run.json`` for a run of ``config`` on ``dataset``."""
    from vaecore import __version__

    plugins = {}
    for entry in config.plugins:
        info = registry.info(entry.name)
        plugins[entry.name] = {"distribution": info.distribution, "version": info.version}
    return {
        "input_shape": list(dataset.input_shape),
        "n_train": len(dataset.train),
        "rows": {name: len(dataset.split(name)) for name in ("train", "valid", "test")},
        "binary": dataset.binary,
        "data": dataset.name,
        "data_meta": dataset.meta,
        "versions": {
            "vaecore": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "plugins": plugins,
        },
        "git": git_commit(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_manifest(path: Path, content: dict[str, Any]) -> None:
    from vaecore.runs import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(content, indent=1) + "\n").encode())


def read_manifest(path: Path) -> dict[str, Any] | None:
    """``run.json``, or None for a run folder written before it existed."""
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable run manifest ({exc})") from exc
    if not isinstance(content, dict) or "input_shape" not in content or "n_train" not in content:
        raise CheckpointError(f"{path}: not a run manifest (no input_shape and n_train)")
    return content


def write_sample(path: Path, test: Split) -> None:
    """A seeded, label-stratified sample of the test split, with its row indices (compressed;
    binary float inputs stored as uint8, integer inputs such as token ids as int64)."""
    from vaecore.data.splits import draw_rows

    rows = draw_rows(len(test), min(SAMPLE_ROWS, len(test)), SAMPLE_SEED, test.y)
    x = test.inputs(rows).numpy()
    if x.dtype.kind in "iu":
        stored = x.astype(np.int64)
    else:
        stored = x.astype(np.uint8) if bool(((x == 0) | (x == 1)).all()) else x
    arrays: dict[str, np.ndarray] = {"x": stored, "rows": rows.numpy()}
    if test.y is not None:
        arrays["y"] = test.y[rows].numpy()
    part = path.with_name(path.name + ".part.npz")
    np.savez_compressed(part, **arrays)  # type: ignore[arg-type]
    part.replace(path)


def read_sample(path: Path, name: str, binary: bool, meta: dict[str, Any] | None = None) -> Dataset:
    """The stored test sample as a dataset whose three splits are that sample (int64 inputs stay
    integers; the others are float32), with the run's data metadata ``meta``."""
    with np.load(path, allow_pickle=False) as archive:
        stored = archive["x"]
        x = torch.from_numpy(stored if stored.dtype == np.int64 else stored.astype(np.float32))
        y = torch.from_numpy(archive["y"].astype(np.int64)) if "y" in archive.files else None
    split = Split(x, y)
    return Dataset(name=name, train=split, valid=split, test=split, binary=binary, meta=dict(meta or {}))
