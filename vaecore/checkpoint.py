"""Checkpoints: written atomically, read with ``weights_only=True``, refused when foreign."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from vaecore.errors import CheckpointError
from vaecore.runs import atomic_write_bytes

FORMAT = "vaecore-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors and plain data only) to ``path`` via a temporary file and a rename.

    The state is serialised in memory first, then written to ``.NAME.tmp``, flushed and renamed
    over ``path``: when any of it fails (disk full, a read-only folder, Ctrl-C) ``path`` keeps its
    previous content and no temporary file is left behind (:func:`~vaecore.runs.atomic_write_bytes`)."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load a vaecore checkpoint safely; anything else (corrupt, foreign, newer) is refused."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{p}: not a readable checkpoint (corrupt, or not written by vaecore): {first}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a vaecore checkpoint")
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: checkpoint format version {state.get('format_version')}; this vaecore reads version {FORMAT_VERSION}"
        )
    return state
