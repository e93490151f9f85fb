"""The ``ray`` launcher: each grid point a Ray task on a cluster: an existing one (``address``)
or one started on this machine for the sweep and stopped after it. The task runs the same
``vaecore train`` process as the local launcher, in the sweep's working folder, so the cluster's
workers need the same vaecore installation and file system (the run folders) as the sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from vaecore import validators as v
from vaecore.launchers.base import Launcher, LauncherError, PointJob, write_record


@attrs.define(kw_only=True)
class RayOptions:
    """``[launcher] kind = "ray"``: one Ray task per grid point (needs ``vaecore[ray]``)."""

    address: str | None = None
    """The cluster to join (``ray.init(address=...)``: ``host:port`` of a head started with
    ``ray start --head``, or ``auto``); unset: a local cluster started for the sweep."""
    num_cpus: float = attrs.field(default=1.0, validator=v.gt(0, finite=True))
    """CPUs of each task (also its ``OMP_NUM_THREADS``, at least 1, unless that is set)."""
    num_gpus: float = attrs.field(default=0.0, validator=v.ge(0, finite=True))
    """GPUs of each task."""
    memory_gb: float | None = attrs.field(default=None, validator=v.gt(0, finite=True))
    """Memory reserved for each task in GB; unset: none reserved."""
    resources: dict[str, float] = attrs.field(factory=dict)
    """Custom resources of each task, e.g. ``{ big_node = 1 }``."""


def _run(job: PointJob) -> str:
    """The task's body: the point run on the worker."""
    return job()


class RayLauncher(Launcher):
    """Submits one task per point and waits for them all; a task that dies (a killed worker, a
    lost node) is ``failed`` with Ray's reason in the point's log. Ctrl-C cancels every task
    (``ray.cancel(force=True)``, which kills their training processes' workers)."""

    kind = "ray"
    options_class = RayOptions

    def threads(self, n_jobs: int) -> int:
        return max(1, int(self.options.num_cpus))

    def run(self, jobs: Sequence[PointJob], out: Path) -> dict[str, str]:
        import ray

        o = self.options
        connected_here = not ray.is_initialized()
        if connected_here:
            try:
                ray.init(address=o.address, log_to_driver=False, include_dashboard=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at launcher.address = {o.address!r}" if o.address else "a local Ray cluster"
                raise LauncherError(f"cannot connect to {where}: {str(exc).strip().splitlines()[0]}") from exc
        try:
            resources: dict[str, Any] = {"num_cpus": o.num_cpus, "num_gpus": o.num_gpus, "max_retries": 0}
            if o.memory_gb is not None:
                resources["memory"] = int(o.memory_gb * 1024**3)
            if o.resources:
                resources["resources"] = dict(o.resources)
            task = ray.remote(**resources)(_run)
            refs = [task.remote(job) for job in jobs]
            write_record(out, self.kind, {job.name: ref.task_id().hex() for job, ref in zip(jobs, refs)})
            statuses: dict[str, str] = {}
            try:
                for job, ref in zip(jobs, refs):
                    try:
                        statuses[job.name] = ray.get(ref)
                    except (ray.exceptions.RayError, OSError) as exc:
                        job.note(f"Ray task ended without a result: {str(exc).strip().splitlines()[0]}")
                        statuses[job.name] = "failed"
            except KeyboardInterrupt:
                for ref in refs:
                    ray.cancel(ref, force=True)
                raise
            return statuses
        finally:
            if connected_here:
                ray.shutdown()


LAUNCHER = RayLauncher
