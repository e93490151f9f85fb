"""InteL acceptance experiment 2 (paper section 6.2, table 2): MNIST-01 with a 1-D latent.

Writes MNIST digits 0 and 1 (statically binarized at 0.5; 10k train / 1k valid / 2k test as in
table C.1) to an .npz, trains a plain VAE and an InteL-VAE (1-D ``cluster`` map, c1 = 5,
c2 = 0.2), fits a logistic-regression classifier on the binarized training digits, and classifies
prior samples (decoder means of y ~ N(0, 1) through g): "uncertainty" is the fraction of samples
whose predicted class has probability < 0.8, "'1' proportion" the fraction classified as 1. For
InteL also the "class split": the share of test digits encoded on their class's side of the gap.
Writes ``mnist01.json``, ``mnist01_samples.png`` and ``results.csv`` (one row per run, as
``docs/gen_tables.py`` reads). Runs already finished in ``--out`` with the same config are reused,
not trained again (``vaecore.train_or_reuse``).

    python plugins/intel/examples/mnist01_experiment.py --out /tmp/intel_mnist01 [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from vaecore_intel import IntelPlugin

from vaecore import train_or_reuse
from vaecore.config import load_config
from vaecore.testing import shared_data_dir

HERE = Path(__file__).parent
NPZ = Path("/tmp/vaecore_intel/mnist01.npz")  # the path the configs name


def write_mnist01(source: Path, target: Path) -> dict[str, int]:
    with np.load(source) as a:
        xtr, ytr, xte, yte = a["x_train"], a["y_train"], a["x_test"], a["y_test"]
    gen = np.random.default_rng(0)
    keep_tr = np.flatnonzero(ytr <= 1)
    keep_tr = keep_tr[gen.permutation(len(keep_tr))]
    keep_te = np.flatnonzero(yte <= 1)[:2000]
    binar = lambda x: (x >= 128).astype(np.uint8)  # noqa: E731
    arrays = {
        "x_train": binar(xtr[keep_tr[:10000]]),
        "y_train": ytr[keep_tr[:10000]],
        "x_valid": binar(xtr[keep_tr[10000:11000]]),
        "y_valid": ytr[keep_tr[10000:11000]],
        "x_test": binar(xte[keep_te]),
        "y_test": yte[keep_te],
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(target, **arrays)
    return {k: len(v) for k, v in arrays.items() if k.startswith("x")}


def train_classifier(x: torch.Tensor, y: torch.Tensor) -> torch.nn.Linear:
    """Logistic regression (L2 1e-4), full-batch L-BFGS."""
    torch.manual_seed(0)
    clf = torch.nn.Linear(x.shape[1], 2)
    opt = torch.optim.LBFGS(clf.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(clf(x), y) + 1e-4 * clf.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return clf


@torch.no_grad()
def class_split(model, x: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of the digits whose posterior mean lies on their class's side of the map's gap
    (1.0: the gap separates 0s from 1s; about 0.5: both classes share one side)."""
    (intel,) = [p for p in model.stack.plugins.values() if isinstance(p, IntelPlugin)]
    posterior, _ = model.encode(x, model.context(training=False))
    agree = float((intel.cluster_of(posterior.mean) == labels).float().mean())
    return max(agree, 1.0 - agree)


def main() -> None:
    torch.set_num_threads(1)  # the runs are small; one thread avoids oversubscribing shared CPUs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--methods", nargs="+", default=["vae", "intel"], choices=["vae", "intel"])
    parser.add_argument(
        "--intel-set", action="append", default=[], metavar="KEY=VALUE", help="override for the InteL config"
    )
    args = parser.parse_args()
    shared = shared_data_dir()
    if shared is None or not (shared / "mnist.npz").is_file():
        raise SystemExit("needs shared/data/mnist.npz (set VAECORE_SHARED_DATA)")
    sizes = write_mnist01(shared / "mnist.npz", NPZ)
    with np.load(NPZ) as a:
        xtr = torch.from_numpy(a["x_train"].reshape(len(a["x_train"]), -1).astype(np.float32))
        ytr = torch.from_numpy(a["y_train"].astype(np.int64))
        xte = torch.from_numpy(a["x_test"].reshape(len(a["x_test"]), -1).astype(np.float32))
        yte = torch.from_numpy(a["y_test"].astype(np.int64))
    clf = train_classifier(xtr, ytr)
    with torch.no_grad():
        test_acc = float((clf(xte).argmax(1) == yte).float().mean())
        data_probs = torch.softmax(clf(xte), 1)
    results: dict[str, Any] = {
        "data": {
            "uncertainty": [float((data_probs.max(1).values < 0.8).float().mean())],
            "one_proportion": [float((data_probs.argmax(1) == 1).float().mean())],
        }
    }
    images: dict[tuple[str, int], torch.Tensor] = {}
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        for method in args.methods:
            run_dir = args.out / f"{method}_s{seed}"
            overrides = [f"train.seed={seed}", f"data.path={NPZ}"]
            overrides += [f"train.epochs={args.epochs}"] if args.epochs else []
            overrides += args.intel_set if method == "intel" else []
            run = train_or_reuse(load_config(HERE / f"mnist01_{method}.toml", overrides), run_dir)
            model = run.model
            evaluation = json.loads((run_dir / "eval.json").read_text())
            torch.manual_seed(1000 + seed)
            with torch.no_grad():
                x = model.sample_prior(args.samples).reshape(args.samples, -1)
                probs = torch.softmax(clf(x), 1)
            row = results.setdefault(method, {"uncertainty": [], "one_proportion": [], "test_elbo": []})
            if method == "intel":
                row.setdefault("class_split", []).append(class_split(model, xte, yte))
            row["uncertainty"].append(float((probs.max(1).values < 0.8).float().mean()))
            row["one_proportion"].append(float((probs.argmax(1) == 1).float().mean()))
            row["test_elbo"].append(float(evaluation["elbo"]))
            rows.append(
                {
                    "run": run_dir.name,
                    "model": method,
                    "status": "done",
                    "train.seed": seed,
                    **run.budget(),
                    **{k: row[k][-1] for k in ("uncertainty", "one_proportion", "test_elbo")},
                    "class_split": row["class_split"][-1] if method == "intel" else "",
                }
            )
            # decoder means along the prior's quantiles, in order, for the figure
            q = torch.linspace(0.01, 0.99, 30)
            y = torch.distributions.Normal(0.0, 1.0).icdf(q).unsqueeze(1)
            with torch.no_grad():
                params = model.decode(model.latent_map(y, model.context(training=False)))
                images[method, seed] = model.likelihood.mean(params).reshape(30, 28, 28)
    for row in results.values():
        for metric in list(row):
            row[f"{metric}_mean"] = float(np.mean(row[metric]))
            row[f"{metric}_std"] = float(np.std(row[metric]))
    results["classifier_test_accuracy"] = test_acc
    results["sizes"] = sizes
    (args.out / "mnist01.json").write_text(json.dumps(results, indent=2))
    with open(args.out / "results.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for name in ("data", *args.methods):
        r = results[name]
        unc, unc_sd, ones = r["uncertainty_mean"], r["uncertainty_std"], r["one_proportion_mean"]
        print(f"{name:6s} uncertainty {unc:.2%} +- {unc_sd:.2%}   '1' proportion {ones:.2%}")
    print(f"classifier test accuracy {test_acc:.4f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(images), 1, figsize=(12, 0.8 * len(images)), squeeze=False)
    for ax, (method, seed) in zip(axes[:, 0], sorted(images, key=lambda key: (args.methods.index(key[0]), key[1]))):
        strip = torch.cat(list(images[method, seed]), dim=1).numpy()
        ax.imshow(strip, cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
        label = "VAE" if method == "vae" else "InteL-VAE"
        unc = results[method]["uncertainty"][args.seeds.index(seed)]
        ax.set_title(f"{label}, seed {seed} (uncertain {unc:.1%}): decoder mean at prior quantiles 1%..99%", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "mnist01_samples.png", dpi=110)
    print(f"wrote {args.out / 'mnist01.json'} and {args.out / 'mnist01_samples.png'}")


if __name__ == "__main__":
    main()
