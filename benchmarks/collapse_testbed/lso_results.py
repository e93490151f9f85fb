"""The LSO columns of the NE reproduction (NE paper section 5.4): run ``vaecore.analysis.lso`` on
every finished run of one or more sweeps and write their rows with the LSO numbers added.

    python benchmarks/collapse_testbed/lso_results.py SWEEP_OUT [SWEEP_OUT ...] RESULTS_CSV

For each finished run of each ``SWEEP_OUT/results.csv`` (the sweeps' columns must agree; best
checkpoint, the run's own test split): 16 held-out test images, 5 random N(0, I) initialisations and
the encoder's initialisation, 2000 Adam steps (lr 0.05, the default of ``vaecore lso``) on the codes
with the decoder frozen. Adds ``lso.iterations_random`` and ``lso.iterations_encoder`` (steps until
the loss is within 0.1 nats per image of its final value, averaged over images and initialisations),
``lso.final_random`` (the final -log p(x|z) per image from random starts, nats) and ``lso.spread``
(the mean pairwise distance between the codes reached from different random starts). The figures and
numbers of each run go to ``RUN/analysis/lso``. Rows of the other runs are copied unchanged.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

import torch

import vaecore
from vaecore import analysis

THRESHOLD = "0.1"
ITERATIONS = 2000
FINISHED = ("done", "reused")


def lso_columns(run_dir: Path) -> dict[str, float]:
    torch.manual_seed(0)
    numbers = analysis.lso(vaecore.load_run(run_dir), run_dir / "analysis" / "lso", iterations=ITERATIONS)
    its = numbers["iterations_to_converge"]
    return {
        "lso.iterations_random": statistics.fmean(r[THRESHOLD] for r in its["random"]),
        "lso.iterations_encoder": its["encoder"][THRESHOLD],
        "lso.final_random": statistics.fmean(numbers["final_loss"]["random"]),
        "lso.spread": numbers["spread"]["mean_pairwise_distance"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", type=Path, nargs="+", help="the sweep folders (each holding results.csv)")
    parser.add_argument("out", type=Path, help="the results file to write")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small models on a shared machine: more threads only contend
    rows: list[dict[str, str]] = []
    columns: list[str] = []
    for sweep in args.sweeps:
        with (sweep / "results.csv").open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if columns and reader.fieldnames != columns:
                parser.error(f"{sweep / 'results.csv'}: other columns than {args.sweeps[0] / 'results.csv'}")
            columns = list(reader.fieldnames or [])
            sweep_rows = list(reader)
        for row in sweep_rows:
            if row["status"] in FINISHED:
                row.update({k: f"{v:.6g}" for k, v in lso_columns(sweep / row["run"]).items()})
                print(f"{row['run']}: " + ", ".join(f"{k} {row[k]}" for k in row if k.startswith("lso.")))
        rows += sweep_rows
    added = sorted({k for row in rows for k in row if k not in columns})
    with args.out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns + added, restval="")
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
