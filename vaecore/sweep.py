"""``vaecore sweep``: a grid over config keys, run as parallel ``vaecore train`` processes and
gathered into one table.

Each grid point is a run folder ``OUT/<key>-<value>__<key>-<value>/`` trained by
``python -m vaecore.cli train CONFIG --out RUN --set key=value ...``; its output goes to
``OUT/logs/<run>.log``. A run whose ``eval.json`` exists is skipped when the sweep is run again;
a run interrupted after a checkpoint is resumed. The table, one row per grid point, is written to
``OUT/results.md`` and ``OUT/results.csv`` with the columns::

    run, <each swept key, in --grid order>, status, epoch, <every scalar metric of eval.json>

``status`` is ``done`` (trained now), ``skipped`` (finished before) or ``failed`` (see its log).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs

from vaecore.errors import ConfigError
from vaecore.plugin_manager import PluginRegistry

FIRST_COLUMNS = ("run",)
STATUS_COLUMNS = ("status", "epoch")
HIDDEN_KEYS = ("split", "checkpoint", "epoch")
"""eval.json keys not repeated as metric columns (``epoch`` has its own column)."""


@attrs.frozen
class RunSpec:
    """One grid point: its folder name and the ``key=value`` overrides that define it."""

    name: str
    values: tuple[tuple[str, str], ...]

    @property
    def overrides(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.values]


@attrs.frozen
class SweepResult:
    rows: list[dict[str, Any]]
    columns: list[str]
    markdown: Path
    csv: Path

    @property
    def failed(self) -> list[str]:
        return [r["run"] for r in self.rows if r["status"] == "failed"]


def split_values(text: str) -> list[str]:
    """Split ``v1,v2,...`` at top-level commas (``[1, 2],[3]`` is two values)."""
    values: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    values.append("".join(current).strip())
    return values


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["train.lr=1e-3,3e-4", ...]`` -> ``[("train.lr", ["1e-3", "3e-4"]), ...]``; all problems at once."""
    grid: list[tuple[str, list[str]]] = []
    problems = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--grid {item}: expected key=v1,v2,...")
            continue
        values = split_values(text)
        if any(not v for v in values):
            problems.append(f"--grid {key}: empty value in {text!r}")
            continue
        if len(set(values)) != len(values):
            problems.append(f"--grid {key}: a value is listed twice in {text!r}")
            continue
        if key in [k for k, _ in grid]:
            problems.append(f"--grid {key}: given twice; list all its values in one --grid")
            continue
        grid.append((key, values))
    if not grid and not problems:
        problems.append("--grid: give at least one key=v1,v2,...")
    if problems:
        raise ConfigError(problems)
    return grid


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "_"


def expand(grid: Sequence[tuple[str, Sequence[str]]]) -> list[RunSpec]:
    """Every combination of the grid's values, the first key varying slowest."""
    keys = [k for k, _ in grid]
    specs = []
    for combo in itertools.product(*(values for _, values in grid)):
        pairs = tuple(zip(keys, combo))
        name = "__".join(f"{_slug(k)}-{_slug(v)}" for k, v in pairs)
        specs.append(RunSpec(name=name, values=pairs))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(["--grid: two grid points map to the same run folder name; use distinct values"])
    return specs


def check_configs(config: Path, specs: Sequence[RunSpec], overrides: Sequence[str]) -> None:
    """Validate every grid point's config before starting any process (all problems at once)."""
    from vaecore.config import load_config

    registry = PluginRegistry()
    problems: list[str] = []
    for spec in specs:
        try:
            load_config(config, [*overrides, *spec.overrides], registry)
        except ConfigError as exc:
            problems += [f"{spec.name}: {p}" for p in exc.problems]
    if problems:
        raise ConfigError(problems)


def train_command(config: Path, run_dir: Path, overrides: Sequence[str], resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "vaecore.cli", "train", str(config), "--out", str(run_dir)]
    if resume:
        cmd.append("--resume")
    for item in overrides:
        cmd += ["--set", item]
    return cmd


def _run_one(config: Path, out: Path, spec: RunSpec, overrides: Sequence[str], env: dict[str, str]) -> str:
    run_dir = out / spec.name
    if (run_dir / "eval.json").is_file():
        return "skipped"
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    if not resume:  # nothing checkpointed: a half-created folder would block a fresh start
        for leftover in ("config.toml", "metrics.jsonl"):
            (run_dir / leftover).unlink(missing_ok=True)
    log = out / "logs" / f"{spec.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = train_command(config, run_dir, [*overrides, "train.progress=false", *spec.overrides], resume)
    with open(log, "w", encoding="utf-8") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, check=False).returncode
    return "done" if code == 0 and (run_dir / "eval.json").is_file() else "failed"


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None


def gather(out: Path, grid: Sequence[tuple[str, Sequence[str]]], statuses: dict[str, str]) -> SweepResult:
    """One row per grid point from ``OUT/<run>/eval.json``; writes results.md and results.csv."""
    keys = [k for k, _ in grid]
    rows: list[dict[str, Any]] = []
    metric_columns: list[str] = []
    for spec in expand(grid):
        row: dict[str, Any] = {"run": spec.name, **dict(spec.values)}
        row["status"] = statuses.get(spec.name, "missing")
        path = out / spec.name / "eval.json"
        results = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        if results and row["status"] == "missing":
            row["status"] = "skipped"
        row["epoch"] = results.get("epoch", "")
        for name, value in results.items():
            if name in HIDDEN_KEYS or not _scalar(value):
                continue
            if name not in metric_columns:
                metric_columns.append(name)
            row[name] = value
        rows.append(row)
    columns = [*FIRST_COLUMNS, *keys, *STATUS_COLUMNS, *metric_columns]
    md, csv_path = out / "results.md", out / "results.csv"
    md.write_text(to_markdown(rows, columns), encoding="utf-8")
    csv_path.write_text(to_csv(rows, columns), encoding="utf-8")
    return SweepResult(rows=rows, columns=columns, markdown=md, csv=csv_path)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    return "" if value is None else str(value)


def to_markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c, "")).replace("|", "\\|") for c in columns) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return buffer.getvalue()


def run_sweep(
    config: str | Path,
    grid_items: Sequence[str],
    jobs: int = 1,
    out: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> SweepResult:
    """Run every grid point (``jobs`` at a time), skip finished ones, and gather the table."""
    config = Path(config)
    if jobs < 1:
        raise ConfigError([f"--jobs: must be >= 1, got {jobs}"])
    grid = parse_grid(grid_items)
    specs = expand(grid)
    check_configs(config, specs, overrides)
    out = Path(out) if out is not None else Path("sweeps") / config.stem
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(
        json.dumps(
            {
                "config": str(config),
                "grid": dict(grid),
                "overrides": list(overrides),
                "runs": {s.name: s.overrides for s in specs},
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:  # share the cores between the parallel runs
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {s.name: pool.submit(_run_one, config, out, s, overrides, env) for s in specs}
        statuses = {name: f.result() for name, f in futures.items()}
    return gather(out, grid, statuses)
