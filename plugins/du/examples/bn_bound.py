"""Per-dimension BN scale and KL bound of du runs (README "BN-VAE preset: fixed scale").

python plugins/du/examples/bn_bound.py runs/du/bn_vae runs/du/long_bn_vae

For each run folder (its evaluated checkpoint, ``best`` by default): the spread of the BN weight
(the per-dimension scale of the normalised means), the smallest per-dimension KL of ``eval.json``
(evaluation mode: running statistics), and, on the evaluation split cut into batches of 100 with
``du`` in training mode (batch statistics, the regime of Zhu et al.'s bound; the encoder stays in
evaluation mode and the running statistics are restored), the per-dimension batch KL against
0.5 * (gamma^2 * s_d / (s_d + eps) + beta_d^2), s_d the batch variance of the raw means. The KL is
computed here from the posterior's means and variances, not by the plugin.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vaecore.restore import load_run


def batch_kl(loc: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    loc, var = loc.double(), var.double()
    return 0.5 * (loc.pow(2) + var - var.log() - 1).mean(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    print(
        "| run | scale min / max (std) | eval KL/dim min | batch KL/dim min | min (KL - bound) "
        "| dims below bound | AU | MI split |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for run_dir in args.runs:
        loaded = load_run(run_dir)
        model, x = loaded.model, getattr(loaded.dataset, loaded.config.eval.split).x
        du = model.plugins["du"]
        bn, gamma = du.bn, du.options.gamma
        saved = {k: v.clone() for k, v in bn.state_dict().items()}
        kls, gaps = [], []
        du.train()
        with torch.no_grad():
            for i in range(0, len(x) - args.batch + 1, args.batch):
                xb = x[i : i + args.batch]
                raw, _, _ = model.encoder(xb)
                post, _ = model.encode(xb, model.context(training=True, warmup=1.0))
                kl = batch_kl(post.loc, post.var)
                s = raw.double().var(0, unbiased=False)
                bound = 0.5 * (gamma**2 * s / (s + bn.eps) + bn.bias.double().pow(2))
                kls.append(kl)
                gaps.append(kl - bound)
        du.eval()
        bn.load_state_dict(saved)
        kls, gaps = torch.stack(kls), torch.stack(gaps)
        w = bn.weight.detach()
        r = json.loads((Path(run_dir) / "eval.json").read_text())
        below = int((gaps < -1e-6).any(0).sum())
        print(
            f"| {Path(run_dir).name} | {w.min():.3f} / {w.max():.3f} ({w.std():.3f}) | {min(r['kl_per_dim']):.3f} "
            f"| {kls.min():.3f} | {gaps.min():+.3f} | {below}/{w.numel()} | {r['au']} | {r['mi_split']:.2f} |"
        )


if __name__ == "__main__":
    main()
