"""Tokens per second of the vaecore training step of an LSTM-VAE against a plain PyTorch loop.

    python plugins/text/benchmarks/bench_text.py [--data KJV_FILE] [--repeats 5] [--steps 20] [--threads 1]

Both train the same model (the reproduction's: embedding 64, LSTM 128, latent 16, z at the initial
state and every input, categorical over the vocabulary of 5,000 random KJV training verses of at
most 24 tokens) on the same batches of 32 verses. The vaecore step is what the trainer does per
batch (the hooks, the ELBO with the KL weight, backward, Adam); the plain loop is the same
computation written directly (encoder, reparameterisation, teacher-forced decoder, masked cross
entropy, analytic KL, backward, Adam) on a copy of the modules. Variants are timed in interleaved
rounds; the script prints the median over rounds of tokens per second (words and ``</s>``,
padding not counted), wall-clock and CPU (process) time, and the ratio vaecore / plain.
Default data: ``kjv_verses.tsv.gz`` in the project's shared data folder.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from vaecore_text.vocab import PAD_ID

from vaecore.data import load_dataset
from vaecore.hooktypes import set_context
from vaecore.objectives import warmup_factor
from vaecore.testing import load, make_registry, shared_data_dir
from vaecore.trainer import Trainer

MODEL = {
    "latent_dim": 16,
    "encoder": {"kind": "lstm", "embed": 64, "hidden": 128},
    "decoder": {"kind": "lstm", "embed": 64, "hidden": 128, "z_at": "both"},
    "likelihood": {"kind": "categorical"},
}


def config(data: Path) -> dict:
    return {
        "data": {
            "name": "kjv",
            "path": str(data),
            "max_length": 25,
            "valid_rows": 1000,
            "test_rows": 1000,
            "train_size": 5000,
            "vocab_size": 4000,
            "min_count": 2,
        },
        "model": MODEL,
        "train": {"epochs": 1, "batch_size": 32, "lr": 1e-3, "seed": 0, "progress": False},
        "plugins": [{"name": "text"}],
    }


def vaecore_steps(trainer: Trainer, batches) -> tuple[float, float]:
    model, ctx, opt, cfg = trainer.model, trainer.ctx, trainer.optimizer, trainer.config.train
    model.train()
    started, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        warm = warmup_factor(ctx.step, trainer.steps_per_epoch, cfg.kl_warmup.start, cfg.kl_warmup.epochs)
        set_context(ctx, training=True, kl_weight=cfg.beta * warm, warmup=warm, batch=batch)
        _, _, loss = trainer._objective(batch, ctx, trainer.train_samples)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        set_context(ctx, step=ctx.step + 1)
    return time.perf_counter() - started, time.process_time() - cpu


class PlainLoop:
    """The same LSTM-VAE step in plain PyTorch, on copies of the vaecore model's modules."""

    def __init__(self, trainer: Trainer):
        self.encoder = copy.deepcopy(trainer.model.encoder).train()
        self.decoder = copy.deepcopy(trainer.model.decoder).train()
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        self.opt = torch.optim.Adam(params, lr=trainer.config.train.lr)

    def steps(self, batches) -> tuple[float, float]:
        started, cpu = time.perf_counter(), time.process_time()
        for batch in batches:
            x = batch.x
            loc, log_var, _ = self.encoder(x)
            z = loc + torch.randn_like(loc) * (0.5 * log_var).exp()
            logits = self.decoder(z, x)
            target = x[:, : logits.shape[1]]
            flat = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=PAD_ID, reduction="none")
            rec = flat.view(target.shape).sum(1)
            kl = 0.5 * (loc.pow(2) + log_var.exp() - 1 - log_var).sum(1)
            loss = (rec + kl).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="kjv_verses.tsv.gz (default: the shared data folder's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = shared_data_dir()
    data = args.data or (root / "kjv_verses.tsv.gz" if root else None)
    if data is None or not data.is_file():
        raise SystemExit("give --data kjv_verses.tsv.gz (no shared data folder found)")
    registry = make_registry()
    cfg = load(config(data), registry)
    dataset = load_dataset(cfg.data)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        trainer = Trainer(cfg, f"{tmp}/run", registry=registry, dataset=dataset)
        plain = PlainLoop(trainer)
        gen = torch.Generator().manual_seed(0)
        batches = [b for _, b in zip(range(args.steps), dataset.train.batches(32, gen))]
        tokens = sum(int((b.x != PAD_ID).sum()) for b in batches)
        vocab = len(dataset.meta["vocabulary"])
        print(f"{len(batches)} batches of 32 verses, {tokens} tokens, vocabulary {vocab}, {args.threads} thread(s)")
        vaecore_steps(trainer, batches[:2])  # warm-up
        plain.steps(batches[:2])
        runs: dict[str, list[tuple[float, float]]] = {"vaecore": [], "plain": []}
        for _ in range(args.repeats):
            runs["vaecore"].append(vaecore_steps(trainer, batches))
            runs["plain"].append(plain.steps(batches))
    rate = {name: statistics.median(tokens / w for w, _ in r) for name, r in runs.items()}
    cpu_rate = {name: statistics.median(tokens / c for _, c in r) for name, r in runs.items()}
    print(f"median over {args.repeats} rounds of {args.steps} steps")
    print(f"{'loop':<10} {'tokens/s (wall)':>16} {'tokens/s (cpu)':>15}")
    for name in runs:
        print(f"{name:<10} {rate[name]:>16.0f} {cpu_rate[name]:>15.0f}")
    print(
        f"ratio vaecore / plain: {rate['vaecore'] / rate['plain']:.3f} (wall), "
        f"{cpu_rate['vaecore'] / cpu_rate['plain']:.3f} (cpu)"
    )


if __name__ == "__main__":
    main()
