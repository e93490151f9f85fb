"""``vaecore sweep --status OUT``: each grid point of a sweep folder as ``pending``, ``running``,
``done`` or ``failed``, whatever launcher ran it.

The run folders say most of it: a point with ``eval.json`` is done, one whose folder is locked
(:class:`~vaecore.runs.RunLock`) is training. For the others the launcher that submitted them
(``OUT/launcher.json``) is asked whether its engine still holds them (queued or starting); a point
it does not hold that has a log of this attempt ran and stopped without an evaluation: failed. A
point with neither was not started: pending.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs

from vaecore.errors import CheckpointError
from vaecore.launchers.base import read_record
from vaecore.runs import RunDir
from vaecore.sweep import EXIT_LINE

STATES = ("pending", "running", "done", "failed")


@attrs.frozen
class PointState:
    """One grid point's state, with the file that tells more (its log, or its evaluation)."""

    run: str
    state: str
    detail: str


def sweep_states(out: Path) -> list[PointState]:
    """The state of every grid point of the sweep in ``out``, in grid order."""
    try:
        runs = list(json.loads((out / "sweep.json").read_text(encoding="utf-8"))["runs"])
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(f"--status {out}: not a sweep folder (no readable sweep.json)") from None
    record = read_record(out)
    unfinished = [name for name in runs if not (out / name / "eval.json").is_file()]
    live: dict[str, str] = {}
    if record.get("kind") and unfinished:
        from vaecore.launchers import LAUNCHERS, launcher_class, require

        if record["kind"] in LAUNCHERS:
            require(record["kind"], f"--status {out} (a {record['kind']} sweep)")
            submitted = [name for name in unfinished if name in record.get("jobs", {})]
            live = launcher_class(record["kind"]).live_states(out, record, submitted)
    states = []
    for name in runs:
        run, log = RunDir(out / name), out / "logs" / f"{name}.log"
        if run.eval.is_file():
            states.append(PointState(name, "done", str(run.eval)))
        elif run.lock().held():
            states.append(PointState(name, "running", str(log)))
        elif _ended(log):
            states.append(PointState(name, "failed", str(log)))
        elif name in live:
            job = record.get("jobs", {}).get(name) or ""
            state = "running" if log.is_file() else live[name]
            states.append(PointState(name, state, str(log) if log.is_file() else f"job {job}".strip()))
        elif log.is_file():  # started, and ended without an exit line: killed
            states.append(PointState(name, "failed", str(log)))
        else:
            states.append(PointState(name, "pending", ""))
    return states


def _ended(log: Path) -> bool:
    """Whether the log says its training process ended (the sweep's exit line)."""
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, fh.seek(0, 2) - 200))
            return EXIT_LINE.encode() in fh.read()
    except OSError:
        return False


def status_table(states: list[PointState]) -> str:
    """The states as a markdown table, with a count per state after it."""
    lines = ["| run | state | see |", "| --- | --- | --- |"]
    lines += [f"| {s.run} | {s.state} | {s.detail} |" for s in states]
    counts = ", ".join(f"{sum(s.state == state for s in states)} {state}" for state in STATES)
    return "\n".join(lines) + f"\n\n{counts}\n"
