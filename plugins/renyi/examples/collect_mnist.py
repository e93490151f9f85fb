"""Gather the MNIST acceptance runs into the README table.

    python plugins/renyi/examples/collect_mnist.py runs   # expects runs/{vae,iwae,vrmax}_k{5,50}/

Reads, per run, ``eval_k5000_test_every10.json`` (``vaecore eval --nll-samples 5000`` on the
every-10th test subset) and ``eval_k500_test_full.json`` (K = 500 on the full test split, the
evaluation that ends training), and the last line of ``metrics.jsonl``. Runs without their
K = 5000 evaluation are left out of the table.
"""

import json
import sys
from pathlib import Path

PUBLISHED = {("vae", 5): -86.47, ("vae", 50): -86.35, ("iwae", 5): -85.41, ("iwae", 50): -84.80}
PUBLISHED |= {("vrmax", 5): -85.42, ("vrmax", 50): -84.81}
LABEL = {"vae": "VAE (alpha = 1)", "iwae": "IWAE (alpha = 0)", "vrmax": "VR-max (alpha = -inf)"}

root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs")
print(
    "| method | K | published LL (~3280 ep., dynamic bin.) | test LL, K=5000, 1,000 test images "
    "| test LL, K=500, full test | valid bound L_alpha (K) | epochs | active units |"
)
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for k in (5, 50):
    for name in ("vae", "iwae", "vrmax"):
        run = root / f"{name}_k{k}"
        if not (run / "eval_k5000_test_every10.json").exists():
            continue
        sub = json.loads((run / "eval_k5000_test_every10.json").read_text())
        full = json.loads((run / "eval_k500_test_full.json").read_text())
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        print(
            f"| {LABEL[name]} | {k} | {PUBLISHED[name, k]:.2f} | {-sub['nll']:.2f} ± {sub['nll_stderr']:.2f} "
            f"| {-full['nll']:.2f} ± {full['nll_stderr']:.2f} | {last['valid.bound']:.2f} | {last['epoch']} "
            f"| {sub['au']} |"
        )
