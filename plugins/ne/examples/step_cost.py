"""CPU cost of the NE term per training step and per validation pass, on one thread.

Runs ``--steps`` training steps (the core's ``Trainer.train_epoch``: forward, bound, NE term,
backward, Adam) and one validation pass of ``--valid`` rows for a config without plugins and with
each NE entry given, and prints CPU milliseconds per step (process time, robust to other jobs on a
shared machine). Example, from the repository root:

    OMP_NUM_THREADS=1 python plugins/ne/examples/step_cost.py \\
        benchmarks/collapse_testbed/pixelcnn_vae.toml --steps 5 \\
        --ne '{}' --ne '{"decoding": "greedy"}' --ne '{"decoding": "teacher_forced_approximation"}'

``--ne '{}'`` is the plugin's defaults; the first row (``-``) is the config with no plugin.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from vaecore.config import load_config, read_toml
from vaecore.trainer import Trainer


def measure(path: str, entry: dict | None, steps: int, valid: int) -> tuple[float, float]:
    raw = read_toml(path)
    raw["plugins"] = [] if entry is None else [{"name": "ne", **entry}]
    batch = raw["train"]["batch_size"]
    raw["data"] = {**raw["data"], "train_size": steps * batch, "valid_size": valid}
    raw["train"] = {**raw["train"], "threads": 1, "progress": False}
    config = load_config(None, raw=raw)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, run_dir)
        trainer.epoch = 1
        start = time.process_time()
        trainer.train_epoch()
        train_ms = 1000 * (time.process_time() - start) / steps
        start = time.process_time()
        trainer.validate()
        valid_ms = 1000 * (time.process_time() - start)
    return train_ms, valid_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--valid", type=int, default=100, help="validation rows")
    parser.add_argument("--ne", action="append", default=[], help="an NE entry's options as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    entries: list[dict | None] = [None, *(json.loads(e) for e in args.ne)]
    print(f"{args.config}: {args.steps} steps, validation on {args.valid} rows, CPU ms (one thread)")
    print("| NE entry | ms / training step | ms / validation pass |")
    print("| --- | ---: | ---: |")
    for entry in entries:
        train_ms, valid_ms = measure(args.config, entry, args.steps, args.valid)
        label = "-" if entry is None else json.dumps(entry)
        print(f"| `{label}` | {train_ms:.0f} | {valid_ms:.0f} |", flush=True)


if __name__ == "__main__":
    main()
