"""Active units, KL and mutual information over training, from the checkpoints a run kept
(``train.keep_every``): how the latent code of a run collapses, epoch by epoch.

    python benchmarks/collapse_testbed/trajectory.py runs/collapse_full runs/collapse_full_mlp \
        --out benchmarks/collapse_testbed/trajectory.json

Every ``checkpoints/epoch_NNNN.pt`` of every run is evaluated with the core's diagnostics (no NLL,
no re-encoding error) on the same ``--rows`` rows of ``--split``, drawn at random with
``data.subset = "random"``.
Prints a markdown table and writes the numbers (per-dimension KL and activity included) as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vaecore import load_run
from vaecore.evaluation import evaluate

COLUMNS = ("au", "kl", "mi_batch", "mi_split", "elbo", "pca_components")


def trajectory(run_dir: Path, split: str, rows: int) -> list[dict]:
    """The diagnostics of each kept checkpoint of ``run_dir``, in epoch order."""
    overrides = ["data.subset=random", f"data.{split}_size={rows}", "eval.probes=false", "eval.reencoding=false"]
    points = []
    for path in sorted((run_dir / "checkpoints").glob("epoch_*.pt")):
        loaded = load_run(run_dir, overrides, path)
        with torch.no_grad():
            results = evaluate(loaded.model, loaded.dataset.split(split), loaded.config.eval, nll_samples=0)
        points.append({"epoch": loaded.state["epoch"], **results})
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--split", choices=("train", "valid", "test"), default="valid")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    table = {run.name: trajectory(run, args.split, args.rows) for run in args.runs}
    print("| run | epoch | " + " | ".join(COLUMNS) + " |")
    print("| --- | ---: |" + " ---: |" * len(COLUMNS))
    for run, points in table.items():
        for point in points:
            cells = " | ".join(f"{point[c]:.2f}" if isinstance(point[c], float) else str(point[c]) for c in COLUMNS)
            print(f"| {run} | {point['epoch']} | {cells} |")
    if args.out:
        args.out.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
