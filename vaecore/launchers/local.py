"""The ``local`` launcher: each grid point a ``vaecore train`` process on this machine, ``jobs``
at a time (today's ``vaecore sweep --jobs N``)."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs

from vaecore import validators as v
from vaecore.launchers.base import Launcher, PointJob, stop_training, write_record


@attrs.define(kw_only=True)
class LocalOptions:
    """``[launcher] kind = "local"``: processes on this machine."""

    jobs: int = attrs.field(default=1, validator=v.gt(0))
    """How many grid points train at a time (``--jobs``)."""


class LocalLauncher(Launcher):
    """Runs the jobs from a thread pool, each in its own ``vaecore train`` process; Ctrl-C stops
    the running processes (each saves its state, as ``vaecore train`` does on Ctrl-C) and starts
    no other."""

    kind = "local"
    options_class = LocalOptions

    def threads(self, n_jobs: int) -> int:
        return max(1, (os.cpu_count() or 1) // self.options.jobs)

    def run(self, jobs: Sequence[PointJob], out: Path) -> dict[str, str]:
        write_record(out, self.kind, {job.name: None for job in jobs})
        running: set[subprocess.Popen] = set()
        lock = threading.Lock()
        cancelled = threading.Event()

        def one(job: PointJob) -> str:
            if cancelled.is_set():
                return "failed"

            def started(proc: subprocess.Popen) -> None:
                with lock:
                    running.add(proc)

            try:
                return job(on_start=started)
            finally:
                with lock:
                    running.difference_update({p for p in running if p.poll() is not None})

        pool = ThreadPoolExecutor(max_workers=self.options.jobs)
        try:
            futures = {job.name: pool.submit(one, job) for job in jobs}
            return {name: future.result() for name, future in futures.items()}
        except KeyboardInterrupt:
            cancelled.set()
            pool.shutdown(wait=False, cancel_futures=True)
            with lock:
                live = list(running)
            stop_training(live)
            raise
        finally:
            pool.shutdown(wait=True)


LAUNCHER = LocalLauncher
