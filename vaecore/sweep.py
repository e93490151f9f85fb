"""``vaecore sweep``: a grid over config keys (and seeds), run as parallel ``vaecore train``
processes and gathered into one table.

Each grid point is a run folder ``OUT/<key>-<value>__<key>-<value>/`` trained by
``python -m vaecore.cli train CONFIG --out RUN --set key=value ...``; its output goes to
``OUT/logs/<run>.log``. ``--seeds 0,1,2`` is the grid ``train.seed=0,1,2`` swept last.

A run whose ``eval.json`` exists is reused when the sweep is run again, but only when its resolved
config (``RUN/config.toml``) equals the one requested, except for keys in
:data:`~vaecore.trainer.COSMETIC_CHANGES`; a run interrupted after a checkpoint is resumed when
its config differs at most in keys a resumption may change. Any other finished or checkpointed
run is *stale*: the sweep stops before training anything, naming each stale run and the keys that
differ, unless ``retrain_stale`` moves the stale runs to ``OUT/stale/`` and trains them again.

The table, one row per grid point, is written to ``OUT/results.md`` and ``OUT/results.csv`` with
the columns::

    run, <each swept key, in grid order>, status, epoch, <every scalar metric of eval.json>

``status`` is ``done`` (trained now), ``reused`` (finished before, same config) or ``failed`` (see
its log). When ``train.seed`` is swept, runs that differ only in the seed form a configuration,
and one aggregated row per configuration follows the per-run rows: ``run`` is
``<key>-<value>__train.seed-*`` (the glob of its run folders), ``train.seed`` the seeds that
finished, ``status`` ``aggregate``, ``n`` their number, and each numeric metric's mean over them,
with its sample standard deviation (ddof=1) in the column ``<metric>.std`` (empty when n < 2).
A failed seed is left out of the mean and of n. In ``results.md`` the aggregated rows are a second
table with ``mean ± std`` cells.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from vaecore.errors import CheckpointError, ConfigError
from vaecore.plugin_manager import PluginRegistry

if TYPE_CHECKING:
    from vaecore.config import Config

SEED_KEY = "train.seed"
FIRST_COLUMNS = ("run",)
STATUS_COLUMNS = ("status", "epoch")
AGGREGATE_COLUMNS = ("n",)
HIDDEN_KEYS = ("split", "checkpoint", "epoch")
SIZE_COLUMNS = ("split_rows", "train_rows", "train_seconds")
"""The budget of each run, last in the table: rows evaluated, training rows, training wall time (s)."""
"""eval.json keys not repeated as metric columns (``epoch`` has its own column)."""
FINISHED = ("done", "reused")
EXIT_LINE = "vaecore sweep: the training process exited with code "
"""The last line of a grid point's log once its training process has ended."""
STALE_FOLDER = "stale"
STD_NOTE = (
    "mean ± sample standard deviation (ddof=1) over the seeds that finished (`train.seed`: the seeds, "
    "`n`: how many; a failed seed is left out)"
)


@attrs.frozen
class RunSpec:
    """One grid point: its folder name and the ``key=value`` overrides that define it."""

    name: str
    values: tuple[tuple[str, str], ...]

    @property
    def overrides(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.values]

    @property
    def group(self) -> str:
        """The name of its configuration: the run name with the seed as ``*``."""
        return run_name(tuple((k, "*" if k == SEED_KEY else v) for k, v in self.values))


@attrs.frozen
class SweepResult:
    rows: list[dict[str, Any]]
    columns: list[str]
    markdown: Path
    csv: Path
    aggregates: list[dict[str, Any]] = attrs.field(factory=list)
    """One row per configuration when ``train.seed`` is swept (after ``rows`` in results.csv)."""
    aggregate_columns: list[str] = attrs.field(factory=list)
    table: str = ""
    """The content of results.md."""

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


def parse_seeds(text: str) -> list[str]:
    """``"0,1,2"`` -> ``["0", "1", "2"]``: integers, each once."""
    values = split_values(text)
    bad = [v for v in values if not re.fullmatch(r"[+-]?\d+", v)]
    if bad:
        raise ConfigError([f"--seeds: expected integers separated by commas, got {text!r}"])
    if len({int(v) for v in values}) != len(values):
        raise ConfigError([f"--seeds: a seed is listed twice in {text!r}"])
    return values


def parse_grid(items: Sequence[str], seeds: str | None = None) -> list[tuple[str, list[str]]]:
    """``["train.lr=1e-3,3e-4", ...]`` -> ``[("train.lr", ["1e-3", "3e-4"]), ...]``, with
    ``("train.seed", [...])`` last for ``seeds`` (``"0,1,2"``); all problems at once."""
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
    if seeds is not None:
        try:
            seed_values = parse_seeds(seeds)
        except ConfigError as exc:
            problems += exc.problems
        else:
            if SEED_KEY in [k for k, _ in grid]:
                problems.append(f"--seeds: the grid already sweeps {SEED_KEY}; give the seeds once")
            else:
                grid.append((SEED_KEY, seed_values))
    if not grid and not problems:
        problems.append("--grid: give at least one key=v1,v2,... (or --seeds)")
    if problems:
        raise ConfigError(problems)
    return grid


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "_"


def run_name(pairs: Sequence[tuple[str, str]]) -> str:
    return "__".join(f"{_slug(k)}-{'*' if v == '*' else _slug(v)}" for k, v in pairs)


def expand(grid: Sequence[tuple[str, Sequence[str]]]) -> list[RunSpec]:
    """Every combination of the grid's values, the first key varying slowest."""
    keys = [k for k, _ in grid]
    specs = []
    for combo in itertools.product(*(values for _, values in grid)):
        pairs = tuple(zip(keys, combo))
        specs.append(RunSpec(name=run_name(pairs), values=pairs))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(["--grid: two grid points map to the same run folder name; use distinct values"])
    return specs


def check_configs(config: Path, specs: Sequence[RunSpec], overrides: Sequence[str]) -> dict[str, Config]:
    """Validate every grid point's config before starting any process (all problems at once);
    returns each run's resolved config by run name."""
    from vaecore.config import load_config

    registry = PluginRegistry()
    problems: list[str] = []
    configs = {}
    for spec in specs:
        try:
            configs[spec.name] = load_config(config, [*overrides, *spec.overrides], registry)
        except ConfigError as exc:
            problems += [f"{spec.name}: {p}" for p in exc.problems]
    if problems:
        raise ConfigError(problems)
    return configs


def stale_reason(run_dir: Path, config: Config, registry: PluginRegistry | None = None) -> str | None:
    """Why the run in ``run_dir`` cannot be reused or resumed for ``config``; None when it can
    (or when there is nothing to reuse: a fresh start)."""
    from vaecore.config import config_to_dict, load_config
    from vaecore.runs import RunDir
    from vaecore.trainer import COSMETIC_CHANGES, config_differences, config_value, shown_value

    run = RunDir(run_dir)
    finished = run.eval.is_file()
    if not finished and not run.last.is_file():
        return None
    if not run.config.is_file():
        # a checkpoint without config.toml: the trainer checks the checkpoint's own config
        return f"{run.path}: finished, but has no config.toml to compare" if finished else None
    try:
        saved = config_to_dict(load_config(run.config, registry=registry))
    except ConfigError as exc:
        return f"{run.path}: its config.toml is refused by this vaecore: {'; '.join(exc.problems)}"
    wanted = config_to_dict(config)
    if finished:
        diffs = config_differences(saved, wanted, ignore=COSMETIC_CHANGES)
    else:  # interrupted: resumable when only the keys a resumption may change differ
        diffs = config_differences(saved, wanted)
    if not diffs:
        return None
    shown = ", ".join(
        f"{k} ({shown_value(config_value(saved, k))} there, {shown_value(config_value(wanted, k))} now)" for k in diffs
    )
    return f"{run.path}: {'finished' if finished else 'checkpointed'} with another config: {shown}"


def stale_runs(out: Path, specs: Sequence[RunSpec], configs: dict[str, Config]) -> dict[str, str]:
    """Each grid point whose folder holds a run of another config, with the reason."""
    registry = PluginRegistry()
    reasons = {s.name: stale_reason(out / s.name, configs[s.name], registry) for s in specs}
    return {name: reason for name, reason in reasons.items() if reason is not None}


def move_aside(out: Path, name: str) -> Path:
    """Move ``OUT/<name>/`` (and its log) to ``OUT/stale/<name>[.N]/``, never overwriting."""
    target = out / STALE_FOLDER / name
    n = 0
    while target.exists():
        n += 1
        target = out / STALE_FOLDER / f"{name}.{n}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(out / name), str(target))
    log = out / "logs" / f"{name}.log"
    if log.is_file():
        shutil.move(str(log), str(target / "sweep.log"))
    return target


def train_command(config: Path, run_dir: Path, overrides: Sequence[str], resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "vaecore.cli", "train", str(config), "--out", str(run_dir)]
    if resume:
        cmd.append("--resume")
    for item in overrides:
        cmd += ["--set", item]
    return cmd


def run_point(
    config: Path,
    out: Path,
    spec: RunSpec,
    overrides: Sequence[str],
    env: dict[str, str],
    cwd: Path | None = None,
    on_start: Callable[[subprocess.Popen], None] | None = None,
    shield: Sequence[int] = (),
) -> str:
    """Reuse, resume or train one grid point (its config already checked) with every launcher:
    a ``vaecore train`` process started in ``cwd`` writing to ``OUT/logs/<run>.log``, resumed when
    the point has a checkpoint (the log then continues); returns its status (``reused``, ``done``
    or ``failed``). ``on_start`` gets the process as soon as it runs (the local launcher stops it
    on Ctrl-C); the process ignores the signals in ``shield`` (those Slurm sends a job before
    submitit requeues it, so that the job's own process decides)."""
    run_dir = out / spec.name
    if (run_dir / "eval.json").is_file():
        return "reused"
    log = out / "logs" / f"{spec.name}.log"
    try:
        resume = (run_dir / "checkpoints" / "last.pt").is_file()
        if not resume:  # nothing checkpointed: a half-created folder would block a fresh start
            for leftover in ("config.toml", "metrics.jsonl"):
                (run_dir / leftover).unlink(missing_ok=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = train_command(config, run_dir, [*overrides, "train.progress=false", *spec.overrides], resume)
        with open(log, "a" if resume else "w", encoding="utf-8") as fh:
            fh.write(" ".join(cmd) + "\n")
            fh.flush()
            preexec = functools.partial(_ignore, tuple(shield)) if shield else None
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd, preexec_fn=preexec)
            if on_start is not None:
                on_start(proc)
            code = proc.wait()
            fh.write(f"{EXIT_LINE}{code}\n")
    except OSError as exc:  # one point's problem must not stop the others
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"vaecore sweep: error: {exc}\n")
        return "failed"
    return "done" if code == 0 and (run_dir / "eval.json").is_file() else "failed"


def _ignore(signals: tuple[int, ...]) -> None:
    for number in signals:
        signal.signal(number, signal.SIG_IGN)


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None


def _number(value: Any) -> float | None:
    """A metric value as a float for the aggregate (eval.json writes non-finite floats as
    strings); None when it is not numeric."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    return None


def aggregate(
    rows: list[dict[str, Any]], specs: Sequence[RunSpec], keys: Sequence[str], metric_columns: Sequence[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per configuration (the runs that differ only in ``train.seed``): the mean and the
    sample standard deviation of each numeric metric over the seeds that finished."""
    groups: dict[str, list[tuple[RunSpec, dict[str, Any]]]] = {}
    for spec, row in zip(specs, rows):
        groups.setdefault(spec.group, []).append((spec, row))
    aggregated: list[dict[str, Any]] = []
    numeric: set[str] = set()
    for name, members in groups.items():
        first = members[0][0]
        finished = [row for _, row in members if row["status"] in FINISHED]
        out: dict[str, Any] = {"run": name, **{k: v for k, v in first.values if k != SEED_KEY}}
        out[SEED_KEY] = ",".join(str(row[SEED_KEY]) for row in finished)
        out.update(status="aggregate", epoch="", n=len(finished))
        for metric in metric_columns:
            values = [_number(row.get(metric)) for row in finished]
            if not values or any(v is None for v in values):
                continue
            numbers = [v for v in values if v is not None]
            out[metric] = statistics.fmean(numbers)
            out[f"{metric}.std"] = statistics.stdev(numbers) if len(numbers) > 1 else None
            numeric.add(metric)
        aggregated.append(out)
    columns = [*FIRST_COLUMNS, *keys, *STATUS_COLUMNS, *AGGREGATE_COLUMNS]
    for metric in metric_columns:
        columns += [metric, f"{metric}.std"] if metric in numeric else [metric]
    return aggregated, columns


def gather(out: Path, grid: Sequence[tuple[str, Sequence[str]]], statuses: dict[str, str]) -> SweepResult:
    """One row per grid point from ``OUT/<run>/eval.json`` (and one per configuration when
    ``train.seed`` is swept); writes results.md and results.csv."""
    from vaecore.runs import RunDir

    keys = [k for k, _ in grid]
    specs = expand(grid)
    rows: list[dict[str, Any]] = []
    metric_columns: list[str] = []
    for spec in specs:
        row: dict[str, Any] = {"run": spec.name, **dict(spec.values)}
        row["status"] = statuses.get(spec.name, "missing")
        path = out / spec.name / "eval.json"
        try:
            results = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, ValueError):  # unreadable: reported, not a traceback
            results, row["status"] = {}, "failed"
        if results and row["status"] == "missing":
            row["status"] = "reused"
        row["epoch"] = results.get("epoch", "")
        seconds = RunDir(out / spec.name).train_seconds()
        if seconds is not None:
            row["train_seconds"] = seconds
        for name, value in results.items():
            if name in HIDDEN_KEYS or not _scalar(value):
                continue
            if name not in metric_columns:
                metric_columns.append(name)
            row[name] = value
        rows.append(row)
    metric_columns = [c for c in metric_columns if c not in SIZE_COLUMNS]
    metric_columns += [c for c in SIZE_COLUMNS if any(c in row for row in rows)]
    columns = [*FIRST_COLUMNS, *keys, *STATUS_COLUMNS, *metric_columns]
    aggregates: list[dict[str, Any]] = []
    aggregate_columns: list[str] = []
    table = to_markdown(rows, columns)
    csv_text = to_csv(rows, columns)
    if SEED_KEY in keys:
        aggregates, aggregate_columns = aggregate(rows, specs, keys, metric_columns)
        csv_text = to_csv([*rows, *aggregates], aggregate_columns)
        table += (
            "\n" + STD_NOTE + ":\n\n" + to_markdown(aggregates, _mean_std_columns(aggregate_columns), mean_std=True)
        )
    md, csv_path = out / "results.md", out / "results.csv"
    md.write_text(table, encoding="utf-8")
    csv_path.write_text(csv_text, encoding="utf-8")
    return SweepResult(
        rows=rows,
        columns=columns,
        markdown=md,
        csv=csv_path,
        aggregates=aggregates,
        aggregate_columns=aggregate_columns,
        table=table,
    )


def _mean_std_columns(columns: Sequence[str]) -> list[str]:
    """The aggregate's markdown columns: a metric's ``.std`` shares the mean's cell; no status, epoch."""
    return [c for c in columns if c not in STATUS_COLUMNS and not (c.endswith(".std") and c[: -len(".std")] in columns)]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    return "" if value is None else str(value)


def _mean_std_cell(row: dict[str, Any], column: str) -> str:
    mean, std = row.get(column, ""), row.get(f"{column}.std")
    return f"{_cell(mean)} ± {_cell(std)}" if isinstance(std, float) else _cell(mean)


def to_markdown(rows: list[dict[str, Any]], columns: list[str], mean_std: bool = False) -> str:
    """A markdown table; ``mean_std`` writes a metric with a ``<metric>.std`` value as ``mean ± std``."""
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    for row in rows:
        cells = [_mean_std_cell(row, c) if mean_std else _cell(row.get(c, "")) for c in columns]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return buffer.getvalue()


def _sweep_folder(out: Path) -> None:
    """Create the sweep folder, or say in one line why it cannot be."""
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out {out}: is a file, not a folder; give a folder for the sweep")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"--out {out}: cannot create the sweep folder: {exc.strerror or exc}") from exc


def run_sweep(
    config: str | Path,
    grid_items: Sequence[str],
    jobs: int | None = None,
    out: str | Path | None = None,
    overrides: Sequence[str] = (),
    seeds: str | None = None,
    retrain_stale: bool = False,
    launcher: str | None = None,
) -> SweepResult:
    """Run every grid point, reuse finished ones of the same config, and gather the table.
    ``launcher`` (``local``, ``slurm``, ``ray``; default: the config's ``[launcher] kind``, else
    ``local``) says where the points run, ``jobs`` how many at a time for ``local`` (default 1).
    ``seeds`` (``"0,1,2"``) sweeps ``train.seed`` last. A finished or checkpointed run of another
    config stops the sweep before anything trains, unless ``retrain_stale`` moves it to
    ``OUT/stale/`` and trains the point again."""
    from vaecore.launchers import make_launcher
    from vaecore.launchers.base import PointJob

    config = Path(config)
    if jobs is not None and jobs < 1:
        raise ConfigError([f"--jobs: must be >= 1, got {jobs}"])
    grid = parse_grid(grid_items, seeds)
    if SEED_KEY in dict(grid) and (fixed := [o for o in overrides if o.partition("=")[0].strip() == SEED_KEY]):
        raise ConfigError([f"--set {fixed[0]}: {SEED_KEY} is swept; drop the --set or the seeds"])
    if swept := [k for k, _ in grid if k.split(".")[0] == "launcher"]:
        raise ConfigError([f"--grid {swept[0]}: the launcher is the same for the whole sweep; use --set"])
    specs = expand(grid)
    configs = check_configs(config, specs, overrides)
    chosen = make_launcher(configs[specs[0].name].launcher, launcher, jobs)
    out = Path(out) if out is not None else Path("sweeps") / config.stem
    _sweep_folder(out)
    stale = stale_runs(out, specs, configs)
    if stale and not retrain_stale:
        lines = "\n".join(f"  {reason}" for reason in stale.values())
        raise CheckpointError(
            f"{len(stale)} run(s) in {out} hold another config than this sweep asks for:\n{lines}\n"
            f"give --out a new folder for this sweep, or pass --retrain-stale to move these runs to "
            f"{out / STALE_FOLDER} and train them again"
        )
    for name in stale:
        move_aside(out, name)
    (out / "sweep.json").write_text(
        json.dumps(
            {
                "config": str(config),
                "grid": dict(grid),
                "seeds": dict(grid).get(SEED_KEY),
                "overrides": list(overrides),
                "launcher": chosen.kind,
                "runs": {s.name: s.overrides for s in specs},
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    statuses = {s.name: "reused" for s in specs if (out / s.name / "eval.json").is_file()}
    todo = [s for s in specs if s.name not in statuses]
    env = {}
    if "OMP_NUM_THREADS" not in os.environ:  # share the cores between the parallel runs
        env["OMP_NUM_THREADS"] = str(chosen.threads(len(todo)))
    jobs_to_run = [PointJob(config.resolve(), out.resolve(), s, tuple(overrides), Path.cwd(), env) for s in todo]
    for job in jobs_to_run:  # a log is this attempt's: --status reads a log as the point having run
        job.log.unlink(missing_ok=True)
    if jobs_to_run:
        statuses.update(chosen.run(jobs_to_run, out.resolve()))
    return gather(out, grid, statuses)
