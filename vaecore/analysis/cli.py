"""The analysis subcommands of ``vaecore``: each loads a run, writes PNGs and a JSON of the numbers
into ``RUN/analysis/<command>/`` (or ``--out``), and prints where."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vaecore.runs import atomic_write_bytes


def _run_argument(parser: argparse.ArgumentParser, add_set: Callable[[argparse.ArgumentParser], None]) -> None:
    parser.add_argument("run_dir", type=Path, help="the run folder")
    parser.add_argument("--checkpoint", type=Path, metavar="PATH", help="default: checkpoints/best.pt")
    parser.add_argument("--out", type=Path, metavar="DIR", help="default: RUN/analysis/<command>")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    parser.add_argument(
        "--format", default="png", metavar="F1,F2", help="figure formats besides PNG, e.g. png,pdf (default: png)"
    )
    add_set(parser)


def add_analysis_parsers(sub: Any, add_set: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("sample", help="prior samples and test reconstructions")
    _run_argument(p, add_set)
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")

    p = sub.add_parser("traverse", help="single-dimension traversals and a random-direction interpolation")
    _run_argument(p, add_set)
    p.add_argument("--input", type=int, default=0, help="the test input to start from (default 0)")
    p.add_argument("--dims", type=int, default=10, help="how many of the most active dimensions (default 10)")
    p.add_argument("--radius", type=float, default=10.0, help="traverse from -R to +R (default 10)")
    p.add_argument("--steps", type=int, default=11)
    p.add_argument("--zero-dims", type=int, nargs="*", help="dimensions fixed to zero (default: the inactive ones)")

    p = sub.add_parser("interpolate", help="interpolate between the posteriors of two test inputs")
    _run_argument(p, add_set)
    p.add_argument("--from", dest="start", type=int, required=True, help="index of the first test input")
    p.add_argument("--to", dest="end", type=int, required=True, help="index of the second test input")
    p.add_argument("--path", choices=("euclidean", "fisher-rao"), default="fisher-rao")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--decode", choices=("mean", "sample"), default="mean")

    p = sub.add_parser("analyze", help="activity, PCA spectrum, 2-D latents, probe accuracy over training")
    _run_argument(p, add_set)
    p.add_argument(
        "--probe-train", type=int, default=5000, help="training rows for the probes, drawn with --seed (default 5000)"
    )

    p = sub.add_parser("lso", help="latent space optimisation with the decoder frozen (NE 5.4)")
    _run_argument(p, add_set)
    p.add_argument("--n", type=int, default=16, help="held-out test images (default 16)")
    p.add_argument("--inits", type=int, default=5, help="random initialisations (default 5, at least 2)")
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--thresholds", type=float, nargs="+", default=[10.0, 1.0, 0.1])

    p = sub.add_parser("curves", help="training curves of the terms in metrics.jsonl, several runs overlaid")
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN", help="run folders (a run still training too)")
    p.add_argument(
        "--terms",
        metavar="T1,T2",
        help="terms to draw, e.g. elbo,kl (train and valid) or valid.elbo (default: every term that changes)",
    )
    p.add_argument("--x", choices=("epoch", "step", "time"), default="epoch", help="the x axis (default: epoch)")
    p.add_argument("--out", type=Path, metavar="DIR", help="default: RUN/analysis/curves, or curves/ for several runs")
    p.add_argument(
        "--format", default="png", metavar="F1,F2", help="figure formats besides PNG, e.g. png,pdf (default: png)"
    )


def _formats(text: str) -> tuple[str, ...]:
    return tuple(f.strip() for f in text.split(",") if f.strip())


def _write_result(result: dict[str, Any], target: Path) -> None:
    """The numbers as JSON beside the figures, and one line saying what was written where."""
    from vaecore.cli import os_error_message
    from vaecore.errors import CheckpointError

    try:
        atomic_write_bytes(target, (json.dumps(result, indent=1) + "\n").encode())
    except OSError as exc:
        raise CheckpointError(os_error_message(exc, target)) from exc
    for heading, lines in (result.get("text") or {}).items():  # a text model's sentences
        print(f"{heading}:")
        for line in lines:
            print(f"  {line}")
    shown = ", ".join(result["figures"]) or "no figure (inputs are not images)"
    print(f"wrote {target} and {shown} in {target.parent}")


def run_curves(args: argparse.Namespace) -> int:
    from vaecore.analysis import figures
    from vaecore.analysis.curves import curves
    from vaecore.cli import check_out_folder

    out = args.out or (args.run_dirs[0] / "analysis" / "curves" if len(args.run_dirs) == 1 else Path("curves"))
    terms = [t.strip() for t in args.terms.split(",") if t.strip()] if args.terms else None
    with figures.styled(_formats(args.format)):
        check_out_folder(out)
        out.mkdir(parents=True, exist_ok=True)
        result = curves(args.run_dirs, out, terms, args.x)
    _write_result(result, out / "curves.json")
    return 0


def run_analysis(args: argparse.Namespace) -> int:
    from vaecore.analysis import commands, figures
    from vaecore.cli import check_out_folder
    from vaecore.restore import load_run

    check_arguments(args)
    loaded = load_run(args.run_dir, args.overrides, args.checkpoint)
    check_against_run(args, loaded)
    out = args.out or loaded.run.path / "analysis" / args.command
    check_out_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    seed = args.seed
    with figures.styled(_formats(args.format)):
        if args.command == "sample":
            result = commands.sample(loaded, out, args.n, seed)
        elif args.command == "traverse":
            result = commands.traverse(
                loaded, out, args.input, args.dims, args.radius, args.steps, args.zero_dims, seed
            )
        elif args.command == "interpolate":
            result = commands.interpolate(loaded, out, args.start, args.end, args.path, args.steps, args.decode, seed)
        elif args.command == "analyze":
            result = commands.analyze(loaded, out, args.probe_train, seed)
        else:
            result = commands.lso(
                loaded, out, args.n, args.inits, args.iterations, args.lr, tuple(args.thresholds), seed
            )
    result["checkpoint"] = str(loaded.source)
    result["data"] = loaded.data_source
    # one result file per interpolation path, beside its figure
    target = out / (f"interpolate_{args.path}.json" if args.command == "interpolate" else f"{args.command}.json")
    _write_result(result, target)
    return 0


MAX_SEED = 2**32 - 1


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse option values that cannot work, before anything is loaded (one line each)."""
    from vaecore.errors import VaecoreError

    for name in ("n", "steps", "dims", "inits", "iterations", "probe_train"):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            raise VaecoreError(f"--{name.replace('_', '-')}: must be > 0, got {value}")
    if getattr(args, "inits", None) == 1:
        raise VaecoreError("--inits: must be >= 2 to compare the codes reached from different starts, got 1")
    for name in ("radius", "lr"):
        value = getattr(args, name, None)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise VaecoreError(f"--{name}: must be a finite number > 0, got {value}")
    for value in getattr(args, "thresholds", None) or ():
        if not (math.isfinite(value) and value >= 0):
            raise VaecoreError(f"--thresholds: each must be a finite number >= 0, got {value}")
    if not 0 <= args.seed <= MAX_SEED:
        raise VaecoreError(f"--seed: must be between 0 and {MAX_SEED}, got {args.seed}")


def check_against_run(args: argparse.Namespace, loaded: Any) -> None:
    """Refuse indices outside the run's test split and latent dimensions."""
    from vaecore.errors import VaecoreError

    n_test, dims = len(loaded.dataset.test), loaded.model.latent_dim
    index = getattr(args, "input", None)
    if index is not None and not 0 <= index < n_test:
        raise VaecoreError(f"--input {index}: the test split has {n_test} inputs (0 to {n_test - 1})")
    bad = [d for d in getattr(args, "zero_dims", None) or () if not 0 <= d < dims]
    if bad:
        raise VaecoreError(f"--zero-dims {bad[0]}: the model has {dims} latent dimensions (0 to {dims - 1})")


ANALYSIS_COMMANDS = {
    **dict.fromkeys(("sample", "traverse", "interpolate", "analyze", "lso"), run_analysis),
    "curves": run_curves,
}
