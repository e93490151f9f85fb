"""Training throughput of the vaecore trainer against a plain PyTorch loop on the same model and data.

Every contender trains the default MLP VAE (784-500-500-32, tanh, Bernoulli) on the shipped
binarized MNIST with Adam and batch 100:

* ``vaecore``: ``Trainer.train_epoch`` with no plugin;
* ``vaecore+stack``: the same with a three-plugin stack (``--stack``, default du,ne,intel, the
  ones that are installed);
* ``pythae``: pythae's ``BaseTrainer.train_step`` on a pythae VAE with the same networks (only
  when pythae is installed; skipped with a message otherwise).

The reference of each contender is a hand-written loop (the reparameterised ELBO, ``zero_grad``,
``backward``, ``step``) on **the contender's own networks and optimiser**, run between the
contender's steps on the batch the contender is about to train on: each batch the contender's
loader yields is first trained on by the plain loop twice (steps A and B), then by the contender.
The plain loop's time is that of step A plus the batch's fetch; the contender's is its epoch's
wall time less the plain steps. So both see the same parameters in the same memory, the same
batches and the same machine load within milliseconds. Separately built models do not: two
identical plain loops on model instances built one after the other in one process differed here
by 3 to 10 % in speed (four instances: 2.53 to 2.77 s an epoch), for as long as they ran (most
likely where the allocator placed their parameters), more than the overhead this script
measures. Step B is the null control: the "null control" line is the same loop measured the
same way, so its distance from 1 is the method's resolution.

Each round is one epoch of every contender; the ratio (plain time / contender time; 1.0 is no
overhead, below 1.0 slower than the plain loop) is the median over rounds after a warm-up round,
with a 95 % bootstrap interval of that median.

    python benchmarks/bench_train.py [--rounds 10] [--train-size 10000] [--threads 2]
        [--stack du,ne,intel] [--out benchmarks/results/bench_train.json]

``--out`` writes the results as JSON; ``docs/gen_tables.py`` renders ``benchmarks/README.md``'s
table from the committed file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn
from torch.nn import functional as F

from vaecore.config import structure_config
from vaecore.data.loaders import load_binarized_mnist
from vaecore.plugin_manager import ENTRY_POINT_GROUP, PluginRegistry
from vaecore.trainer import Trainer

LATENT, HIDDEN, BATCH = 32, 500, 100
STACK_OPTIONS = {"du": {}, "ne": {}, "intel": {"mapping": "sparse"}, "renyi": {"samples": 1}, "as": {}}
Encode = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def mlp_encoder() -> nn.Module:
    return nn.Sequential(
        nn.Linear(784, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 2 * LATENT)
    )


def mlp_decoder() -> nn.Module:
    return nn.Sequential(
        nn.Linear(LATENT, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 784)
    )


def plain_step(encode: Encode, decode: Callable[[torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer):
    """One hand-written training step on a batch: the ELBO with one reparameterised sample and
    the analytic KL, as a researcher writes it without a framework."""

    def step(x: torch.Tensor) -> None:
        mu, log_var = encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * log_var).exp()
        rec = F.binary_cross_entropy_with_logits(decode(z), x, reduction="none").sum(-1)
        kl = 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var).sum(-1)
        loss = (rec + kl).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


@attrs.define
class Timing:
    """The seconds one epoch spent in each part (see :class:`Interleaved`)."""

    plain_a: float = 0.0
    plain_b: float = 0.0
    inside: float = 0.0


class Interleaved:
    """A contender's batch iterable that trains the plain loop twice on each batch before the
    contender gets it, timing those steps and the fetch of the batch."""

    def __init__(
        self, batches: Iterable[Any], step: Callable[[torch.Tensor], None], inputs: Callable[[Any], Any], timing: Timing
    ):
        self._batches, self._step, self._inputs, self.timing = batches, step, inputs, timing

    def __getattr__(self, name: str) -> Any:  # pythae reads its loader's dataset
        return getattr(self._batches, name)

    def __len__(self) -> int:
        return len(self._batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        batches, timing = iter(self._batches), self.timing
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                timing.inside += time.perf_counter() - start
                return
            x = self._inputs(batch)
            fetched = time.perf_counter()
            self._step(x)
            between = time.perf_counter()
            self._step(x)
            end = time.perf_counter()
            timing.plain_a += between - fetched
            timing.plain_b += end - between
            timing.inside += end - start
            yield batch


@attrs.define
class Contender:
    """An epoch of a framework; ``interleave`` makes its next epochs' batches interleaved with the
    plain loop (returning where their times accumulate) and ``restore`` undoes that."""

    epoch: Callable[[], None]
    interleave: Callable[[], Timing]
    restore: Callable[[], None]


class _InterleavedSplit:
    """A vaecore :class:`~vaecore.data.Split` whose ``batches`` are interleaved."""

    def __init__(self, split: Any, step: Callable[[torch.Tensor], None]):
        self._split, self.step = split, step
        self.timing = Timing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._split, name)

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Interleaved:
        return Interleaved(self._split.batches(batch_size, generator), self.step, lambda b: b.x, self.timing)


def vaecore_contender(train_size: int, plugins: list[dict], run_dir: str) -> Contender:
    raw = {
        "data": {"train_size": train_size},
        "train": {"batch_size": BATCH, "progress": False, "epochs": 10_000},
        "plugins": plugins,
    }
    trainer = Trainer(structure_config(raw, PluginRegistry()), run_dir)
    model = trainer.model

    def encode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_var, _ = model.encoder(x)
        return loc, log_var

    split = _InterleavedSplit(trainer.dataset.train, plain_step(encode, model.decoder, trainer.optimizer))
    dataset = trainer.dataset

    def epoch() -> None:
        trainer.epoch += 1
        trainer.train_epoch()

    def interleave() -> Timing:
        split.timing = Timing()
        trainer.dataset = attrs.evolve(dataset, train=split)
        return split.timing

    def restore() -> None:
        trainer.dataset = dataset

    return Contender(epoch, interleave, restore)


def pythae_contender(x: torch.Tensor, out_dir: str) -> Contender | None:
    try:
        from pythae.data.datasets import BaseDataset
        from pythae.models import VAE, VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
        from pythae.trainers import BaseTrainer, BaseTrainerConfig
    except ImportError:
        return None

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp_encoder()

        def forward(self, x):  # type: ignore[override]
            mu, log_var = self.net(x.reshape(x.shape[0], -1)).chunk(2, dim=-1)
            return ModelOutput(embedding=mu, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp_decoder()

        def forward(self, z):  # type: ignore[override]
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    config = VAEConfig(input_dim=(784,), latent_dim=LATENT, reconstruction_loss="bce")
    model = VAE(config, encoder=Encoder(), decoder=Decoder())
    train_config = BaseTrainerConfig(
        output_dir=out_dir, per_device_train_batch_size=BATCH, learning_rate=1e-3, num_epochs=1, no_cuda=True
    )
    trainer = BaseTrainer(model, BaseDataset(x, torch.zeros(len(x))), training_config=train_config)
    trainer.prepare_training()
    loader = trainer.train_loader
    counter = {"epoch": 0}

    def encode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_var = model.encoder.net(x).chunk(2, dim=-1)
        return mu, log_var

    step = plain_step(encode, model.decoder.net, trainer.optimizer)

    def epoch() -> None:
        counter["epoch"] += 1
        trainer.train_step(counter["epoch"])

    def interleave() -> Timing:
        timing = Timing()
        trainer.train_loader = Interleaved(loader, step, lambda batch: batch["data"].flatten(1), timing)
        return timing

    def restore() -> None:
        trainer.train_loader = loader

    return Contender(epoch, interleave, restore)


def installed_stack(names: list[str]) -> list[dict]:
    available = {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return [{"name": n, **STACK_OPTIONS.get(n, {})} for n in names if n in available]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    raise KeyError(field)


def peak_memory(fn: Callable[[], None]) -> float | None:
    """Peak resident memory during one epoch above the resident memory before it, MiB.

    Linux only: the kernel's high-water mark is reset through /proc/self/clear_refs first."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        before = _status_kib("VmRSS:")
        fn()
        return (_status_kib("VmHWM:") - before) / 1024
    except (OSError, KeyError):
        return None


def median_interval(values: list[float], seed: int = 0, resamples: int = 2000) -> tuple[float, float, float]:
    """The median of ``values`` and a 95 % percentile-bootstrap interval of it."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return statistics.median(values), medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def measure(contenders: dict[str, Contender], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Per contender, per round after the warm-up: the plain loop's epoch seconds (A and B) and
    the contender's."""
    series: dict[str, dict[str, list[float]]] = {
        name: {"plain_a": [], "plain_b": [], "contender": []} for name in contenders
    }
    for round_ in range(rounds + 1):
        for name, contender in contenders.items():
            t = contender.interleave()
            started = time.perf_counter()
            contender.epoch()
            wall = time.perf_counter() - started
            contender.restore()
            fetch = t.inside - t.plain_a - t.plain_b
            if round_:
                series[name]["plain_a"].append(t.plain_a + fetch)
                series[name]["plain_b"].append(t.plain_b + fetch)
                series[name]["contender"].append(wall - t.plain_a - t.plain_b)
    return series


def summarise(series: dict[str, list[float]], n: int) -> dict[str, Any]:
    """Throughputs and ratios (median and interval) of one contender's rounds."""
    ratio = median_interval([a / c for a, c in zip(series["plain_a"], series["contender"])])
    null = median_interval([a / b for a, b in zip(series["plain_a"], series["plain_b"])])
    return {
        "samples_per_s": n / statistics.median(series["contender"]),
        "plain_samples_per_s": n / statistics.median(series["plain_a"]),
        "ratio": ratio[0],
        "ratio_ci": [ratio[1], ratio[2]],
        "null_ratio": null[0],
        "null_ratio_ci": [null[1], null[2]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--stack", default="du,ne,intel")
    parser.add_argument("--out", type=Path, help="write the results as JSON to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        contenders: dict[str, Contender] = {"vaecore": vaecore_contender(args.train_size, [], f"{tmp}/core")}
        stack = installed_stack(args.stack.split(","))
        if stack:
            contenders["vaecore+stack"] = vaecore_contender(args.train_size, stack, f"{tmp}/stack")
        else:
            print(f"vaecore+stack skipped: none of {args.stack} is installed")
        pythae = pythae_contender(load_binarized_mnist().train.x[: args.train_size], f"{tmp}/pythae")
        if pythae is None:
            print("pythae skipped: not installed (pip install -c constraints.txt pythae)")
        else:
            contenders["pythae"] = pythae
        series = measure(contenders, args.rounds)
        memory = {name: peak_memory(c.epoch) for name, c in contenders.items()}

    n = args.train_size
    rows = {name: {**summarise(s, n), "peak_rss_mib": memory[name]} for name, s in series.items()}
    print(f"training throughput: {n} examples/epoch, batch {BATCH}, {args.threads} threads, {args.rounds} rounds")
    if stack:
        print(f"stack: {', '.join(p['name'] for p in stack)}")
    print(f"{'contender':<15}{'samples/s':>11}{'plain samples/s':>17}{'ratio [95% CI]':>24}{'peak RSS MiB':>14}")
    for name, row in rows.items():
        lo, hi = row["ratio_ci"]
        mem = "n/a" if row["peak_rss_mib"] is None else f"{row['peak_rss_mib']:.1f}"
        ratio = f"{row['ratio']:.3f} [{lo:.3f}, {hi:.3f}]"
        print(f"{name:<15}{row['samples_per_s']:>11.0f}{row['plain_samples_per_s']:>17.0f}{ratio:>24}{mem:>14}")
    for name, row in rows.items():
        lo, hi = row["null_ratio_ci"]
        print(f"null control ({name}): plain step B / step A {row['null_ratio']:.3f} [{lo:.3f}, {hi:.3f}]")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "command": "python benchmarks/bench_train.py " + " ".join(sys.argv[1:]),
            "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()}, {args.threads} threads, torch {torch.__version__}",
            "train_size": n,
            "rounds": args.rounds,
            "stack": [p["name"] for p in stack],
            "rows": rows,
        }
        args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
