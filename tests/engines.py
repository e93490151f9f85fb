"""The real engines the launcher tests run against, installed and started here, stopped after.

:func:`slurm_cluster`: a single-node Slurm cluster on this machine (``slurmctld`` + ``slurmd``,
``munged`` for authentication, and ``slurmdbd`` over a throw-away MariaDB for accounting: submitit
reads job states with ``sacct``, which needs it), configured in a private folder through
``SLURM_CONF``. Missing Debian packages are installed with apt-get (as root). :func:`ray_cluster`:
``ray start --head`` on a free port under its own token, ``ray stop`` after. Each raises :class:`EngineUnavailable`
with the reason when its engine cannot run here; the tests skip with that reason.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

SLURM_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "slurmdbd", "munge", "mariadb-server")
SLURM_BINARIES = ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "mariadb-install-db", "sbatch", "sacct")


class EngineUnavailable(RuntimeError):
    """The engine cannot run in this environment (the message says why)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def install_slurm() -> None:
    """The Debian packages of a single-node cluster, installed when a binary is missing."""
    if all(_which(b) for b in SLURM_BINARIES):
        return
    if os.geteuid() != 0 or not _which("apt-get"):
        missing = [b for b in SLURM_BINARIES if not _which(b)]
        raise EngineUnavailable(
            f"Slurm is not installed ({', '.join(missing)} missing) and apt-get as root is not available"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *SLURM_PACKAGES]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise EngineUnavailable(f"{' '.join(cmd)} failed: {done.stderr.strip().splitlines()[-1:]}")


def _wait(what: str, ready, timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}" for p in logs if p.is_file())
    raise EngineUnavailable(f"{what} did not come up within {timeout:.0f} s\n{tails}")


def _ok(cmd: list[str], env: dict[str, str]) -> bool:
    return subprocess.run(cmd, env=env, capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def slurm_cluster(root: Path) -> Iterator[dict[str, str]]:
    """Start the cluster with its state under ``root``; yields the environment (``SLURM_CONF``)
    the Slurm commands, and so submitit, need. Every daemon is stopped on exit."""
    install_slurm()
    root.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    cpus = os.cpu_count() or 1
    procs: list[subprocess.Popen] = []
    env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    db, db_socket, db_port, dbd_port, ctl_port, d_port = (
        root / "mysql",
        root / "mysql.sock",
        _free_port(),
        _free_port(),
        _free_port(),
        _free_port(),
    )
    for sub in ("spool/ctld", "spool/d", "munge", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    log = root / "log"
    (root / "slurm.conf").write_text(
        f"""ClusterName=vaecore
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctl_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
StateSaveLocation={root / "spool/ctld"}
SlurmdSpoolDir={root / "spool/d"}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={log / "slurmctld.log"}
SlurmdLogFile={log / "slurmd.log"}
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={dbd_port}
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
KillWait=5
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
""",
        encoding="utf-8",
    )
    dbd_conf = root / "slurmdbd.conf"
    dbd_conf.write_text(
        f"""AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={dbd_port}
SlurmUser=root
PidFile={root / "slurmdbd.pid"}
LogFile={log / "slurmdbd.log"}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=root
StorageLoc=slurm_acct_db
""",
        encoding="utf-8",
    )
    dbd_conf.chmod(0o600)

    def start(cmd: list[str], name: str) -> None:
        out = open(log / f"{name}.out", "w")
        procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))

    try:
        # munge on its default socket and key (the package creates /etc/munge/munge.key): the
        # Slurm clients find it there without configuration
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        if not Path("/run/munge/munge.socket.2").exists() or not _ok(["munge", "-n"], env):
            start([_which("munged") or "munged", "--foreground", "--force"], "munged")
            _wait("munged", lambda: _ok(["munge", "-n"], env), 30, [log / "munged.out"])
        subprocess.run(
            ["mariadb-install-db", f"--datadir={db}", "--user=root", "--auth-root-authentication-method=normal"],
            check=True,
            capture_output=True,
        )
        start(
            [
                _which("mariadbd") or "mariadbd",
                "--no-defaults",
                f"--datadir={db}",
                f"--socket={db_socket}",
                f"--port={db_port}",
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-grant-tables",
                "--innodb-buffer-pool-size=32M",
                f"--pid-file={root / 'mysql.pid'}",
            ],
            "mariadbd",
        )
        _wait("MariaDB", lambda: db_socket.exists(), 60, [log / "mariadbd.out"])
        start([_which("slurmdbd") or "slurmdbd", "-D"], "slurmdbd")
        _wait(
            "slurmdbd",
            lambda: _ok(["sacctmgr", "-i", "-n", "list", "cluster"], env),
            60,
            [log / "slurmdbd.log", log / "slurmdbd.out"],
        )
        subprocess.run(["sacctmgr", "-i", "add", "cluster", "vaecore"], env=env, capture_output=True, check=False)
        start([_which("slurmctld") or "slurmctld", "-D", "-i"], "slurmctld")
        start([_which("slurmd") or "slurmd", "-D"], "slurmd")

        def idle() -> bool:
            done = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, check=False)
            return done.returncode == 0 and done.stdout.strip() in ("idle", "mix", "alloc")

        _wait("the Slurm node", idle, 60, [log / "slurmctld.log", log / "slurmd.log", log / "slurmctld.out"])
        yield env
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def ray_token(root: Path) -> dict[str, str]:
    """A fresh Ray authentication token in ``root`` (never in ``~/.ray``); the environment that
    turns on token authentication (Ray's default since 2.60) with it, for the cluster and its
    clients. Ray reads these variables when it is first imported: a client process sets them before."""
    root.mkdir(parents=True, exist_ok=True)
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}


@contextlib.contextmanager
def ray_cluster(root: Path, auth: dict[str, str]) -> Iterator[str]:
    """``ray start --head`` (this interpreter's ray) on free ports, authenticating with ``auth``
    (from :func:`ray_token`); yields its address."""
    ray_cli = Path(sys.executable).parent / "ray"
    if not ray_cli.exists():
        raise EngineUnavailable("ray is not installed in this environment (pip install 'vaecore[ray]')")
    port = _free_port()
    env = {**os.environ, **auth, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_AUTH_TOKEN", None)  # a token in the caller's environment would win over the file
    cmd = [
        str(ray_cli),
        "start",
        "--head",
        f"--port={port}",
        "--num-cpus=2",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={root}",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise EngineUnavailable(f"ray start failed: {(done.stderr or done.stdout).strip()[-1000:]}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(ray_cli), "stop", "--force"], env=env, capture_output=True, check=False)
