"""The run folder contract.

::

    RUN/
      config.toml            the resolved config: enough to reproduce the run (a resume that raised
                             train.epochs says so in a comment at the top)
      metrics.jsonl          one JSON object per epoch with every train/valid term and plugin metric
      checkpoints/last.pt    the state at the end of the last finished epoch (resume starts here)
      checkpoints/best.pt    the state with the best monitored validation value so far (train.monitor)
      checkpoints/epoch_NNNN.pt  kept every ``train.keep_every`` epochs (optional)
      analysis/<command>/    figures (PNG) and the numbers behind them (JSON) of the analysis commands
      eval.json              the final evaluation of checkpoints/best.pt on the test split
      .lock                  locked (an OS file lock) while a process trains in the folder

An epoch is committed by writing ``checkpoints/last.pt``, last of the epoch's files: ``best.pt``,
``epoch_NNNN.pt`` and the ``metrics.jsonl`` line are written before it. A run killed before that
rename resumes from the previous ``last.pt`` and redoes the epoch, rewriting every file of it, so
any kill point resumes to the result of an uninterrupted run. A folder without ``last.pt`` holds
no committed epoch: training there starts the run over.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import socket
import sys
from pathlib import Path
from typing import Any

from vaecore.config import Config, dump_config
from vaecore.errors import CheckpointError


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that a reader sees the old content or the new one, never a torn one.

    The data goes to ``.NAME.tmp`` beside the target, is flushed to disk and renamed over it; when
    the write fails (disk full, an interrupt) the temporary file is removed and the error raised."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def json_safe(value: Any) -> Any:
    """The value with non-finite floats as strings, so that it is valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _parse_metrics(text: str) -> tuple[list[dict[str, Any]], list[int]]:
    """The records of a metrics.jsonl text, and the (1-based) numbers of the lines that are not one."""
    records: list[dict[str, Any]] = []
    bad: list[int] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad.append(number)
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), int):
            records.append(record)
        else:
            bad.append(number)
    return records, bad


class RunLock:
    """An exclusive OS lock on a run folder (``RUN/.lock``), held while a process trains there.

    The lock belongs to the open file, so it ends with the process however that ends (a kill
    included): a killed run never leaves its folder locked. The file records the holder's PID and
    host for the message another process gets; it is left in place (removing it would race with a
    process opening it)."""

    def __init__(self, run: RunDir):
        self.run = run
        self.path = run.path / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.run.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            locked = _try_lock(fd)
        except OSError as exc:  # a file system without locks (some network mounts): train unlocked
            os.close(fd)
            print(
                f"vaecore: warning: cannot lock {self.run.path} ({exc.strerror or exc}); "
                "nothing stops a second process from training in it at the same time",
                file=sys.stderr,
            )
            return
        if not locked:
            holder = _read_holder(fd)
            os.close(fd)
            raise CheckpointError(
                f"{self.run.path} is in use: another vaecore process ({holder}) is training in it; "
                "wait for it to finish or stop it, or train into another folder with --out"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def held(self) -> bool:
        """Whether a process holds the lock now (probed without taking it for long; False on a
        file system without locks)."""
        if self._fd is not None:
            return True
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:  # no lock file: nothing ever trained here
            return False
        try:
            if not _try_lock(fd):
                return True
        except OSError:
            return False
        finally:
            os.close(fd)  # releases the probe's lock, if it got it
        return False

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the file releases the lock

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


if sys.platform == "win32":  # pragma: no cover
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EDEADLK):
                return False
            raise
        return True

    def _read_holder(fd: int) -> str:
        return "its PID is not readable on Windows while it holds the lock"

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    def _read_holder(fd: int) -> str:
        try:
            pid, _, host = os.pread(fd, 256, 0).decode("utf-8", "replace").strip().partition(" ")
        except OSError:
            pid, host = "", ""
        if not pid:
            return "PID unknown"
        return f"PID {pid} on {host}" if host and host != socket.gethostname() else f"PID {pid}"


class RunDir:
    """Paths and writers of one run folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def config(self) -> Path:
        return self.path / "config.toml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    def chosen_checkpoint(self, choice: str) -> Path:
        """The checkpoint ``eval.checkpoint`` names: ``best.pt`` for ``best`` when it exists
        (a run without validation improvements has none), else ``last.pt``."""
        return self.best if choice == "best" and self.best.exists() else self.last

    def epoch_checkpoint(self, epoch: int) -> Path:
        """The checkpoint kept at the end of ``epoch`` (``train.keep_every``)."""
        return self.checkpoints / f"epoch_{epoch:04d}.pt"

    def epoch_checkpoints(self) -> list[tuple[int, Path]]:
        """Every kept per-epoch checkpoint, by epoch."""
        found = sorted(self.checkpoints.glob("epoch_*.pt"))
        return [(int(p.stem.split("_")[1]), p) for p in found]

    @property
    def eval(self) -> Path:
        return self.path / "eval.json"

    def lock(self) -> RunLock:
        """The folder's exclusive lock, to hold (``with run.lock():``) while training in it."""
        return RunLock(self)

    def holds_run(self) -> bool:
        """Whether an epoch was committed here (``checkpoints/last.pt`` exists)."""
        return self.last.exists()

    def clear_uncommitted(self) -> list[Path]:
        """Remove what a run that never committed an epoch left (metrics, best/kept checkpoints,
        an evaluation); returns the paths removed. Only for a folder that does not hold a run."""
        assert not self.holds_run(), "clear_uncommitted on a folder with a committed epoch"
        found = [self.metrics, self.eval, self.best, *(p for _, p in self.epoch_checkpoints())]
        removed = [p for p in found if p.exists()]
        for p in removed:
            p.unlink()
        return removed

    def create(self, config: Config, notes: list[str] | tuple[str, ...] = ()) -> None:
        """Write the resolved config (``notes`` as comment lines above it)."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        header = "".join(f"# {note}\n" for note in notes)
        atomic_write_bytes(self.config, (header + ("\n" if header else "") + dump_config(config)).encode())

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one epoch's record, on disk before the epoch's ``last.pt`` is written."""
        with open(self.metrics, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(json_safe(record)) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every epoch's record; a torn last line (a kill while it was written) is left out."""
        if not self.metrics.exists():
            return []
        text = self.metrics.read_text(encoding="utf-8")
        records, bad = _parse_metrics(text)
        torn = len(text.splitlines())
        if [n for n in bad if n != torn]:
            raise CheckpointError(f"{self.metrics}: line {bad[0]} is not a JSON record of an epoch")
        return records

    def train_seconds(self) -> float | None:
        """The wall time of the run's training epochs (the summed ``seconds`` of its records,
        a torn line left out), None before the first epoch: the budget a results table reports."""
        if not self.metrics.exists():
            return None
        records, _ = _parse_metrics(self.metrics.read_text(encoding="utf-8"))
        seconds = [float(r["seconds"]) for r in records if isinstance(r.get("seconds"), (int, float))]
        return round(sum(seconds), 1) if seconds else None

    def truncate_metrics(self, last_epoch: int) -> None:
        """Keep the records of epochs up to ``last_epoch`` (the checkpointed ones); drop the later
        ones and anything unreadable (a torn line of a kill mid-write), written before an
        interruption and not checkpointed."""
        if not self.metrics.exists():
            return
        records, _ = _parse_metrics(self.metrics.read_text(encoding="utf-8"))
        kept = [r for r in records if r["epoch"] <= last_epoch]
        atomic_write_bytes(self.metrics, "".join(json.dumps(r) + "\n" for r in kept).encode())

    @property
    def manifest(self) -> Path:
        """``run.json``: input shape, training-set size, versions, git commit (:mod:`vaecore.provenance`)."""
        return self.path / "run.json"

    @property
    def data_sample(self) -> Path:
        """``data_sample.npz``: a seeded sample of the test split for analysis without the data."""
        return self.path / "data_sample.npz"

    def evaluation_file(self, checkpoint: Path, split: str, nll_samples: int) -> Path:
        """Where ``vaecore eval`` writes: ``evals/<checkpoint>-<split>-k<K>.json``, one file per
        checkpoint, split and K, beside (never over) the ``eval.json`` that ended training."""
        return self.path / "evals" / f"{checkpoint.stem}-{split}-k{nll_samples}.json"

    def write_eval(self, results: dict[str, Any], target: Path | None = None) -> Path:
        """Write evaluation results to ``eval.json`` (or ``target``); returns the path written."""
        path = target or self.eval
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (json.dumps(json_safe(results), indent=2) + "\n").encode())
        return path
