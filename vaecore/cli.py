"""The ``vaecore`` command line."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vaecore import __version__
from vaecore.analysis.cli import ANALYSIS_COMMANDS, add_analysis_parsers
from vaecore.components import plugin_components
from vaecore.errors import CheckpointError, PluginError, VaecoreError
from vaecore.plugin_manager import (
    IMPORT_FAILURES,
    PluginRegistry,
    check_plugin,
    hook_failure,
    hook_names,
    option_rows,
)


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value by dotted path, e.g. train.lr=3e-4 or plugins.1.gamma=0.5; KEY=null "
        "removes the key so that its default applies (repeatable)",
    )


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaecore", description="Train and analyse variational autoencoders.")
    parser.add_argument("--version", action="version", version=f"vaecore {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train a model from a TOML config into a run folder")
    train.add_argument("config", type=Path, help="the TOML config file")
    train.add_argument("--out", type=Path, help="the run folder (default: runs/<config name>)")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in the run folder from its last checkpoint"
    )
    _add_set(train)

    ev = sub.add_parser(
        "eval", help="evaluate a run's checkpoint and write RUN_DIR/evals/<checkpoint>-<split>-k<K>.json"
    )
    ev.add_argument("run_dir", type=Path, help="the run folder (holds config.toml and checkpoints/)")
    ev.add_argument(
        "--split", choices=("train", "valid", "test"), help="the split to evaluate (default: eval.split, test)"
    )
    ev.add_argument(
        "--nll-samples", type=int, metavar="K", help="importance samples per example (default: eval.nll_samples, 500)"
    )
    ev.add_argument(
        "--checkpoint", type=Path, metavar="PATH", help="the checkpoint to evaluate (default: checkpoints/best.pt)"
    )
    ev.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="where to write the results (default: RUN_DIR/evals/<checkpoint>-<split>-k<K>.json; the eval.json "
        "written at the end of training is kept)",
    )
    _add_set(ev)

    plugins = sub.add_parser(
        "plugins",
        help="list installed plugins",
        description="List the installed plugins with their distribution, version and hooks. The status is "
        "`ok` only when the plugin passes the checks `train` makes when it registers it (api_version, hook "
        "names and arguments); otherwise it is the error `train` would report.",
    )
    plugins.add_argument("--json", action="store_true", help="print JSON instead of a table")
    plugins.add_argument(
        "--options", metavar="NAME", help="print the options of plugin NAME: type, default and description"
    )

    export = sub.add_parser(
        "export",
        help="write a run's model as a weights-only file with the config that rebuilds it",
        description="Write the model of RUN_DIR's checkpoint (default: eval.checkpoint, best) as one file that "
        "torch.load(..., weights_only=True) reads: the weights, the resolved config and the sizes the model was "
        "built for. vaecore.load_exported(FILE) rebuilds the model from it, without the run folder or its data.",
    )
    export.add_argument("run_dir", type=Path, help="the run folder")
    export.add_argument("--checkpoint", type=Path, metavar="PATH", help="the checkpoint (default: eval.checkpoint)")
    export.add_argument("--out", type=Path, metavar="FILE", help="the file to write (default: RUN_DIR/export.pt)")

    init = sub.add_parser(
        "init",
        help="write a commented starter config",
        description="Write a commented starter config to PATH (default: vaecore.toml), ready for "
        "`vaecore train PATH`. Templates: " + ", ".join(config_templates()) + ".",
    )
    init.add_argument("path", type=Path, nargs="?", default=Path("vaecore.toml"), help="the file to write")
    init.add_argument("--template", default="vae", metavar="NAME", help="the starter: " + ", ".join(config_templates()))

    new_plugin = sub.add_parser(
        "new-plugin",
        help="write a ready plugin distribution from the template",
        description="Write PATH/NAME/, the distribution vaecore-NAME-plugin: pyproject.toml with the entry point, "
        "the package vaecore_NAME with an Options class and one hook, tests running the conformance suite, an "
        "example config and a README. It passes its own tests right after `pip install -e PATH/NAME`.",
    )
    new_plugin.add_argument("name", help="the plugin's name in [[plugins]] (a lowercase identifier)")
    new_plugin.add_argument(
        "--dir",
        type=Path,
        default=Path("."),
        metavar="PATH",
        help="the folder to create PATH/NAME in (default: the current folder)",
    )

    sweep = sub.add_parser(
        "sweep",
        help="train a grid of configs in parallel and gather one results table",
        description="Train every combination of the --grid values (and --seeds) as parallel `vaecore train` "
        "processes into OUT/<key>-<value>__.../ and gather their eval.json into OUT/results.md and "
        "OUT/results.csv: one row per run with the columns run, the swept keys, status, epoch and every scalar "
        "metric and, when train.seed is swept, one row per configuration with the mean, the sample standard "
        "deviation and n of every numeric metric over its seeds. Re-run to continue: a finished run is reused "
        "only when its config equals the one asked for; a run of another config stops the sweep, naming the "
        "keys that differ.",
    )
    sweep.add_argument("config", type=Path, nargs="?", help="the TOML config every run starts from (not with --status)")
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a config key and its values, e.g. train.lr=1e-3,3e-4 (repeatable: the product is run)",
    )
    sweep.add_argument(
        "--seeds",
        metavar="S1,S2",
        help="train every grid point with each of these seeds, e.g. 0,1,2 (the grid train.seed=0,1,2, swept last)",
    )
    sweep.add_argument(
        "--launcher",
        metavar="NAME",
        help="where the runs train: local (processes here, the default), slurm (jobs through submitit) or ray "
        "(tasks on a Ray cluster); default: [launcher] kind of the config, whose other keys are the launcher's "
        "options (--set launcher.KEY=VALUE sets one)",
    )
    sweep.add_argument(
        "--jobs", type=int, metavar="N", help="runs at a time, local launcher only (default: launcher.jobs, 1)"
    )
    sweep.add_argument(
        "--status",
        type=Path,
        metavar="OUT",
        help="show each run of the sweep folder OUT as pending, running, done or failed, and exit",
    )
    sweep.add_argument("--out", type=Path, help="the sweep folder (default: sweeps/<config name>)")
    sweep.add_argument(
        "--retrain-stale",
        action="store_true",
        help="move runs in OUT trained with another config to OUT/stale/ and train them again "
        "(default: stop and name the keys that differ)",
    )
    _add_set(sweep)
    add_analysis_parsers(sub, _add_set)
    return parser


def format_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def metrics_table(results: dict[str, Any]) -> str:
    """The scalar results of an evaluation as a two-column table."""
    rows = [
        [k, f"{v:.4f}" if isinstance(v, float) else str(v)]
        for k, v in results.items()
        if isinstance(v, (int, float, str))
    ]
    return format_table(rows, ["metric", "value"])


# output paths: refused before any work when they cannot be written, one line when a write fails


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _check_writable(folder: Path, path: Path, option: str) -> None:
    if not folder.is_dir():
        raise CheckpointError(f"{option} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        read_only = hasattr(os, "ST_RDONLY") and bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        reason = "the file system is read-only" if read_only else "permission denied"
        raise CheckpointError(f"{option} {path}: cannot write in {folder} ({reason})")


def check_out_folder(path: Path, option: str = "--out") -> None:
    """Refuse an output folder that cannot be created or written: an existing file, a path under
    a file, a read-only or unwritable place (checked before the work whose results it would hold)."""
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{option} {path}: is a file, not a folder")
    _check_writable(_existing_ancestor(path), path, option)


def check_out_file(path: Path, option: str = "--out") -> None:
    """Refuse an output file that cannot be written: a folder, in a missing or unwritable folder."""
    if path.is_dir():
        raise CheckpointError(f"{option} {path}: is a folder; give the path of the file to write")
    folder = path.parent
    if not folder.exists():
        raise CheckpointError(f"{option} {path}: the folder {folder} does not exist")
    _check_writable(folder, path, option)


def os_error_message(exc: OSError, fallback: Path) -> str:
    """An OSError as ``PATH: problem`` (the folder being written when the error names no file)."""
    where = exc.filename if exc.filename is not None else fallback
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        reason += " (free some space)"
    return f"{where}: {reason}"


def _run_hint(out: Path) -> str:
    from vaecore.runs import RunDir

    run = RunDir(out)
    if run.last.exists():
        return f"the last finished epoch is checkpointed in {run.last}: continue with --resume"
    return f"no epoch was checkpointed in {out} yet: run the same command again to start the run over"


def cmd_train(args: argparse.Namespace) -> int:
    from vaecore.config import load_config
    from vaecore.trainer import Trainer

    out = args.out or Path("runs") / args.config.stem
    config = load_config(args.config, args.overrides)
    check_out_folder(out)
    try:
        results = Trainer(config, out).fit(resume=args.resume)
    except Exception as exc:
        failure = hook_failure(exc)  # a plugin's hook raised: the plugin's error, whatever the type
        if failure is not None:
            raise PluginError(f"{failure}; {_run_hint(out)}") from exc
        if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):  # disk full, folder removed, ...
            raise CheckpointError(f"{os_error_message(exc, out)}; {_run_hint(out)}") from exc
        raise
    print(metrics_table(results))
    print(f"run folder: {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from vaecore.errors import ConfigError
    from vaecore.evaluation import evaluate_checkpoint
    from vaecore.restore import load_run

    overrides = list(args.overrides)
    if args.split:
        overrides.append(f"eval.split={args.split}")
    if args.nll_samples is not None:
        if args.nll_samples < 0:
            raise ConfigError([f"--nll-samples: must be >= 0, got {args.nll_samples}"])
        overrides.append(f"eval.nll_samples={args.nll_samples}")
    loaded = load_run(args.run_dir, overrides, args.checkpoint, allow_sample=False)  # numbers need the data
    config, dataset, run = loaded.config, loaded.dataset, loaded.run
    if args.out is not None:
        check_out_file(args.out)
    else:
        check_out_folder(run.path, "the run folder")
    results = evaluate_checkpoint(
        loaded.model,
        dataset,
        config,
        loaded.source,
        loaded.state.get("epoch"),
        progress=bool(config.train.progress),
    )
    target = args.out or run.evaluation_file(loaded.source, config.eval.split, config.eval.nll_samples)
    try:
        run.write_eval(results, target)
    except OSError as exc:
        print(metrics_table(results))  # the numbers are not lost with the file
        raise CheckpointError(f"{os_error_message(exc, target)}; the results are printed above") from exc
    print(metrics_table(results))
    print(f"wrote {target}")
    return 0


def plugin_rows(registry: PluginRegistry) -> list[dict[str, Any]]:
    """Each installed plugin with its distribution, version, hooks and load status."""
    rows = []
    for name in registry.names():
        info = registry.info(name)
        row: dict[str, Any] = {
            "name": name,
            "distribution": info.distribution,
            "version": info.version,
            "target": info.target,
        }
        try:
            cls = registry.load(name)
            row.update(hooks=hook_names(cls), components=[])
            row.update(status=check_plugin(name, cls))
            row.update(components=[f"{c.role} {c.name}" for c in plugin_components(name, cls)])
        except VaecoreError as exc:
            row.setdefault("hooks", [])
            row.setdefault("components", [])
            row.update(status=f"error: {exc}")
        rows.append(row)
    return rows


def cmd_plugin_options(registry: PluginRegistry, name: str, as_json: bool) -> int:
    rows = option_rows(registry.load(name))
    if as_json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"plugin {name!r} takes no options")
    else:
        table = [[r["name"], r["type"], r["default"], r["doc"]] for r in rows]
        print(format_table(table, ["option", "type", "default", "description"]))
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = PluginRegistry()
    if args.options is not None:
        return cmd_plugin_options(registry, args.options, args.json)
    rows = plugin_rows(registry)
    if args.debug:
        _print_import_tracebacks()
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no plugins installed (entry point group 'vaecore.plugins')")
    else:
        table = [
            [r["name"], r["distribution"], r["version"], ", ".join(r["hooks"]), ", ".join(r["components"]), r["status"]]
            for r in rows
        ]
        print(format_table(table, ["name", "distribution", "version", "hooks", "components", "status"]))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from vaecore.restore import export_run, load_run

    loaded = load_run(args.run_dir, checkpoint=args.checkpoint)
    target = args.out or loaded.run.path / "export.pt"
    check_out_file(target)
    try:
        export_run(loaded, target)
    except OSError as exc:
        raise CheckpointError(os_error_message(exc, target)) from exc
    print(f"wrote {target} (epoch {loaded.state.get('epoch')} of {loaded.source}); load it with vaecore.load_exported")
    return 0


def config_templates() -> dict[str, str]:
    """The starter configs of ``vaecore init``: name -> the template's first comment line."""
    from importlib import resources

    folder = resources.files("vaecore.templates") / "configs"
    found = {}
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        if item.name.endswith(".toml"):
            first = item.read_text(encoding="utf-8").splitlines()[0]
            found[item.name.removesuffix(".toml")] = first.lstrip("# ").strip()
    return found


def cmd_init(args: argparse.Namespace) -> int:
    from importlib import resources

    from vaecore.errors import ConfigError

    templates = config_templates()
    if args.template not in templates:
        raise ConfigError([f"--template: unknown template {args.template!r}; templates: {', '.join(templates)}"])
    if args.path.exists():
        raise CheckpointError(f"{args.path}: already exists; choose another path (nothing was written)")
    check_out_file(args.path, "PATH")
    text = (resources.files("vaecore.templates") / "configs" / f"{args.template}.toml").read_text(encoding="utf-8")
    args.path.write_text(text, encoding="utf-8")
    print(f"wrote {args.path} ({templates[args.template]})")
    print(f"next: vaecore train {args.path} --out runs/{args.path.stem}")
    return 0


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from vaecore.scaffold import ScaffoldError, check_name, new_plugin

    check_name(args.name)
    registry = PluginRegistry()
    if args.name in registry:
        raise ScaffoldError(
            f"a plugin named {args.name!r} is already installed ({registry.info(args.name).origin}); "
            "two plugins with one name would be ambiguous: choose another name"
        )
    dest = new_plugin(args.name, args.dir)
    print(f"wrote {dest}")
    print(f"next: pip install -e {dest} && vaecore plugins && python -m pytest {dest / 'tests'}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from vaecore.errors import ConfigError
    from vaecore.sweep import run_sweep

    if args.status is not None:
        from vaecore.launchers.status import status_table, sweep_states

        print(status_table(sweep_states(args.status)), end="")
        return 0
    if args.config is None:
        raise ConfigError("sweep: give the CONFIG to sweep (or --status OUT to see a sweep's state)")
    result = run_sweep(
        args.config,
        args.grid,
        jobs=args.jobs,
        launcher=args.launcher,
        out=args.out,
        overrides=args.overrides,
        seeds=args.seeds,
        retrain_stale=args.retrain_stale,
    )
    print(result.table, end="")
    print(f"wrote {result.markdown} and {result.csv}")
    if result.failed:
        logs = ", ".join(str(result.markdown.parent / "logs" / f"{name}.log") for name in result.failed)
        print(f"vaecore: error: {len(result.failed)} run(s) failed; see {logs}", file=sys.stderr)
        return 1
    return 0


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "plugins": cmd_plugins,
    "init": cmd_init,
    "export": cmd_export,
    "new-plugin": cmd_new_plugin,
    "sweep": cmd_sweep,
    **ANALYSIS_COMMANDS,
}


def _quiet_broken_pipe() -> int:
    """The reader of stdout went away (``vaecore plugins --json | head``): stop without a word,
    with the status of a process ended by SIGPIPE, as ``cat`` and ``ls`` do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush of stdout must not fail too
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return 128 + 13


def _print_import_tracebacks() -> None:
    """With --debug: the traceback of each plugin that failed to import, from the plugin's code."""
    import traceback

    for name, exc in IMPORT_FAILURES.items():
        print(f"vaecore: traceback of plugin {name!r} failing to import:", file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    IMPORT_FAILURES.clear()
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe is found here, not at exit
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except VaecoreError as exc:
        if args.debug:
            _print_import_tracebacks()
            raise
        print(f"vaecore: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # only an exception a plugin's hook raised (marked by the stack) is reported here
        failure = hook_failure(exc)
        if failure is None or args.debug:
            raise
        print(f"vaecore: error: {failure}", file=sys.stderr)
        return PluginError.exit_code
    except KeyboardInterrupt as exc:
        # training says what it kept and how to go on (vaecore.trainer.TrainingInterrupted)
        print(f"vaecore: interrupted; {exc}" if str(exc) else "vaecore: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
