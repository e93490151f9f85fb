"""InteL acceptance experiment 1 (paper section 6.1, fig. 4): does the model fill the hole?

Trains a plain VAE and an InteL-VAE (``circle`` mapping on the circle data, ``holes`` mapping on
the two-hole "infinity" data), draws prior samples x = decoder mean(g(y)), y ~ N(0, I), and
measures the fraction of samples that land inside a hole: farther than 3 noise std (0.15) from
the clean curve *and* enclosed by it (circle: radius < 0.85; infinity: inside a lobe of the
lemniscate). The data itself scores ~0. Writes ``hole_density.json``, ``holes.png`` and
``results.csv`` (one row per run, the format ``docs/gen_tables.py`` reads: the model, seed, epoch,
data sizes, training time and both fractions).

    python plugins/intel/examples/hole_experiment.py --out /tmp/intel_holes [--epochs 150] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import torch

from vaecore.config import load_config
from vaecore.data.synthetic import INFINITY_SCALE
from vaecore.trainer import train_or_reuse

HERE = Path(__file__).parent
RUNS = [("circle", "vae"), ("circle", "intel"), ("infinity", "vae"), ("infinity", "intel")]
MARGIN = 0.15  # 3 x the data noise (0.05)


def clean_curve(name: str, n: int = 20000) -> torch.Tensor:
    t = torch.linspace(0, 2 * math.pi, n)
    if name == "circle":
        return torch.stack([t.cos(), t.sin()], 1)
    den = 1 + t.sin().pow(2)
    return INFINITY_SCALE * torch.stack([t.cos() / den, t.sin() * t.cos() / den], 1)


def enclosed(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "circle":
        return x.norm(dim=-1) < 1
    a = INFINITY_SCALE
    return x.pow(2).sum(-1).pow(2) < a**2 * (x[:, 0].pow(2) - x[:, 1].pow(2))


def hole_fraction(name: str, x: torch.Tensor) -> float:
    far = torch.cdist(x, clean_curve(name)).min(dim=1).values > MARGIN
    return float((far & enclosed(name, x)).float().mean())


def off_curve_fraction(name: str, x: torch.Tensor) -> float:
    return float((torch.cdist(x, clean_curve(name)).min(dim=1).values > MARGIN).float().mean())


def main() -> None:
    torch.set_num_threads(1)  # the runs are small; one thread avoids oversubscribing shared CPUs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--samples", type=int, default=5000)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    rows: list[dict] = []
    drawn: dict[tuple[str, str], torch.Tensor] = {}
    data_x: dict[str, torch.Tensor] = {}
    for seed in args.seeds:
        for data, method in RUNS:
            run_dir = args.out / f"{data}_{method}_s{seed}"
            overrides = [f"train.seed={seed}"] + ([f"train.epochs={args.epochs}"] if args.epochs else [])
            config = load_config(HERE / f"{data}_{method}.toml", overrides)
            run = train_or_reuse(config, run_dir, checkpoint=run_dir / "checkpoints" / "last.pt")
            model, dataset = run.model, run.dataset
            torch.manual_seed(1000 + seed)
            with torch.no_grad():
                x = model.sample_prior(args.samples)
            data_x[data] = dataset.test.x
            key = f"{data}/{method}"
            results.setdefault(key, {"hole_fraction": [], "off_curve_fraction": []})
            results[key]["hole_fraction"].append(hole_fraction(data, x))
            results[key]["off_curve_fraction"].append(off_curve_fraction(data, x))
            rows.append(
                {
                    "run": run_dir.name,
                    "model": key,
                    "status": "done",
                    "train.seed": seed,
                    **run.budget(),
                    "hole_fraction": results[key]["hole_fraction"][-1],
                    "off_curve_fraction": results[key]["off_curve_fraction"][-1],
                }
            )
            if seed == args.seeds[0]:
                drawn[(data, method)] = x
    for data in ("circle", "infinity"):
        results[f"{data}/data"] = {
            "hole_fraction": [hole_fraction(data, data_x[data])],
            "off_curve_fraction": [off_curve_fraction(data, data_x[data])],
        }
    for value in results.values():
        for metric in list(value):
            runs = value[metric]
            value[f"{metric}_mean"] = sum(runs) / len(runs)
    (args.out / "hole_density.json").write_text(json.dumps(results, indent=2))
    with open(args.out / "results.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for key, value in results.items():
        hole, off = value["hole_fraction_mean"], value["off_curve_fraction_mean"]
        print(f"{key:18s} hole {hole:.4f}  off-curve {off:.4f}  runs {value['hole_fraction']}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(10.5, 6.5))
    for row, data in enumerate(("circle", "infinity")):
        panels = [("data (test)", data_x[data]), ("VAE", drawn[(data, "vae")]), ("InteL-VAE", drawn[(data, "intel")])]
        for col, (title, pts) in enumerate(panels):
            ax = axes[row, col]
            pts = pts[:3000]
            ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
            key = f"{data}/{'data' if col == 0 else ('vae' if col == 1 else 'intel')}"
            seeds = "" if col == 0 else f" (mean of {len(args.seeds)} seeds; seed {args.seeds[0]} shown)"
            ax.set_title(f"{data}: {title}\nin hole {results[key]['hole_fraction_mean']:.1%}{seeds}", fontsize=8)
            lim = 1.6 if data == "circle" else 2.6
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim * (0.75 if data == "infinity" else 1), lim * (0.75 if data == "infinity" else 1))
            ax.set_aspect("equal")
            ax.set_xlabel("x1")
            ax.set_ylabel("x2")
    fig.tight_layout()
    fig.savefig(args.out / "holes.png", dpi=110)
    print(f"wrote {args.out / 'holes.png'}, {args.out / 'hole_density.json'} and {args.out / 'results.csv'}")


if __name__ == "__main__":
    main()
