"""Test sessions. `nox` runs the default ones: core tests, each plugin, all together, lint, types.

Every install is constrained by constraints.txt (torch pinned: an unpinned torch pulls CUDA wheels).
A folder under plugins/ with a pyproject.toml is picked up without editing this file.
"""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent
PLUGINS = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file())
CONSTRAINTS = ("-c", "constraints.txt")

nox.options.sessions = ["tests", "plugins", "stack", "loggers", "lint", "typecheck", "docs"]
nox.options.error_on_missing_interpreters = False


def install_core(session: nox.Session, *extras: str) -> None:
    # the setuptools that virtualenv seeds has been seen without its _distutils_hack module (its
    # .pth then prints a traceback at every interpreter start, into the CLI tests' stderr): a
    # reinstall from the index makes the session's setuptools whole
    session.install("--force-reinstall", "--no-deps", "setuptools")
    session.install(*CONSTRAINTS, "-e", f".[{','.join(('test', *extras))}]")


def install_plugins(session: nox.Session, names: list[str]) -> None:
    args: list[str] = []
    for name in names:
        args += ["-e", f"plugins/{name}"]
    if args:
        session.install(*CONSTRAINTS, *args)


@nox.session
def tests(session: nox.Session) -> None:
    """The core's own tests, with no plugin installed."""
    install_core(session)
    session.run("pytest", "tests", *session.posargs)


@nox.session
@nox.parametrize("plugin", PLUGINS)
def plugins(session: nox.Session, plugin: str) -> None:
    """One plugin's tests against the core, with only that plugin installed."""
    install_core(session)
    install_plugins(session, [plugin])
    session.run("pytest", f"plugins/{plugin}/tests", *session.posargs)


@nox.session
def stack(session: nox.Session) -> None:
    """Every plugin installed at once: the core tests again, the stack tests and every plugin's tests."""
    install_core(session)
    install_plugins(session, PLUGINS)
    session.run("pytest", "tests", *session.posargs)
    for plugin in PLUGINS:  # one run per folder: plugin test modules share basenames
        session.run("pytest", f"plugins/{plugin}/tests", *session.posargs)


@nox.session
def loggers(session: nox.Session) -> None:
    """The loggers with their libraries (the tensorboard, mlflow and wandb extras), each read back
    with its own library; the core session skips these cases."""
    install_core(session, "tensorboard", "mlflow", "wandb")
    session.run("pytest", "tests/test_loggers.py", *session.posargs)


@nox.session
def slurm(session: nox.Session) -> None:
    """The slurm launcher (the slurm extra: submitit) against a real single-node Slurm cluster,
    which the tests start on this machine and stop after: tests/engines.py installs slurmctld,
    slurmd, slurmdbd, munge and MariaDB with apt-get when missing (as root). Not in the default run."""
    install_core(session, "slurm")
    session.run(
        "pytest", "tests/test_launcher_engines.py", "-k", "slurm", *session.posargs, env={"VAECORE_ENGINES": "slurm"}
    )


@nox.session
def ray(session: nox.Session) -> None:
    """The ray launcher (the ray extra) against a local Ray cluster that the tests start with
    `ray start --head` and stop with `ray stop`. Not in the default run."""
    install_core(session, "ray")
    session.run(
        "pytest", "tests/test_launcher_engines.py", "-k", "ray", *session.posargs, env={"VAECORE_ENGINES": "ray"}
    )


@nox.session
def lint(session: nox.Session) -> None:
    session.install(*CONSTRAINTS, "ruff")
    session.run("ruff", "check", "vaecore", "tests", "plugins", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "vaecore", "tests", "plugins", "benchmarks", "docs", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    install_core(session)
    session.install(*CONSTRAINTS, "mypy")
    session.run("mypy", "vaecore")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs.yml), built with warnings treated as errors.

    The reference pages are generated from the code by docs/gen_pages.py (tests/test_docs.py
    checks they are current); the method pages are made from plugins/*/README.md at build time.
    """
    session.install(*CONSTRAINTS, "mkdocs>=1.6,<2")
    session.run("mkdocs", "build", "--strict", "--site-dir", str(ROOT / "site"), *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Throughput and memory benchmarks against plain PyTorch loops (not part of the default run)."""
    install_core(session)
    install_plugins(session, PLUGINS)
    session.install(*CONSTRAINTS, "pythae")
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        session.run("python", str(script.relative_to(ROOT)), *session.posargs)
