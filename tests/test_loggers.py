"""The loggers ([[loggers]]): each one's output read back with its own library (csv, TensorBoard's
event accumulator, MLflow's client on a file store, W&B's offline run file), images included.

The TensorBoard, MLflow and W&B cases need their extras: `nox -s loggers` installs them; the core
session runs the CSV and config cases and skips the others, naming the session."""

from __future__ import annotations

import csv
import json
import sys
import time

import pytest
import torch

from vaecore import ConfigError
from vaecore.loggers import flatten, image_grid
from vaecore.testing import binarized_mnist, load, tiny_config
from vaecore.trainer import Trainer

STEPS_PER_EPOCH = 4  # 200 training rows, batches of 50
GRID = (2 * 29 - 1, 8 * 29 - 1)  # 8 columns of 28x28 with 1-pixel gaps; prior samples: 16 = 2 rows


@pytest.fixture(scope="module")
def mnist():
    return binarized_mnist(n_train=200, n_valid=100, n_test=100)


def train(tmp_path, mnist, loggers, epochs=2, name="run", resume=False):
    raw = tiny_config(
        train={"epochs": epochs, "batch_size": 50},
        eval={"nll_samples": 5, "probes": False, "reencoding": False},
        loggers=loggers,
    )
    trainer = Trainer(load(raw), tmp_path / name, dataset=mnist)
    return trainer, trainer.fit(resume=resume)


def needs(module):
    return pytest.importorskip(module, reason=f"the {module} logger's extra is not installed (nox -s loggers)")


def test_csv_logger_writes_steps_epochs_evaluation_and_the_config(tmp_path, mnist):
    _, results = train(tmp_path, mnist, [{"kind": "csv", "every_n_steps": 2}])
    with open(tmp_path / "run" / "logs" / "csv" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_name: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        by_name.setdefault(row["name"], []).append((int(row["step"]), float(row["value"])))
    assert [s for s, _ in by_name["step.loss"]] == [2, 4, 6, 8]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert by_name["train.loss"] == [(4, records[0]["train.loss"]), (8, records[1]["train.loss"])]
    assert by_name["valid.elbo"] == [(4, records[0]["valid.elbo"]), (8, records[1]["valid.elbo"])]
    assert by_name["eval.nll"] == [(8, results["nll"])]
    hparams = json.loads((tmp_path / "run" / "logs" / "csv" / "hparams.json").read_text())
    assert hparams["train.batch_size"] == 50 and hparams["model.encoder.kind"] == "mlp"


def test_loggers_do_not_change_what_a_run_computes(tmp_path, mnist):
    """Image grids are drawn from their own seeded stream: the trained weights are identical."""
    plain, _ = train(tmp_path, mnist, [], name="plain")
    logged, _ = train(tmp_path, mnist, [{"kind": "csv", "every_n_steps": 1, "image_every": 1}], name="logged")
    for (name, a), (_, b) in zip(plain.model.state_dict().items(), logged.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_tensorboard_logger_read_back_with_the_event_accumulator(tmp_path, mnist):
    needs("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, results = train(tmp_path, mnist, [{"kind": "tensorboard", "every_n_steps": 2}])
    events = EventAccumulator(str(tmp_path / "run" / "logs" / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("eval.nll")] == [(8, round(results["nll"], 4))]
    assert [e.step for e in events.Scalars("train.loss")] == [4, 8]
    assert [e.step for e in events.Scalars("step.elbo")] == [2, 4, 6, 8]
    for tag, (height, width) in {"prior_samples": GRID, "reconstructions": GRID}.items():
        images = events.Images(tag)
        assert [i.step for i in images] == [4, 8] and (images[0].height, images[0].width) == (height, width)
    assert "config/text_summary" in events.Tags()["tensors"]


def test_mlflow_logger_read_back_with_the_client_and_resumed_into_the_same_run(tmp_path, mnist):
    needs("mlflow")
    from mlflow.tracking import MlflowClient

    logger = {"kind": "mlflow", "every_n_steps": 2, "experiment": "tests"}
    train(tmp_path, mnist, [logger], epochs=1)
    _, results = train(tmp_path, mnist, [logger], epochs=2, resume=True)
    state = json.loads((tmp_path / "run" / "logs" / "mlflow.json").read_text())
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    run = client.get_run(state["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["train.batch_size"] == "50" and run.data.params["model.latent_dim"] == "4"
    assert [m.step for m in client.get_metric_history(state["run_id"], "train.loss")] == [4, 8]  # one run, resumed
    assert client.get_metric_history(state["run_id"], "eval.nll")[-1].value == pytest.approx(results["nll"])
    images = [a.path for a in client.list_artifacts(state["run_id"], "images/prior_samples")]
    assert images == ["images/prior_samples/step_00000004.png", "images/prior_samples/step_00000008.png"]
    assert client.get_experiment(run.info.experiment_id).name == "tests"


def test_wandb_logger_offline_read_back_from_its_run_file(tmp_path, mnist):
    needs("wandb")
    datastore = pytest.importorskip("wandb.sdk.internal.datastore", reason="wandb >= 0.30 has no offline reader")
    from wandb.proto import wandb_internal_pb2

    _, results = train(tmp_path, mnist, [{"kind": "wandb", "every_n_steps": 2}])
    (run_file,) = (tmp_path / "run" / "logs" / "wandb").glob("offline-run-*/run-*.wandb")

    def scan():
        store = datastore.DataStore()
        store.open_for_scan(str(run_file))
        history, config = [], {}
        while (data := store.scan_data()) is not None:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            kind = record.WhichOneof("record_type")
            if kind == "history":
                history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
            elif kind == "config":
                config.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.config.update})
        return history, config

    for _ in range(40):  # wandb's writer (a separate process) may still be flushing the last record
        history, config = scan()
        if any(row.get("_step") == 8 for row in history):
            break
        time.sleep(0.25)
    rows = {row["_step"]: row for row in history}
    assert rows[8]["eval.nll"] == pytest.approx(results["nll"])
    assert "train.loss" in rows[4] and "step.loss" in rows[2]
    assert rows[4]["prior_samples/_type"] == "image-file" and rows[4]["prior_samples/height"] == GRID[0]
    assert rows[8]["reconstructions/width"] == GRID[1]
    assert config["train"]["batch_size"] == 50
    assert list(run_file.parent.glob("files/media/images/prior_samples_*.png"))


def test_a_missing_library_is_one_line_with_the_install_command(tmp_path, mnist, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import fails as if not installed
    with pytest.raises(ConfigError) as err:
        train(tmp_path, mnist, [{"kind": "tensorboard"}])
    assert str(err.value) == (
        "invalid config: loggers: kind 'tensorboard' needs the tensorboard package: pip install 'vaecore[tensorboard]'"
    )


def test_logger_tables_are_checked_like_the_rest_of_the_config():
    with pytest.raises(ConfigError) as err:
        load(
            tiny_config(
                loggers=[{"kind": "neptune"}, {"kind": "csv", "every_n_steps": 0}, {"kind": "wandb", "mode": "x"}]
            )
        )
    problems = err.value.problems
    assert problems[0].startswith(
        "loggers[0].kind: unknown logger 'neptune'; available: csv, mlflow, tensorboard, wandb"
    )
    assert "loggers[1].every_n_steps: must be > 0, got 0" in problems
    assert "loggers[2].mode: must be one of 'offline', 'online', 'disabled', got 'x'" in problems


def test_grid_and_flatten():
    grid = image_grid(torch.stack([torch.zeros(4), torch.ones(4), torch.full((4,), 0.5)]), (2, 2), columns=2)
    assert grid.shape == (5, 5) and grid.dtype.name == "uint8"
    assert grid[0, 0] == 0 and grid[0, 3] == 255 and grid[3, 0] == 128 and grid[2, 2] == 255  # gaps are white
    assert flatten({"a": {"b": 1}, "plugins": [{"name": "x", "w": 2}], "l": [1, 2]}) == {
        "a.b": 1,
        "plugins.0.name": "x",
        "plugins.0.w": 2,
        "l": [1, 2],
    }
