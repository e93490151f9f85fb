"""What every sweep launcher shares: the job that trains one grid point, the interface a launcher
implements, and the record of what a sweep submitted (``OUT/launcher.json``).

A launcher only decides *where* each grid point's job runs; what the job does (reuse, resume or
train, its log, its status) is :func:`vaecore.sweep.run_point`, the same for every launcher, so
the tables of all launchers are gathered from the same run folders in the same way.
"""

from __future__ import annotations

import abc
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from vaecore.errors import VaecoreError
from vaecore.sweep import RunSpec

RECORD = "launcher.json"
"""The file in the sweep folder naming the launcher and the job of each submitted grid point."""


class LauncherError(VaecoreError):
    """The engine refused the sweep (no cluster at the address, sbatch failed): one line, exit 1."""


@attrs.frozen
class PointJob:
    """One grid point to run, as a picklable callable (Slurm and Ray run it on a worker): calling
    it trains, resumes or reuses the point in ``out`` and returns its status (``done``, ``reused``,
    ``failed``). Paths are absolute and the training process starts in ``cwd`` (the sweep's working
    folder, against which the config's relative paths are read), so a worker elsewhere trains the
    same run."""

    config: Path
    out: Path
    spec: RunSpec
    overrides: tuple[str, ...]
    cwd: Path
    env: dict[str, str] = attrs.field(factory=dict)
    """Environment variables set for the training process, over the worker's own."""
    shield: tuple[int, ...] = ()
    """Signals the training process ignores (see :func:`vaecore.sweep.run_point`)."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def log(self) -> Path:
        return self.out / "logs" / f"{self.spec.name}.log"

    def __call__(self, on_start: Callable[[subprocess.Popen], None] | None = None) -> str:
        """Run the point here; ``on_start`` gets the training process once it is started."""
        from vaecore.sweep import run_point

        env = {**os.environ, **self.env}
        return run_point(self.config, self.out, self.spec, self.overrides, env, self.cwd, on_start, self.shield)

    def note(self, text: str) -> None:
        """Append a line from the launcher to the point's log (why the engine ended it, say)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(f"vaecore sweep: {text.rstrip()}\n")


class Launcher(abc.ABC):
    """Where a sweep's grid points run. :meth:`run` runs every job and returns each one's status;
    on Ctrl-C (KeyboardInterrupt) it cancels what it submitted before re-raising."""

    kind: ClassVar[str]
    """The name in ``[launcher] kind`` and ``--launcher``."""
    options_class: ClassVar[type]
    """The attrs class of its ``[launcher]`` options."""

    def __init__(self, options: Any):
        self.options = options

    @abc.abstractmethod
    def run(self, jobs: Sequence[PointJob], out: Path) -> dict[str, str]:
        """Run every job (``out``: the sweep folder) and return the status of each by run name."""

    @abc.abstractmethod
    def threads(self, n_jobs: int) -> int:
        """OMP_NUM_THREADS for each training process when the user did not set it (``n_jobs``:
        the grid points to run): the cores the launcher gives each point."""

    @classmethod
    def live_states(cls, out: Path, record: dict[str, Any], names: Sequence[str]) -> dict[str, str]:
        """What the engine says of each submitted point of the sweep in ``out`` that has not
        finished (``record``: its :data:`RECORD`): ``pending`` or
        ``running`` (absent: the engine has nothing running for it). By default the sweep's own
        process runs or waits for its jobs: while it lives, a point not yet started is pending."""
        if not process_alive(record.get("sweep", "")):
            return {}
        return {name: "pending" for name in names}


STOP_GRACE_S = 30.0
"""How long a training process asked to stop may take to save its state before it is killed."""


def stop_training(processes: Sequence[subprocess.Popen], grace_s: float = STOP_GRACE_S) -> None:
    """Stop training processes as Ctrl-C does (SIGINT: each saves its state and exits), killing
    those still running after ``grace_s``."""
    live = [p for p in processes if p.poll() is None]
    for proc in live:
        proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace_s
    for proc in live:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def process_alive(holder: str) -> bool:
    """Whether ``"<pid> <host>"`` names a live process on this host (other hosts: assumed alive)."""
    pid, _, host = holder.partition(" ")
    if not pid.isdigit():
        return False
    if host and host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_record(out: Path, kind: str, jobs: dict[str, str | None]) -> None:
    """Record the launcher and each submitted point's job id (``--status`` reads it)."""
    record = {"kind": kind, "sweep": f"{os.getpid()} {socket.gethostname()}", "jobs": jobs}
    path = out / RECORD
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_record(out: Path) -> dict[str, Any]:
    """The record of the last sweep run in ``out`` (empty when none was written)."""
    try:
        record = json.loads((out / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
