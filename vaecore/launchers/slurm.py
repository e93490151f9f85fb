"""The ``slurm`` launcher: each grid point a Slurm job, submitted through submitit as one job
array. A job that times out or is preempted is requeued by submitit (up to ``max_requeues``
times) and resumes from the point's last checkpoint, as a rerun of the sweep would.

submitit keeps its own files (the pickled job, its stdout and stderr) in ``OUT/slurm/``; the
training log of each point is ``OUT/logs/<run>.log``, as with the local launcher. submitit reads
job states with ``sacct``, so the cluster needs accounting (slurmdbd).
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from vaecore import validators as v
from vaecore.launchers.base import Launcher, LauncherError, PointJob, stop_training, write_record

FOLDER = "slurm"
"""submitit's folder in the sweep folder."""
SHIELD = (signal.SIGTERM, signal.SIGUSR2)
"""What Slurm sends a job's processes before a time limit or a preemption. submitit's process
catches them and requeues the job; the training process ignores them, so that it is not ended
first (which would end the job as failed instead of requeued): submitit's handler stops it
(:meth:`SlurmPoint.checkpoint`), and the requeued job resumes from the last checkpoint."""


@attrs.define(kw_only=True)
class SlurmOptions:
    """``[launcher] kind = "slurm"``: one Slurm job per grid point (needs ``vaecore[slurm]``)."""

    partition: str | None = None
    """The partition (``sbatch --partition``); unset: the cluster's default."""
    time: int = attrs.field(default=60, validator=v.gt(0))
    """Each job's time limit, in minutes; a job that reaches it is requeued and resumes."""
    cpus_per_task: int = attrs.field(default=1, validator=v.gt(0))
    """CPUs of each job (also its ``OMP_NUM_THREADS`` unless that is set)."""
    gpus_per_node: int = attrs.field(default=0, validator=v.ge(0))
    """GPUs of each job."""
    mem_gb: float | None = attrs.field(default=None, validator=v.gt(0, finite=True))
    """Memory of each job in GB; unset: the cluster's default."""
    array_parallelism: int = attrs.field(default=256, validator=v.gt(0))
    """How many jobs of the array run at a time."""
    max_requeues: int = attrs.field(default=3, validator=v.ge(0))
    """How many times a job that timed out or was preempted is requeued."""
    job_name: str = "vaecore-sweep"
    """The jobs' name in ``squeue``."""
    sbatch: dict[str, Any] = attrs.field(factory=dict)
    """Further sbatch options, without the dashes: ``{ account = "lab", qos = "short" }``."""


_TRAINING: list[subprocess.Popen] = []
"""The training process of the job running in this process (for :meth:`SlurmPoint.checkpoint`)."""


@attrs.frozen
class SlurmPoint:
    """A grid point as submitit runs it: calling it runs the point; ``checkpoint`` is what
    submitit calls when the job times out or is preempted: it stops the training process (which
    saves its state, as on Ctrl-C) before submitit requeues the same point, which then resumes
    from its last checkpoint."""

    job: PointJob

    def __call__(self) -> str:
        # the point runs in a thread: the main thread, where submitit's signal handler runs, then
        # waits in join() rather than inside the training process's wait(), which the handler's
        # stop_training could not re-enter
        result: list[str] = []
        worker = threading.Thread(target=lambda: result.append(self.job(on_start=_TRAINING.append)), daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.5)
        return result[0] if result else "failed"

    def checkpoint(self) -> Any:
        import submitit

        stop_training(_TRAINING)
        self.job.note("the Slurm job is requeued (time limit or preemption); it resumes from its last checkpoint")
        return submitit.helpers.DelayedSubmission(self)


class SlurmLauncher(Launcher):
    """Submits the points as one job array and waits for them; a job that ends without a status
    (cancelled, killed, out of memory) is ``failed`` with submitit's reason in the point's log.
    Ctrl-C cancels every job of the array (``scancel``)."""

    kind = "slurm"
    options_class = SlurmOptions

    def threads(self, n_jobs: int) -> int:
        return int(self.options.cpus_per_task)

    def executor(self, out: Path) -> Any:
        """The submitit executor with the options as sbatch parameters."""
        import submitit

        o = self.options
        executor = submitit.SlurmExecutor(folder=out / FOLDER / "%j", max_num_timeout=o.max_requeues)
        parameters: dict[str, Any] = {
            "time": o.time,
            "cpus_per_task": o.cpus_per_task,
            "ntasks_per_node": 1,
            "nodes": 1,
            "array_parallelism": o.array_parallelism,
            "job_name": o.job_name,
            "stderr_to_stdout": True,
        }
        if o.partition is not None:
            parameters["partition"] = o.partition
        if o.gpus_per_node:
            parameters["gpus_per_node"] = o.gpus_per_node
        if o.mem_gb is not None:
            parameters["mem"] = f"{int(o.mem_gb * 1024)}M"
        if o.sbatch:
            parameters["additional_parameters"] = dict(o.sbatch)
        executor.update_parameters(**parameters)
        return executor

    def run(self, jobs: Sequence[PointJob], out: Path) -> dict[str, str]:
        executor = self.executor(out)
        try:
            with executor.batch():
                handles = [executor.submit(SlurmPoint(attrs.evolve(job, shield=SHIELD))) for job in jobs]
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:  # no sbatch, sbatch refused
            lines = [line for line in str(exc).strip().splitlines() if line.strip()] or [type(exc).__name__]
            raise LauncherError(f"the sweep's Slurm jobs could not be submitted: {lines[-1]}") from exc
        write_record(out, self.kind, {job.name: h.job_id for job, h in zip(jobs, handles)})
        statuses: dict[str, str] = {}
        try:
            for job, handle in zip(jobs, handles):
                try:
                    statuses[job.name] = handle.result()
                except Exception as exc:  # submitit's UncompletedJobError or FailedJobError
                    job.note(f"Slurm job {handle.job_id} ended without a result: {str(exc).splitlines()[0]}")
                    statuses[job.name] = "failed"
        except KeyboardInterrupt:
            for handle in handles:
                handle.cancel(check=False)
            raise
        return statuses

    @classmethod
    def live_states(cls, out: Path, record: dict[str, Any], names: Sequence[str]) -> dict[str, str]:
        """Each submitted point's job state from the cluster (one ``sacct`` call, by submitit)."""
        import submitit

        ids = {name: str(record["jobs"][name]) for name in names if record.get("jobs", {}).get(name)}
        watcher = submitit.SlurmJob.watcher
        for job_id in ids.values():
            watcher.register_job(job_id)
        watcher.update()
        states = {}
        for name, job_id in ids.items():
            state = watcher.get_state(job_id, mode="cache").upper()
            if state in ("PENDING", "REQUEUED", "CONFIGURING", "READY"):
                states[name] = "pending"
            elif state in ("RUNNING", "COMPLETING", "PREEMPTED", "SUSPENDED"):
                states[name] = "running"
        return states


LAUNCHER = SlurmLauncher
