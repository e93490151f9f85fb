"""InteL acceptance experiment 3 (paper section 6.3, fig. 7 left): Fashion-MNIST, Hoyer sparsity
and a generation-quality proxy against gamma.

Trains a plain VAE and InteL-VAEs with the ``sparse`` mapping for each gamma and reads the Hoyer
score of the representations g(mean) (appendix C.3: each dimension scaled to unit std over the test
split, then averaged over examples) from the core's evaluation in ``eval.json`` (written at the end
of training; ``--cli-eval`` recomputes it with ``vaecore eval <run> --nll-samples 0``).

Generation-quality proxy (FID needs an Inception network we do not ship): **FD-PCA**, the Frechet
distance between 2000 prior samples (decoder means, y ~ N(0, I) -> g -> decoder) and the 2000 test
images, both projected on the top 50 principal components of the training images:
||m1 - m2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)). Lower is better; the test images against the
training images score the floor.

Every configuration is trained once per ``--seeds`` value. Writes ``fashion_sparsity.json`` (every
run), ``fashion_sparsity.png`` (mean and std over the seeds per gamma) and ``results.csv`` (one
row per run, the format ``docs/gen_tables.py`` reads).

    python plugins/intel/examples/fashion_sparsity.py --out /tmp/intel_fashion [--gammas 0 3 10 30] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from vaecore.config import load_config
from vaecore.data import load_dataset
from vaecore.trainer import train_or_reuse

HERE = Path(__file__).parent


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    m1, m2 = a.mean(0), b.mean(0)
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr((C1 C2)^(1/2)) from the eigenvalues of C1^(1/2) C2 C1^(1/2) (symmetric PSD)
    w, v = np.linalg.eigh(c1)
    s1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(s1 @ c2 @ s1)
    return float(((m1 - m2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.sqrt(np.clip(cross, 0, None)).sum())


def main() -> None:
    torch.set_num_threads(1)  # the runs are small; one thread avoids oversubscribing shared CPUs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.0, 3.0, 10.0, 30.0])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--cli-eval", action="store_true", help="re-run `vaecore eval` on every run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    base = load_config(HERE / "fashion_vae.toml")
    dataset = load_dataset(base.data)
    train = dataset.train.x.reshape(len(dataset.train), -1).numpy()
    test = dataset.test.x.reshape(len(dataset.test), -1).numpy()
    centre = train.mean(0)
    _, _, vt = np.linalg.svd(train - centre, full_matrices=False)
    basis = vt[:50].T
    project = lambda x: (x - centre) @ basis  # noqa: E731
    floor = frechet(project(test), project(train[: len(test)]))
    runs = [("vae", None)] + [("sparse", g) for g in args.gammas]
    rows = []
    for seed in args.seeds:
        for method, gamma in runs:
            model_name = "vae" if gamma is None else f"sparse_g{gamma:g}"
            run_dir = args.out / f"{model_name}_s{seed}"
            overrides = [f"train.seed={seed}"] + ([f"train.epochs={args.epochs}"] if args.epochs else [])
            if gamma is not None:
                overrides.append(f"plugins.0.gamma={gamma}")
            run = train_or_reuse(load_config(HERE / f"fashion_{method}.toml", overrides), run_dir)
            # Hoyer (and the ELBO) from the core's evaluation of the best checkpoint: the eval.json
            # that ends training, which `vaecore eval <run> --nll-samples 0` recomputes (--cli-eval)
            if args.cli_eval:
                subprocess.run(
                    ["vaecore", "eval", str(run_dir), "--nll-samples", "0", "--set", "train.progress=false"],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
            evaluation = json.loads((run_dir / "eval.json").read_text())
            torch.manual_seed(123 + seed)
            with torch.no_grad():
                samples = run.model.sample_prior(len(test)).reshape(len(test), -1).numpy()
            row = {
                "run": run_dir.name,
                "model": model_name,
                "gamma": "" if gamma is None else gamma,
                "status": "done",
                "train.seed": seed,
                **run.budget(),
                "hoyer": evaluation["hoyer"],
                "fd_pca": frechet(project(samples), project(test)),
                "elbo": evaluation["elbo"],
                "kl": evaluation["kl"],
                "au": evaluation.get("au"),
                "sparsity_loss": evaluation.get("intel.sparsity"),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    (args.out / "fashion_sparsity.json").write_text(json.dumps({"fd_pca_floor": floor, "runs": rows}, indent=2))
    with open(args.out / "results.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"FD-PCA of the test images against training images (floor): {floor:.2f}")
    summary = {}
    for model_name in dict.fromkeys(r["model"] for r in rows):
        members = [r for r in rows if r["model"] == model_name]
        summary[model_name] = {
            k: (
                statistics.fmean(r[k] for r in members),
                statistics.stdev(r[k] for r in members) if len(members) > 1 else 0.0,
            )
            for k in ("hoyer", "fd_pca", "elbo")
        }
        h, f, e = (summary[model_name][k] for k in ("hoyer", "fd_pca", "elbo"))
        print(f"{model_name:14s} hoyer {h[0]:.3f} ± {h[1]:.3f}  FD-PCA {f[0]:.2f} ± {f[1]:.2f}  elbo {e[0]:.2f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    (vae_h, vae_hs), (vae_f, vae_fs) = summary["vae"]["hoyer"], summary["vae"]["fd_pca"]
    ax.errorbar([vae_h], [vae_f], xerr=[vae_hs], yerr=[vae_fs], fmt="s", color="k", label="VAE")
    sparse = [(g, summary[f"sparse_g{g:g}"]) for g in args.gammas]
    ax.errorbar(
        [v["hoyer"][0] for _, v in sparse],
        [v["fd_pca"][0] for _, v in sparse],
        xerr=[v["hoyer"][1] for _, v in sparse],
        yerr=[v["fd_pca"][1] for _, v in sparse],
        fmt="o-",
        label="InteL-VAE (sparse)",
    )
    for g, v in sparse:
        point = (v["hoyer"][0], v["fd_pca"][0])
        ax.annotate(f"$\\gamma$={g:g}", point, xytext=(5, 5), textcoords="offset points", fontsize=7)
    ax.set_xlabel("Hoyer sparsity of g(mean) (higher: sparser)")
    ax.set_ylabel("FD-PCA50 (lower: better samples)")
    seeds = ", ".join(map(str, args.seeds))
    ax.set_title(f"Fashion-MNIST, mean ± sample std over seeds {seeds}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "fashion_sparsity.png", dpi=110)
    print(f"wrote {args.out / 'fashion_sparsity.json'} and {args.out / 'fashion_sparsity.png'}")
    return None


if __name__ == "__main__":
    sys.exit(main())
