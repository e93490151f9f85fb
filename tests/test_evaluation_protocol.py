"""The evaluation protocol on files that are not in random order: subsets and shown inputs are
seeded, stratified draws; mi_batch minibatches are shuffled; probes and Hoyer measure the
representation g; every whole-split loop streams through the model's device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vaecore
from vaecore.analysis import commands
from vaecore.config import DataConfig, EvalConfig
from vaecore.data import Dataset, Split, load_dataset
from vaecore.data.splits import draw_rows
from vaecore.evaluation import evaluate
from vaecore.metrics.functional import mutual_information
from vaecore.restore import load_run
from vaecore.testing import (
    load,
    make_model,
    make_registry,
    run_training,
    streamed_through_the_device,
    synthetic_dataset,
    tiny_config,
    write_npz,
)


def sorted_by_class(n_per_class: tuple[int, ...], dim: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays in the .npz layout whose every split is sorted by label, as the shipped binarized
    MNIST test split is."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(n_per_class)), n_per_class)
    x = (rng.random((len(y), dim)) < (0.2 + 0.2 * y[:, None])).astype(np.float32)  # binary, class-dependent
    return {"x": x, "y": y}


def write_sorted_npz(path, n_per_class=(60, 30, 90, 20)):
    arrays = {}
    for split in ("train", "valid", "test"):
        a = sorted_by_class(n_per_class)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = a["x"], a["y"]
    np.savez(path, **arrays)
    return path


def folder(root, name):
    (root / name).mkdir(exist_ok=True)
    return root / name


# subsets ------------------------------------------------------------------------------------


def test_draw_rows_gives_each_class_its_share():
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 90 + [3] * 20)  # 200 rows, sorted
    rows = draw_rows(200, 50, seed=3, labels=labels)
    counts = torch.bincount(labels[rows], minlength=4).tolist()
    # quotas 15, 7.5, 22.5, 5: the floors (49) plus one of the two halves
    assert sum(counts) == 50 and counts[0] == 15 and counts[3] == 5 and counts[1:3] in ([8, 22], [7, 23])
    assert rows.tolist() == sorted(set(rows.tolist()))
    assert torch.equal(rows, draw_rows(200, 50, seed=3, labels=labels))
    assert not torch.equal(rows, draw_rows(200, 50, seed=4, labels=labels))
    unlabelled = draw_rows(200, 50, seed=3)
    assert len(set(unlabelled.tolist())) == 50 and unlabelled.max() > 100


def test_default_subsets_of_a_sorted_file_hold_every_class(tmp_path):
    path = write_sorted_npz(tmp_path / "sorted.npz")
    drawn = load_dataset(DataConfig(name="npz", path=str(path), test_size=40, train_size=100))
    assert torch.bincount(drawn.test.y, minlength=4).tolist() == [12, 6, 18, 4]
    assert torch.bincount(drawn.train.y, minlength=4).tolist() == [30, 15, 45, 10]
    first = load_dataset(DataConfig(name="npz", path=str(path), test_size=40, subset="first"))
    assert first.test.y.unique().tolist() == [0]  # what the old default measured


def test_figures_show_a_stratified_draw_of_test_inputs(tmp_path):
    path = write_sorted_npz(tmp_path / "sorted.npz")
    raw = tiny_config(data={"name": "npz", "path": str(path)}, eval={"nll_samples": 2, "probes": False})
    registry = make_registry(entry_points=False)
    run_training(raw, tmp_path / "run", load_dataset(load(raw, registry).data), registry)
    loaded = load_run(tmp_path / "run")
    result = commands.sample(loaded, folder(tmp_path, "figures"), n=20, seed=0)
    shown = loaded.dataset.test.y[result["inputs"]]
    assert torch.bincount(shown, minlength=4).tolist() == [6, 3, 9, 2]
    # the first rows shown (the reconstructions figure shows 16) are not one class either
    assert len(set(shown[:8].tolist())) > 1
    again = commands.sample(loaded, folder(tmp_path, "figures"), n=20, seed=0)
    assert again["inputs"] == result["inputs"]
    lso = commands.lso(loaded, folder(tmp_path, "lso"), n=8, inits=2, iterations=2)
    assert len(set(loaded.dataset.test.y[lso["inputs"]].tolist())) > 1


# mi_batch ------------------------------------------------------------------------------------


def clustered_model(n_per_class: int = 500):
    """A linear encoder mean = 3 x on four well-separated clusters, with the split sorted by
    cluster, and the same rows in a random order."""
    centres = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0], [0.0, -4.0]])
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(n_per_class)
    x = centres[labels] + 0.05 * torch.randn(len(labels), 2, generator=gen)
    ordered = Split(x, labels)
    shuffled = ordered.rows(torch.randperm(len(labels), generator=gen))
    data = Dataset("clusters", ordered, ordered, ordered, binary=False)
    raw = tiny_config(
        model={
            "latent_dim": 2,
            "encoder": {"hidden": []},
            "decoder": {"hidden": []},
            "likelihood": {"kind": "gaussian", "scale": 1.0},
        }
    )
    model = make_model(raw, data, make_registry(entry_points=False))
    with torch.no_grad():
        model.encoder.head.weight.zero_()
        model.encoder.head.bias.zero_()
        model.encoder.head.weight[:2] = 3 * torch.eye(2)
        model.encoder.head.bias[2:] = -2.0  # log variance
    return model, ordered, shuffled


def test_mi_batch_does_not_depend_on_the_files_order():
    model, ordered, shuffled = clustered_model()
    cfg = EvalConfig(nll_samples=0, probes=False, reencoding=False, mi_batch_size=50)
    in_order, at_random = evaluate(model, ordered, cfg), evaluate(model, shuffled, cfg)
    # shuffled minibatches see all four clusters: I_q is about log 4 plus a little within them
    assert at_random["mi_batch"] > 1.2 and in_order["mi_split"] > 1.2
    # in file order every minibatch of 50 would hold one cluster and lose the log 4; the rows'
    # posterior samples differ between the two orders, hence the tolerance
    assert in_order["mi_batch"] == pytest.approx(at_random["mi_batch"], abs=0.25)
    with torch.no_grad():
        loc, log_var, _ = (t.double() for t in model.encoder(ordered.x[:50]))  # the first, one-cluster minibatch
    assert float(mutual_information(loc, log_var, loc)) < 0.5 < at_random["mi_batch"] - 0.5


# the representation --------------------------------------------------------------------------


class ForgetAll:
    """latent_map g(y) = 0: a representation that carries nothing about the input."""

    api_version = vaecore.HOOK_API_VERSION

    @vaecore.hookimpl
    def latent_map(self, y):
        return y * 0.0


def test_probes_and_hoyer_measure_the_representation_g(tmp_path):
    data = synthetic_dataset(n=512)
    registry = make_registry({"forget": ForgetAll}, entry_points=False)
    raw = tiny_config(train={"epochs": 8, "lr": 3e-3}, eval={"nll_samples": 0})
    trained, _ = run_training(raw, tmp_path / "plain", data, make_registry(entry_points=False))
    forgetful = make_model(tiny_config(plugins=[{"name": "forget"}]), data, registry)
    forgetful.load_state_dict(trained.model.state_dict())
    plain = evaluate(trained.model, data.test, EvalConfig(nll_samples=0), probe_split=data.train)
    blind = evaluate(forgetful, data.test, EvalConfig(nll_samples=0), probe_split=data.train)
    assert plain["probe_g_mean"] > 0.8 and plain["probe_g_y"] > 0.6
    # g carries nothing: every probe on g(.) is at chance (4 balanced prototypes: about 0.25-0.35),
    # whatever y holds
    majority = float(torch.bincount(data.test.y).max()) / len(data.test)
    for name in ("probe_g_mean", "probe_g_y"):
        assert blind[name] <= majority + 0.02, name
    # Hoyer of g(mean) and of g(y), y ~ q: different variables, so different numbers
    assert plain["hoyer"] != plain["hoyer_g_y"]


# devices -------------------------------------------------------------------------------------


def test_evaluation_and_analysis_stream_through_the_models_device(tmp_path):
    path = write_npz(synthetic_dataset(n=256), tmp_path / "data.npz")
    raw = tiny_config(data={"name": "npz", "path": str(path)}, eval={"nll_samples": 2})
    registry = make_registry(entry_points=False)
    run_training(raw, tmp_path / "run", load_dataset(load(raw, registry).data), registry)
    loaded = load_run(tmp_path / "run")
    with streamed_through_the_device():
        evaluate(loaded.model, loaded.dataset.test, EvalConfig(nll_samples=2), probe_split=loaded.dataset.train)
        commands.analyze(loaded, folder(tmp_path, "analysis"))
        commands.traverse(loaded, folder(tmp_path, "traverse"))
        commands.interpolate(loaded, folder(tmp_path, "interpolate"), 0, 1)
        commands.sample(loaded, folder(tmp_path, "sample"))
    with pytest.raises(AssertionError, match="without vaecore.device_batches"):
        with streamed_through_the_device():
            list(loaded.dataset.test.batches(64))


def test_device_batches_move_inputs_indices_and_labels(monkeypatch):
    moved = []

    def to(self, device):
        moved.append(device)
        return self

    data = synthetic_dataset(n=64)
    model = make_model(tiny_config(), data, make_registry(entry_points=False))
    monkeypatch.setattr(vaecore.hooktypes.Batch, "to", to)
    monkeypatch.setattr(vaecore.streaming, "model_device", lambda m: torch.device("meta"))
    ctx = model.context(training=False)
    seen = [i for batch in vaecore.device_batches(model, data.test, 5, ctx) for i in batch.index.tolist()]
    assert moved == [torch.device("meta")] * len(range(0, len(data.test), 5)) and seen == list(range(len(data.test)))
    assert ctx.batch is None
