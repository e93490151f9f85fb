"""The training loop: seeded, checkpointed every epoch, resumable to the same numbers."""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from vaecore import distributed
from vaecore.build import build_model
from vaecore.checkpoint import load_checkpoint, save_checkpoint
from vaecore.config import Config, config_to_dict, load_config, monitor_direction, structure_config
from vaecore.data import Dataset, load_dataset
from vaecore.errors import CheckpointError, ConfigError, NonFiniteError
from vaecore.evaluation import evaluate_checkpoint
from vaecore.hooktypes import Batch, StepContext, set_context
from vaecore.loggers import LoggerGroup
from vaecore.model import VAE
from vaecore.objectives import warmup_factor
from vaecore.plugin_manager import PluginRegistry
from vaecore.provenance import manifest, write_manifest, write_sample
from vaecore.restore import LoadedRun, load_run, plugin_states, restore_model
from vaecore.runs import RunDir

COSMETIC_CHANGES: frozenset[tuple[str, ...]] = frozenset(
    {("train", "progress"), ("train", "threads"), ("loggers",), ("launcher",)}
)
"""Config keys that do not change what a run computes."""
RESUMABLE_CHANGES = COSMETIC_CHANGES | {("train", "epochs")}
"""Config keys that may differ between a run and its resumption (each change is recorded)."""
DEFAULT_MONITORS = ("valid.bound", "valid.elbo", "valid.loss")
"""What ``train.monitor`` unset follows: the first of these the run logs (the active bound)."""
UNMONITORED = frozenset({"epoch", "step", "seconds", "lr", "monitor", "monitor_mode", "monitor_value", "best_epoch"})
"""Keys of an epoch's record that are bookkeeping, not values to monitor."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :meth:`Trainer.fit`; the message says what is kept and how to go on."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def config_differences(
    a: dict[str, Any],
    b: dict[str, Any],
    path: tuple[str, ...] = (),
    ignore: frozenset[tuple[str, ...]] = RESUMABLE_CHANGES,
) -> list[str]:
    """Dotted keys whose values differ between two resolved configs, except the ``ignore`` ones
    (by default the keys a resumed run may change). Lists of equal length (the plugin stack) are
    compared entry by entry, so a plugin option is named as ``plugins.0.c2``."""
    diffs = []
    for key in sorted(set(a) | set(b)):
        here = (*path, key)
        if here in ignore:
            continue
        va, vb = a.get(key), b.get(key)
        if isinstance(va, list) and isinstance(vb, list) and len(va) == len(vb):
            va, vb = {str(i): v for i, v in enumerate(va)}, {str(i): v for i, v in enumerate(vb)}
        if isinstance(va, dict) and isinstance(vb, dict):
            diffs += config_differences(va, vb, here, ignore)
        elif va != vb:
            diffs.append(".".join(here))
    return diffs


def config_value(data: Any, dotted: str) -> Any:
    """The value at a dotted key of :func:`config_differences` (None when absent)."""
    for part in dotted.split("."):
        if isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return None
    return data


def shown_value(value: Any, width: int = 60) -> str:
    """A config value as a message shows it: JSON, ``unset`` for None, cut at ``width`` characters."""
    text = "unset" if value is None else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def _checkpoint_epoch(path: Path) -> int | None:
    """The epoch of the checkpoint at ``path``; None when there is none or it is unreadable."""
    try:
        return load_checkpoint(path)["epoch"] if path.exists() else None
    except CheckpointError:
        return None


def compile_networks(model: VAE, example: torch.Tensor) -> None:
    """Compile the encoder and decoder with torch.compile; fall back to eager with a message."""
    networks = (model.encoder, model.decoder)
    try:
        for net in networks:
            net.compile()
        with torch.no_grad():
            model.decode(model.encoder(example)[0])
    except Exception as exc:  # any compiler failure: keep training, uncompiled
        for net in networks:
            net._compiled_call_impl = None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        tqdm.write(f"vaecore: torch.compile is not usable here ({first}); training without it")


class _Accumulator:
    """Sums of logged terms weighted by batch size, kept as one tensor to stay off the hot path."""

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()
        self.sums: torch.Tensor | None = None
        self.done: dict[str, float] = {}
        self.count = 0

    def add(self, names: tuple[str, ...], values: list[torch.Tensor], n: int) -> None:
        if names != self.names:
            self._flush()
            self.names = names
        with torch.no_grad():  # one stack, no graph: cheaper than a detach per value
            stacked = torch.stack(values)
        self.sums = stacked * n if self.sums is None else self.sums.add_(stacked, alpha=n)
        self.count += n

    def _flush(self) -> None:
        if self.sums is not None:
            for name, value in zip(self.names, self.sums.tolist()):
                self.done[name] = self.done.get(name, 0.0) + value
        self.sums = None

    def means(self, group: distributed.ProcessGroup | None = None) -> dict[str, float]:
        """Means over all examples seen (by every process of ``group``)."""
        self._flush()
        names = list(self.done)
        totals = torch.tensor([*(self.done[k] for k in names), float(self.count)], dtype=torch.float64)
        if group is not None:
            totals = distributed.all_reduce_sum(totals, group)
        count = max(float(totals[-1]), 1.0)
        return {k: float(v) / count for k, v in zip(names, totals[:-1])}


class TrainLoop:
    """What a plugin that claims ``train_step`` may use to make its own step (He et al.'s
    aggressive encoder training, for instance): the objective of a batch, an optimiser update of
    chosen parameters, extra training batches, and the encoder/decoder parameter groups."""

    def __init__(self, trainer: Trainer):
        self._trainer = trainer
        model = trainer.model
        encoder_side = set(model.stack.implementers("pre_encode") + model.stack.implementers("post_posterior"))
        self.encoder_parameters = list(model.encoder.parameters()) + [
            p for pid, plugin in model.plugins.items() if pid in encoder_side for p in plugin.parameters()
        ]
        encoder_ids = {id(p) for p in self.encoder_parameters}
        self.decoder_parameters = [p for p in model.parameters() if id(p) not in encoder_ids]
        seed = trainer.config.train.seed
        self._generator = torch.Generator().manual_seed(seed * 7_777_777 + 1)

    def objective(self, batch: Batch, ctx: StepContext) -> tuple[tuple[str, ...], list[torch.Tensor], torch.Tensor]:
        """The loss of ``batch`` with every logged term (names, scalar values with the loss first)."""
        return self._trainer._objective(batch, ctx, self._trainer.train_samples)

    def update(
        self, loss: torch.Tensor, names: tuple[str, ...], values: list[torch.Tensor], params: list | None = None
    ) -> None:
        """Backpropagate ``loss`` and step the optimiser on ``params`` (all parameters when None)."""
        self._trainer._update(loss, names, values, params)

    def sample_batch(self) -> Batch:
        """A random training minibatch of ``train.batch_size`` (its own seeded stream)."""
        train = self._trainer.dataset.train
        size = min(self._trainer.config.train.batch_size, len(train))
        index = torch.randperm(len(train), generator=self._generator)[:size]
        return self._trainer._to_device(Batch(train.inputs(index), index, None if train.y is None else train.y[index]))

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self._generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._generator.set_state(state["generator"])


class Trainer:
    """Trains the model a config describes into a run folder."""

    def __init__(
        self,
        config: Config,
        run_dir: str | Path,
        registry: PluginRegistry | None = None,
        dataset: Dataset | None = None,
    ):
        self.config = config
        self.run = RunDir(run_dir)
        self.registry = registry if registry is not None else PluginRegistry()
        self.dataset = dataset if dataset is not None else load_dataset(config.data)
        seed_everything(config.train.seed)
        if config.train.threads is not None:
            torch.set_num_threads(config.train.threads)
        torch.set_flush_denormal(config.train.flush_denormal)
        self.group = distributed.init_process_group(config.train.device)
        self.device = self.group.device
        self.model: VAE = build_model(config, self.dataset, self.registry).to(self.device)
        if self.group.enabled and self.model.stack.has("train_step"):
            raise ConfigError(
                f"plugins: {self.model.stack.implementers('train_step')[0]!r} takes over the training step, "
                "which is not supported under torchrun (processes would run different numbers of updates)"
            )
        self.scaler: torch.amp.GradScaler | None = None
        if config.train.precision == "16":
            if self.device.type != "cuda":
                raise ConfigError(
                    "train.precision: '16' (float16 with a gradient scaler) needs CUDA; use 'bf16' or '32'"
                )
            self.scaler = torch.amp.GradScaler("cuda")
        self.model.precision = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}[config.train.precision]
        if config.train.compile:
            compile_networks(self.model, self.dataset.train.inputs(slice(0, 2)).to(self.device))
        self.forward: torch.nn.Module = self.model
        if self.group.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.model, device_ids=ids)
            torch.manual_seed(config.train.seed + 7919 * self.group.rank)  # each process its own noise
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.train.lr)
        self.ctx = StepContext(model=self.model)
        self.loggers = LoggerGroup([], self.run.path)
        """The run's ``[[loggers]]``, made when :meth:`fit` starts (main process only)."""
        self.steps_per_epoch = self.model.info.steps_per_epoch
        self.epoch = 0
        self.committed_epoch = 0
        """The epoch of ``checkpoints/last.pt`` (0: none written)."""
        self.monitor: str | None = config.train.monitor
        """The key of the epoch record that selects ``best.pt`` (unset: resolved at the first validation)."""
        self.monitor_mode: str | None = monitor_direction(config.train.monitor, config.train.monitor_mode)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.since_best = 0
        self.since_decay = 0
        self.decays = 0
        self.stopped: str | None = None
        """Why training stopped before ``train.epochs`` (early stopping, learning-rate decays, a plugin)."""
        self.resumes: list[dict[str, Any]] = []
        """Each resumption that changed the config: its epoch and ``{key: [before, after]}``."""
        self.loop = TrainLoop(self) if self.model.stack.has("train_step") else None
        self.train_samples = self.model.stack.forward_samples(True) or config.train.samples
        self.valid_samples = self.model.stack.forward_samples(False) or 1

    # state -----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything a checkpoint holds to resume exactly: weights, optimiser, RNG streams, counters."""
        return {
            "epoch": self.epoch,
            "step": self.ctx.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {"torch": distributed.gather_rng_states(self.group)},
            "trainer": {
                "monitor": self.monitor,
                "monitor_mode": self.monitor_mode,
                "best": self.best,
                "best_epoch": self.best_epoch,
                "since_best": self.since_best,
                "since_decay": self.since_decay,
                "decays": self.decays,
                "stopped": self.stopped,
                "resumes": self.resumes,
            },
            "plugin_state": plugin_states(self.model),
            "config": config_to_dict(self.config),
            "loop": self.loop.state_dict() if self.loop is not None else {},
        }

    def load_state(self, state: dict[str, Any], source: Path) -> None:
        """Restore a checkpoint's :meth:`state` read from ``source`` (named in errors)."""
        restore_model(self.model, state, source)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"{source}: the optimiser state does not match this model: {first}") from exc
        if self.loop is not None and state.get("loop"):
            self.loop.load_state_dict(state["loop"])
        self.epoch = state["epoch"]
        set_context(self.ctx, step=state["step"])
        rng = state["rng"]["torch"]
        if len(rng) != self.group.world:
            raise CheckpointError(
                f"{source}: written by {len(rng)} process(es); resume it with the same number "
                f"(this run has {self.group.world})"
            )
        torch.set_rng_state(rng[self.group.rank])
        self.committed_epoch = self.epoch
        trainer = state["trainer"]
        self.decays = trainer["decays"]
        self.since_best, self.since_decay = trainer["since_best"], trainer["since_decay"]
        if "monitor" in trainer:
            self.monitor, self.monitor_mode = trainer["monitor"], trainer["monitor_mode"]
            self.best, self.best_epoch = trainer["best"], trainer["best_epoch"]
            self.stopped, self.resumes = trainer["stopped"], list(trainer["resumes"])
        else:  # written before train.monitor: that run followed valid.loss, and goes on doing so
            self.monitor, self.monitor_mode = "valid.loss", "min"
            best = trainer["best_valid"]
            self.best = best if math.isfinite(best) else None
            self.best_epoch = self.epoch - self.since_best if self.best is not None else None
            cfg = self.config.train
            if cfg.early_stopping and self.since_best >= cfg.early_stopping:
                self.stopped = f"no validation improvement for {self.since_best} epochs"
            elif cfg.lr_decay.patience and cfg.lr_decay.max_decays and self.decays >= cfg.lr_decay.max_decays:
                self.stopped = f"learning rate decayed {self.decays} times"

    def _saved_config(self, state: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint's config with today's defaults filled in (keys added since it was written)."""
        try:
            return config_to_dict(structure_config(dict(state.get("config", {})), self.registry))
        except ConfigError as exc:
            raise ConfigError(
                [
                    f"the run being resumed ({self.run.path}) has a config this vaecore refuses: {p}"
                    for p in exc.problems
                ]
            ) from exc

    def _start(self, resume: bool) -> None:
        """Continue from ``checkpoints/last.pt`` (``resume``), or start the run. A folder without
        ``last.pt`` holds no committed epoch: the run starts over there, with or without ``resume``."""
        if self.run.holds_run():
            if not resume:
                raise CheckpointError(
                    f"{self.run.path} already holds a run; pass --resume to continue it or --out for a new folder"
                )
            self._resume()
            return
        if resume and not self.run.config.exists():
            raise self._nothing_to_resume()
        distributed.barrier(self.group)
        if self.group.main:
            if self.run.config.exists():
                tqdm.write(
                    f"vaecore: {self.run.path} holds no checkpoint (its run stopped before the first epoch "
                    "was checkpointed); starting the run over"
                )
                self.run.clear_uncommitted()
            self.run.create(self.config)
            self._record_provenance()

    def _nothing_to_resume(self) -> CheckpointError:
        return CheckpointError(
            f"nothing to resume in {self.run.path}: no run was started there ({self.run.config.name} does not "
            "exist); start one without --resume"
        )

    def _resume(self) -> None:
        state = load_checkpoint(self.run.last)
        saved, current = self._saved_config(state), config_to_dict(self.config)
        where = f"the run being resumed ({self.run.path})"
        problems = [f"{key}: differs from the config of {where}" for key in config_differences(saved, current)]
        if self.config.train.epochs < state["epoch"]:
            problems.append(
                f"train.epochs: {self.config.train.epochs} is fewer than the {state['epoch']} epochs {where} has "
                f"trained; resume with train.epochs >= {state['epoch']}, or train a new run with --out"
            )
        if problems:
            raise ConfigError(problems)
        self.load_state(state, self.run.last)
        changes = config_differences(saved, current, ignore=frozenset())
        if changes:
            self.resumes.append(
                {
                    "epoch": self.epoch,
                    "changes": {k: [config_value(saved, k), config_value(current, k)] for k in changes},
                }
            )
        distributed.barrier(self.group)
        if not self.group.main:
            return
        if "monitor" not in state["trainer"]:
            tqdm.write(
                f"vaecore: {self.run.last} was written before train.monitor existed; best.pt, early stopping "
                "and learning-rate decay go on following valid.loss, as that run did"
            )
        self._finish_commit(state)
        self.run.truncate_metrics(self.epoch)
        if self.epoch < self.config.train.epochs and self.stopped is None:
            self.run.eval.unlink(missing_ok=True)  # it evaluated the run as it was before this resumption
        notes = [
            f"resumed after epoch {r['epoch']} with "
            + ", ".join(f"{k} changed from {shown_value(a)} to {shown_value(b)}" for k, (a, b) in r["changes"].items())
            for r in self.resumes
        ]
        self.run.create(self.config, notes)
        if not self.run.manifest.exists():  # a run folder of an older vaecore
            self._record_provenance()

    def _record_provenance(self) -> None:
        """``run.json`` and ``data_sample.npz``: what loading the run needs without its data."""
        write_manifest(self.run.manifest, manifest(self.config, self.dataset, self.registry))
        write_sample(self.run.data_sample, self.dataset.test)

    def _finish_commit(self, state: dict[str, Any]) -> None:
        """Write what the commit of the checkpointed epoch lacks: the ``best.pt`` and kept
        ``epoch_NNNN.pt`` of a run that an older vaecore (which wrote them after ``last.pt``) was
        writing when it was killed."""
        epoch, keep = self.epoch, self.config.train.keep_every
        state = {k: v for k, v in state.items() if k not in ("format", "format_version")}
        if self.best_epoch == epoch and _checkpoint_epoch(self.run.best) != epoch:
            save_checkpoint(self.run.best, state)
        if keep and epoch % keep == 0 and not self.run.epoch_checkpoint(epoch).exists():
            save_checkpoint(self.run.epoch_checkpoint(epoch), state)

    # training --------------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train to ``train.epochs`` (continuing from ``checkpoints/last.pt`` when ``resume``) and
        evaluate the best checkpoint; returns the evaluation results.

        The run folder is locked meanwhile (:class:`~vaecore.runs.RunLock`): a second process
        training in it is refused with the holder's PID."""
        if resume and not self.run.holds_run() and not self.run.config.exists():
            raise self._nothing_to_resume()
        lock: contextlib.AbstractContextManager[Any] = self.run.lock() if self.group.main else contextlib.nullcontext()
        with lock:
            self.loggers = LoggerGroup(self.config.loggers if self.group.main else [], self.run.path)
            status = "failed"
            try:
                self._start(resume)
                self.loggers.start(config_to_dict(self.config))
                self._train()
                results = self.final_evaluation()
                self.loggers.final(results, self.ctx.step)
                status = "success"
            except KeyboardInterrupt as exc:
                status = "interrupted"
                raise TrainingInterrupted(self._interrupted_hint()) from exc
            finally:
                self.loggers.finalize(status)
        distributed.shutdown(self.group)
        return results

    def _interrupted_hint(self) -> str:
        if self.committed_epoch or self.run.holds_run():
            done = f"epoch {self.committed_epoch}" if self.committed_epoch else "the last finished epoch"
            return f"{done} is checkpointed in {self.run.path}: continue with --resume"
        return f"no epoch was checkpointed in {self.run.path} yet: run the same command again to start the run over"

    def _train(self) -> None:
        cfg = self.config.train
        if self.stopped is not None and self.epoch < cfg.epochs and self.group.main:
            tqdm.write(f"the run stopped after epoch {self.epoch} ({self.stopped}); nothing more to train")
        overall = tqdm(
            total=cfg.epochs,
            initial=self.epoch,
            desc="training",
            unit="epoch",
            disable=None if self._progress else True,
        )
        while self.epoch < cfg.epochs and self.stopped is None:
            self.epoch += 1
            started = time.perf_counter()
            record: dict[str, Any] = {"epoch": self.epoch}
            record.update({f"train.{k}": v for k, v in self.train_epoch().items()})
            record.update({f"valid.{k}": v for k, v in self.validate().items()})
            record["lr"] = self.optimizer.param_groups[0]["lr"]
            plugin_metrics, stops = self.model.stack.on_epoch_end(self.epoch, record, self._eval_ctx())
            record.update(plugin_metrics)
            record["step"] = self.ctx.step
            record["seconds"] = round(time.perf_counter() - started, 3)
            improved, schedule_stops = self._schedule(record)
            stops += schedule_stops
            if stops:
                self.stopped = "; ".join(stops)
            state = self.state()
            if self.group.main:
                self._commit(record, state, improved)
                self._report(record)
                self.loggers.epoch(record, self.ctx.step, self.epoch, self._image_grids)
            distributed.barrier(self.group)
            overall.update(1)
            if stops and self.group.main:
                tqdm.write(f"stopping after epoch {self.epoch}: {self.stopped}")
        overall.close()

    @torch.no_grad()
    def _image_grids(self) -> dict[str, Any]:
        """Grids of 16 prior samples and of 8 seeded test inputs above their reconstructions, for
        the loggers (none when the inputs are not images); drawn from their own seeded stream,
        so logging images does not change the training's random numbers."""
        from vaecore.analysis.commands import shown_inputs
        from vaecore.analysis.figures import image_shape
        from vaecore.loggers import image_grid

        shape = image_shape(self.model.input_shape)
        if shape is None or self.model.likelihood.render(self.dataset.test.x[:1]) is not None:
            return {}  # not images (or text: token ids are no image)
        model, was_training = self.model, self.model.training
        model.eval()
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.config.train.seed)
                samples = model.sample_prior(16).cpu()
                rows = shown_inputs(self.dataset.test, 8, self.config.eval.seed)
                x = self.dataset.test.inputs(rows).to(self.device)
                ctx = model.context(training=False)
                mean = model.encode(x, ctx)[0].mean
                recon = model.likelihood.mean(model.decode(model.latent_map(mean, ctx), x)).cpu()
        finally:
            model.train(was_training)
        return {
            "prior_samples": image_grid(samples, shape, columns=8),
            "reconstructions": image_grid(torch.cat([x.cpu(), recon]), shape, columns=8),
        }

    @property
    def _progress(self) -> bool:
        """Whether progress bars are wanted (``train.progress``, main process); tqdm shows them
        only on a terminal."""
        return bool(self.config.train.progress and self.group.main)

    def _commit(self, record: dict[str, Any], state: dict[str, Any], improved: bool) -> None:
        """Write the epoch's files, ``last.pt`` last: its rename commits the epoch. A run killed
        before it resumes from the previous ``last.pt`` and redoes the epoch, writing them all again."""
        keep = self.config.train.keep_every
        if improved:
            save_checkpoint(self.run.best, state)
        if keep and self.epoch % keep == 0:
            save_checkpoint(self.run.epoch_checkpoint(self.epoch), state)
        self.run.append_metrics(record)
        save_checkpoint(self.run.last, state)
        self.committed_epoch = self.epoch

    def _monitored(self, record: dict[str, Any]) -> tuple[str, float]:
        """The monitored key and its value in ``record`` (unset: the active bound, chosen now)."""
        if self.monitor is None:
            self.monitor = next(k for k in DEFAULT_MONITORS if k in record)
            self.monitor_mode = monitor_direction(self.monitor)
        key, value = self.monitor, record.get(self.monitor)
        if key in UNMONITORED or key not in record:
            logged = [k for k, v in record.items() if k not in UNMONITORED and isinstance(v, (int, float))]
            raise ConfigError(f"train.monitor: {key!r} is not a value this run logs; it logs {', '.join(logged)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"train.monitor: {key!r} is not a number (it is {value!r})")
        if not math.isfinite(value):
            kept = (
                f"the last good checkpoint is {self.run.last}" if self.committed_epoch else "no checkpoint was written"
            )
            raise NonFiniteError(
                f"the monitored value {key} is {value} at epoch {self.epoch}; training stopped, {kept}"
            )
        return key, float(value)

    def _schedule(self, record: dict[str, Any]) -> tuple[bool, list[str]]:
        """Follow the monitored value: whether this epoch improved it (``best.pt``); decay the
        learning rate and stop early as configured. Adds what was monitored to ``record``.

        ``since_best`` counts epochs without improvement (early stopping); ``since_decay`` counts
        them since the last improvement or decay (learning-rate decay, He et al. 2019)."""
        cfg = self.config.train
        key, value = self._monitored(record)
        best = self.best
        improved = best is None or (value < best if self.monitor_mode == "min" else value > best)
        stops = []
        if improved:
            self.best, self.best_epoch, self.since_best, self.since_decay = value, self.epoch, 0, 0
        else:
            self.since_best += 1
            self.since_decay += 1
            decay = cfg.lr_decay
            if decay.patience and self.since_decay >= decay.patience:
                self.decays += 1
                self.since_decay = 0
                for group in self.optimizer.param_groups:
                    group["lr"] *= decay.factor
                if decay.max_decays and self.decays >= decay.max_decays:
                    stops.append(f"learning rate decayed {self.decays} times")
            if cfg.early_stopping and self.since_best >= cfg.early_stopping:
                stops.append(f"no improvement of {key} for {self.since_best} epochs")
        record.update(monitor=key, monitor_mode=self.monitor_mode, monitor_value=value, best_epoch=self.best_epoch)
        return improved, stops

    def _eval_ctx(self) -> StepContext:
        return StepContext(model=self.model, training=False, epoch=self.epoch, step=self.ctx.step)

    def train_epoch(self) -> dict[str, float]:
        """One epoch of optimiser steps; the mean of each training term (``train.`` keys)."""
        cfg = self.config.train
        model, ctx, stack = self.model, self.ctx, self.model.stack
        model.train()
        set_context(ctx, training=True, epoch=self.epoch)
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.epoch)
        acc = _Accumulator()
        bar = tqdm(
            self.dataset.train.batches(cfg.batch_size, generator),
            total=self.steps_per_epoch,
            desc=f"epoch {self.epoch}/{cfg.epochs}",
            leave=False,
            disable=None if self._progress else True,
        )
        for i, global_batch in enumerate(bar):
            batch = self._to_device(distributed.local_part(global_batch, self.group))
            warm = warmup_factor(ctx.step, self.steps_per_epoch, cfg.kl_warmup.start, cfg.kl_warmup.epochs)
            set_context(ctx, warmup=warm, batch=batch)
            set_context(ctx, kl_weight=stack.kl_weight(cfg.beta * warm, ctx))
            claimed = stack.train_step(batch, ctx, self.loop) if self.loop is not None else None
            if claimed is None:
                names, values, loss = self._objective(batch, ctx, self.train_samples)
                if self.group.enabled:  # DDP averages over processes: weight by this process's share
                    loss = loss * (batch.x.shape[0] * self.group.world / global_batch.x.shape[0])
                self._update(loss, names, values)
            else:
                names, values = claimed
            set_context(ctx, step=ctx.step + 1)
            stack.on_step_end(ctx)
            acc.add(names, values, batch.x.shape[0])
            if self.loggers:
                self.loggers.step(ctx.step, names, values)
            if i % 50 == 0 and not bar.disable:  # tqdm leaves disable at None on a terminal
                bar.set_postfix({name: f"{float(value.detach()):.3f}" for name, value in zip(names[:4], values[:4])})
        bar.close()
        out = acc.means(self.group)
        out["kl_weight"] = ctx.kl_weight
        return out

    def _update(
        self, loss: torch.Tensor, names: tuple[str, ...], values: list[torch.Tensor], params: list | None = None
    ) -> None:
        """One optimiser step on ``loss``, of ``params`` only when given; non-finite values stop the run."""
        if not math.isfinite(loss.item()):  # one scalar read: cheaper than torch.isfinite's kernels
            self._non_finite(names, values)
        self.optimizer.zero_grad(set_to_none=True)
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        if params is not None:
            keep = {id(p) for p in params}
            for p in self.model.parameters():
                if id(p) not in keep:
                    p.grad = None
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.config.train.grad_clip is not None:
            trained = [p for p in self.model.parameters() if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(trained, self.config.train.grad_clip)
            # under a gradient scaler (float16) an overflow is expected: the scaler skips that step
            if self.scaler is None and not torch.isfinite(norm):
                self._non_finite(("gradient_norm",), [norm])
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()

    def _objective(
        self, batch: Batch, ctx: StepContext, samples: int
    ) -> tuple[tuple[str, ...], list[torch.Tensor], torch.Tensor]:
        """The loss of one batch and every logged term (names and scalar values, loss first)."""
        out = self.forward(batch.x, ctx, samples)
        bound = self.model.stack.bound(out, ctx)
        loss = bound.loss
        names = ["loss", *bound.terms]
        values = [loss, *bound.terms.values()]
        for name, term in self.model.stack.extra_loss(out, ctx):
            loss = loss + term.weight * term.value
            names.append(name)
            values.append(term.value)
        values[0] = loss
        return tuple(names), values, loss

    def _to_device(self, batch: Batch) -> Batch:
        if self.device.type == "cpu":
            return batch
        return batch.to(self.device)

    def _non_finite(self, names: tuple[str, ...], values: list[torch.Tensor]) -> None:
        bad = [f"{n}={float(v.detach()):g}" for n, v in zip(names, values) if not torch.isfinite(v).all()]
        where = f"epoch {self.epoch}, step {self.ctx.step}"
        kept = (
            f"the last good checkpoint is {self.run.last}"
            if self.run.last.exists()
            else "no checkpoint was written yet"
        )
        raise NonFiniteError(f"non-finite values at {where}: {', '.join(bad)}; training stopped, {kept}")

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """The validation split's mean of each term (``valid.`` keys), with weight-1 KL."""
        cfg = self.config.train
        self.model.eval()
        ctx = self._eval_ctx()
        acc = _Accumulator()
        for global_batch in self.dataset.valid.batches(cfg.eval_batch_size):
            batch = self._to_device(distributed.local_part(global_batch, self.group))
            set_context(ctx, batch=batch)
            names, values, _ = self._objective(batch, ctx, self.valid_samples)
            acc.add(names, values, batch.x.shape[0])
        result = acc.means(self.group)
        bad = [f"{k}={v:g}" for k, v in result.items() if not math.isfinite(v)]
        if bad:
            raise NonFiniteError(
                f"non-finite validation values at epoch {self.epoch}: {', '.join(bad)}; "
                f"the last good checkpoint is {self.run.last}"
            )
        return result

    def _report(self, record: dict[str, Any]) -> None:
        keys = [
            k for k in ("train.loss", "train.elbo", "train.kl", "valid.loss", "valid.elbo", "valid.kl") if k in record
        ]
        parts = " ".join(f"{k} {record[k]:.3f}" for k in keys)
        tqdm.write(f"epoch {record['epoch']}/{self.config.train.epochs} {parts} ({record['seconds']:.1f}s)")

    def final_evaluation(self) -> dict[str, Any]:
        """Evaluate the configured checkpoint on the configured split and write ``eval.json``.

        Under torchrun every process evaluates its shard of the split; the metrics sync."""
        source = self.run.chosen_checkpoint(self.config.eval.checkpoint)
        state = load_checkpoint(source)
        self.model.load_state_dict(state["model"])
        cfg = self.config.eval
        results = evaluate_checkpoint(
            self.model,
            self.dataset,
            self.config,
            source,
            state["epoch"],
            nll_samples=cfg.nll_samples if cfg.train_nll_samples is None else cfg.train_nll_samples,
            shard=lambda split: distributed.shard(split, self.group),
            progress=self._progress,
        )
        if self.group.main:
            self.run.write_eval(results)
        return results


def train_or_reuse(config: Config, run_dir: str | Path, checkpoint: str | Path | None = None) -> LoadedRun:
    """The run in ``run_dir`` trained with ``config``: trained there now, or reused when a run with
    the same config already finished there (its ``eval.json`` written), so that experiment scripts
    can be rerun without training again. A finished run of another config is refused with the keys
    that differ, never mixed in. ``checkpoint`` as in :func:`~vaecore.restore.load_run`."""
    run = RunDir(run_dir)
    if not run.eval.exists():
        Trainer(config, run_dir).fit()
    elif diffs := config_differences(
        config_to_dict(load_config(run.config)), config_to_dict(config), ignore=COSMETIC_CHANGES
    ):
        raise ConfigError([f"{key}: differs from the config of the finished run in {run.path}" for key in diffs])
    return load_run(run_dir, checkpoint=checkpoint)
