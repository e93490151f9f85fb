"""Training curves (``vaecore curves RUN...``): the per-epoch terms of ``metrics.jsonl``, several
runs overlaid, one panel per term with its training and validation lines.

A term is named without its split (``elbo`` draws ``train.elbo`` and ``valid.elbo``) or with it
(``valid.elbo`` alone); by default every term a run logged with a ``train.`` or ``valid.`` prefix
is drawn, except those that never change in any run (``train.K``). The x axis is the epoch, the
optimiser step or the training time in seconds (summed ``seconds`` of the records), so that
methods of different speed compare at equal budget.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from vaecore.analysis import figures
from vaecore.analysis.commands import AnalysisResult
from vaecore.errors import VaecoreError
from vaecore.runs import RunDir

SPLITS = ("train", "valid")
AXES = {"epoch": "epoch", "step": "optimiser step", "time": "training time (s)"}


def run_labels(paths: list[Path]) -> list[str]:
    """A short distinct label per run folder: its name, or its path below the folders' common
    parent when two runs share a name (the same grid point of two sweeps)."""
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    resolved = [p.resolve() for p in paths]
    parent = Path(os.path.commonpath(resolved))
    return [str(p.relative_to(parent)) if p != parent else p.name for p in resolved]


def read_records(path: Path) -> list[dict[str, Any]]:
    """The epoch records of a run folder, or one line saying why there are none."""
    run = RunDir(path)
    if not path.is_dir() or not (run.config.is_file() or run.metrics.is_file()):
        raise VaecoreError(f"{path}: not a run folder (no config.toml, no metrics.jsonl)")
    if not run.metrics.is_file():
        raise VaecoreError(f"{run.metrics}: no such file (has the run finished an epoch?)")
    records = run.read_metrics()
    if not records:
        raise VaecoreError(f"{run.metrics}: no epoch records yet")
    return records


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _x_values(records: list[dict[str, Any]], x: str) -> list[float]:
    if x == "time":
        total, xs = 0.0, []
        for record in records:
            total += float(record.get("seconds") or 0.0)
            xs.append(total)
        return xs
    return [float(record.get(x, math.nan)) for record in records]


def logged_terms(records: list[dict[str, Any]]) -> list[str]:
    """The terms of a run's records without their split prefix, in the order first logged."""
    keys = [k for record in records for k in record if k.split(".", 1)[0] in SPLITS and "." in k]
    return list(dict.fromkeys(k.split(".", 1)[1] for k in keys))


def _keys(term: str) -> list[str]:
    """The record keys a term asks for: ``train.X`` and ``valid.X``, or the one key given."""
    return [term] if term.split(".", 1)[0] in SPLITS and "." in term else [f"{split}.{term}" for split in SPLITS]


def _varies(runs: dict[str, list[dict[str, Any]]], term: str) -> bool:
    values = {r[k] for records in runs.values() for r in records for k in _keys(term) if _number(r.get(k))}
    return len(values) > 1


def curves(
    paths: list[str | Path], out: str | Path, terms: list[str] | None = None, x: str = "epoch"
) -> AnalysisResult:
    """Overlay the per-epoch ``terms`` of the runs in ``paths`` (default: every term that changes)
    against ``x`` (``epoch``, ``step`` or ``time``); writes ``curves.png`` into ``out`` and returns
    the plotted series."""
    if x not in AXES:
        raise VaecoreError(f"--x {x}: choose from {', '.join(AXES)}")
    folders, out = [Path(p) for p in paths], Path(out)
    runs = dict(zip(run_labels(folders), (read_records(p) for p in folders)))
    available = list(dict.fromkeys(t for records in runs.values() for t in logged_terms(records)))
    if terms is None:
        chosen = [t for t in available if _varies(runs, t)] or available
    else:
        for term in terms:
            if not any(k in r for records in runs.values() for r in records for k in _keys(term)):
                raise VaecoreError(
                    f"--terms {term}: no run logged it; logged: {', '.join(available) or 'nothing'}"
                    " (with or without a train./valid. prefix)"
                )
        chosen = terms
    series: dict[str, dict[tuple[str, str], tuple[list[float], list[float]]]] = {}
    for term in chosen:
        lines: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
        for label, records in runs.items():
            xs = _x_values(records, x)
            for key in _keys(term):
                points = [(xv, float(r[key])) for xv, r in zip(xs, records) if _number(r.get(key))]
                if points:
                    lines[(label, key.split(".", 1)[0])] = ([p for p, _ in points], [v for _, v in points])
        series[term] = lines
    plot = figures.panels(
        series,
        out / "curves.png",
        f"training curves of {len(runs)} runs" if len(runs) > 1 else f"training curves of run {next(iter(runs))}",
        AXES[x],
    )
    numbers = {
        "runs": {label: str(path.resolve()) for label, path in zip(runs, folders)},
        "x": x,
        "terms": chosen,
        "series": {
            term: {f"{run}/{split}": {"x": xs, "y": ys} for (run, split), (xs, ys) in lines.items()}
            for term, lines in series.items()
        },
    }
    return AnalysisResult(numbers, [plot])
