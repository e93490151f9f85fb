"""Experiment trackers: the ``[[loggers]]`` of a config, fed by the trainer.

A logger is a component of role ``logger`` (built in: ``csv``, ``tensorboard``, ``mlflow``,
``wandb``; a plugin may register more), made as ``factory(run_dir=, options=)`` and called as
Lightning's loggers are:

* ``log_hyperparams(config)``: the resolved config (nested dict) once, when training starts;
* ``log_metrics(metrics, step)``: every ``every_n_steps`` steps the step's terms
  (``step.loss``, ``step.elbo``, ...), every epoch the epoch's record (``train.*``, ``valid.*``,
  plugin metrics, ``lr``, ``seconds``), and at the end the final evaluation (``eval.*``), with the
  global optimiser step;
* ``log_image(tag, image, step)``: at the end of every ``image_every`` epochs, grids of prior
  samples and of test reconstructions (an ``(H, W)`` uint8 array) when the inputs are images;
* ``finalize(status)``: ``success``, ``failed`` or ``interrupted``.

Each library is optional: ``pip install 'vaecore[tensorboard]'`` (``mlflow``, ``wandb``); a
config naming a logger whose library is missing is refused when training starts, with that
command. Nothing here needs a network: MLflow writes a local file store and W&B runs offline
unless told otherwise.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from vaecore import validators as v
from vaecore.errors import ConfigError


class Logger:
    """The interface of a logger (every method optional: the base does nothing)."""

    def log_hyperparams(self, config: dict[str, Any]) -> None:
        """The resolved config, once at the start of training."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Numeric values at the global optimiser ``step``."""

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        """An ``(H, W)`` uint8 grayscale image."""

    def finalize(self, status: str) -> None:
        """Flush and close: ``success``, ``failed`` or ``interrupted``."""


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-3}}`` as ``{"train.lr": 1e-3}``; lists of tables (the plugin stack)
    keyed by index (``plugins.0.name``)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            for i, item in enumerate(value):
                flat.update(flatten(item, f"{name}.{i}."))
        else:
            flat[name] = value
    return flat


def _need(module: str, extra: str) -> Any:
    """Import ``module`` or refuse the logger with the install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"loggers: kind {extra!r} needs the {module.split('.')[0]} package: pip install 'vaecore[{extra}]'"
        ) from exc


# csv --------------------------------------------------------------------------------------------


class CSVLogger(Logger):
    """Every logged value as a row of ``RUN/logs/csv/metrics.csv`` (``step,name,value``), and the
    flattened config in ``hparams.json``; appended to when the run resumes. No images."""

    def __init__(self, run_dir: Path):
        self.folder = Path(run_dir) / "logs" / "csv"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "metrics.csv"
        new = not self.path.exists()
        self._file = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        if new:
            self._writer.writerow(["step", "name", "value"])

    def log_hyperparams(self, config: dict[str, Any]) -> None:
        (self.folder / "hparams.json").write_text(json.dumps(flatten(config), indent=1) + "\n", encoding="utf-8")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._writer.writerows([step, name, repr(float(value))] for name, value in metrics.items())
        self._file.flush()

    def finalize(self, status: str) -> None:
        self._file.close()


# tensorboard ------------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class TensorBoardOptions:
    """``tensorboard``: event files in ``RUN/logs/tensorboard`` (``tensorboard --logdir RUN/logs``)."""

    flush_secs: int = attrs.field(default=30, validator=v.gt(0))
    """seconds between flushes of the event file"""


class TensorBoardLogger(Logger):
    """Scalars, the config as text (``config``) and image grids through torch's SummaryWriter."""

    Options = TensorBoardOptions

    def __init__(self, run_dir: Path, options: TensorBoardOptions):
        _need("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(run_dir) / "logs" / "tensorboard"
        self.writer = SummaryWriter(str(self.folder), flush_secs=options.flush_secs)

    def log_hyperparams(self, config: dict[str, Any]) -> None:
        text = "\n".join(f"    {key} = {value!r}" for key, value in flatten(config).items())
        self.writer.add_text("config", text, 0)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.writer.add_image(tag, image, step, dataformats="HW")

    def finalize(self, status: str) -> None:
        self.writer.add_text("status", status, 0)
        self.writer.close()


# mlflow -----------------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class MLflowOptions:
    """``mlflow``: a run in an MLflow tracking store (default: a file store in ``RUN/logs/mlruns``)."""

    tracking_uri: str | None = None
    """the tracking server or store (default: ``file:RUN/logs/mlruns``, no server needed)"""
    experiment: str = "vaecore"
    """the experiment the run belongs to (created when missing)"""
    run_name: str | None = None
    """the run's name (default: the run folder's name)"""


class MLflowLogger(Logger):
    """Params (the flattened config), metrics with their step, images as artifacts
    (``images/<tag>/step_<step>.png``), the run id kept in ``RUN/logs/mlflow.json`` so that a
    resumed training continues the same MLflow run."""

    Options = MLflowOptions

    def __init__(self, run_dir: Path, options: MLflowOptions):
        _need("mlflow", "mlflow")
        from mlflow.tracking import MlflowClient

        run_dir = Path(run_dir)
        uri = options.tracking_uri or (run_dir / "logs" / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):
            # MLflow 3 keeps the file store only on request; it is what a run folder can hold
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        self.state = run_dir / "logs" / "mlflow.json"
        known = json.loads(self.state.read_text(encoding="utf-8")) if self.state.is_file() else {}
        if known.get("tracking_uri") == uri:
            self.run_id = known["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            found = self.client.get_experiment_by_name(options.experiment)
            experiment = found.experiment_id if found else self.client.create_experiment(options.experiment)
            run = self.client.create_run(experiment, run_name=options.run_name or run_dir.name)
            self.run_id = run.info.run_id
            self.state.parent.mkdir(parents=True, exist_ok=True)
            self.state.write_text(json.dumps({"tracking_uri": uri, "run_id": self.run_id}) + "\n", encoding="utf-8")

    def log_hyperparams(self, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(key, str(value)[:6000]) for key, value in flatten(config).items()]
        existing = self.client.get_run(self.run_id).data.params
        fresh = [p for p in params if p.key not in existing]  # params are write-once (a resumed run)
        for start in range(0, len(fresh), 100):
            self.client.log_batch(self.run_id, params=fresh[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(name, float(value), now, step) for name, value in metrics.items()]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.client.log_image(self.run_id, image, artifact_file=f"images/{tag}/step_{step:08d}.png")

    def finalize(self, status: str) -> None:
        self.client.set_terminated(
            self.run_id, status={"success": "FINISHED", "failed": "FAILED"}.get(status, "KILLED")
        )


# wandb ------------------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class WandbOptions:
    """``wandb``: a Weights & Biases run, offline by default (``wandb sync RUN/logs/wandb/...`` uploads it)."""

    project: str = "vaecore"
    """the W&B project"""
    entity: str | None = None
    """the W&B entity (user or team)"""
    mode: str = attrs.field(default="offline", validator=v.one_of(("offline", "online", "disabled")))
    """``offline`` writes the run under RUN/logs/wandb only; ``online`` also streams it"""
    name: str | None = None
    """the run's display name (default: the run folder's name)"""


class WandbLogger(Logger):
    """The config, metrics with their step and images through ``wandb``; the W&B run id is kept in
    ``RUN/logs/wandb.json`` so that a resumed training continues the same W&B run."""

    Options = WandbOptions

    def __init__(self, run_dir: Path, options: WandbOptions):
        self.wandb = _need("wandb", "wandb")
        run_dir = Path(run_dir)
        folder = run_dir / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        state = folder / "wandb.json"
        run_id = json.loads(state.read_text(encoding="utf-8"))["id"] if state.is_file() else None
        self.run = self.wandb.init(
            project=options.project,
            entity=options.entity,
            mode=options.mode,
            dir=str(folder),
            name=options.name or run_dir.name,
            id=run_id,
            resume="allow" if run_id else None,
            settings=self.wandb.Settings(silent=True, console="off"),
        )
        state.write_text(json.dumps({"id": self.run.id}) + "\n", encoding="utf-8")

    def log_hyperparams(self, config: dict[str, Any]) -> None:
        self.run.config.update(config, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log({name: float(value) for name, value in metrics.items()}, step=step)

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.run.log({tag: self.wandb.Image(image)}, step=step)

    def finalize(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "success" else 1)


# images -----------------------------------------------------------------------------------------


def image_grid(images: Any, shape: tuple[int, int], columns: int = 8) -> np.ndarray:
    """``(N, ...)`` values in [0, 1] as one ``(rows*H, columns*W)`` uint8 grid, 1-pixel gaps."""
    h, w = shape
    arrays = np.asarray(images, dtype=np.float32).reshape(-1, h, w)
    n = len(arrays)
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    grid = np.ones((rows * (h + 1) - 1, columns * (w + 1) - 1), dtype=np.float32)
    for i, image in enumerate(arrays):
        r, c = divmod(i, columns)
        grid[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = image
    return (np.clip(grid, 0.0, 1.0) * 255).round().astype(np.uint8)


class LoggerGroup:
    """The run's loggers, as the trainer drives them (nothing at all without ``[[loggers]]``)."""

    def __init__(self, configs: list[Any], run_dir: Path):
        self.entries: list[tuple[Any, Logger]] = []
        for cfg in configs:
            self.entries.append((cfg, cfg.build(run_dir=Path(run_dir))))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def start(self, config: dict[str, Any]) -> None:
        for _, logger in self.entries:
            logger.log_hyperparams(config)

    def step(self, step: int, names: tuple[str, ...], values: list[Any]) -> None:
        """The step's terms to each logger whose ``every_n_steps`` divides ``step``."""
        due = [logger for cfg, logger in self.entries if step % cfg.every_n_steps == 0]
        if due:
            metrics = {f"step.{name}": float(value.detach()) for name, value in zip(names, values)}
            for logger in due:
                logger.log_metrics(metrics, step)

    def epoch(self, record: dict[str, Any], step: int, epoch: int, images: Any) -> None:
        """The epoch's numeric values; then ``images()`` (``{tag: grid}``, made once, only when a
        logger wants images this epoch) to each logger whose ``image_every`` divides ``epoch``."""
        metrics = numeric(record)
        for _, logger in self.entries:
            logger.log_metrics(metrics, step)
        wanting = [logger for cfg, logger in self.entries if cfg.image_every and epoch % cfg.image_every == 0]
        grids = images() if wanting else {}
        for logger in wanting:
            for tag, grid in grids.items():
                logger.log_image(tag, grid, step)

    def final(self, results: dict[str, Any], step: int) -> None:
        metrics = {f"eval.{name}": value for name, value in numeric(results).items()}
        for _, logger in self.entries:
            logger.log_metrics(metrics, step)

    def finalize(self, status: str) -> None:
        for _, logger in self.entries:
            logger.finalize(status)


def numeric(record: dict[str, Any]) -> dict[str, float]:
    """The finite-or-not numbers of a record (no strings, lists, None or booleans)."""
    return {
        key: float(value)
        for key, value in record.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
