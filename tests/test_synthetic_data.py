"""The InteL synthetic 2-D datasets built into the core (vaecore.data.synthetic)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vaecore.builtin_components import builtin_registry
from vaecore.config import DataConfig
from vaecore.data import load_dataset
from vaecore.data.synthetic import INFINITY_SCALE, MOG_CENTRES, SYNTHETIC, make_synthetic
from vaecore.errors import ConfigError, DataError
from vaecore.testing import load, make_model, run_training, tiny_config

NAMES = ["circle", "infinity", "mog", "sparse"]


def test_registered_as_builtin_datasets():
    assert set(NAMES) <= set(builtin_registry().names("dataset")) and set(SYNTHETIC) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_splits_shapes_and_determinism(name):
    ds = load_dataset(DataConfig(name=name, n_points=400, seed=3))
    assert ds.name == name and not ds.binary
    assert ds.input_shape == (2,)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (400, 100, 100)
    assert ds.train.x.dtype == torch.float32 and torch.isfinite(ds.train.x).all()
    again = load_dataset(DataConfig(name=name, n_points=400, seed=3))
    assert torch.equal(ds.train.x, again.train.x) and torch.equal(ds.test.x, again.test.x)
    other = load_dataset(DataConfig(name=name, n_points=400, seed=4))
    assert not torch.equal(ds.train.x, other.train.x)
    # the splits do not share points
    assert not torch.equal(ds.valid.x, ds.test.x)
    # generation does not touch the global RNG
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    make_synthetic(name, 50)
    assert torch.equal(torch.rand(3), expected)


def test_defaults_and_subsets():
    ds = load_dataset(DataConfig(name="circle"))
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (2000, 500, 500)
    sub = load_dataset(DataConfig(name="circle", train_size=100, test_size=10, subset="first"))
    assert (len(sub.train), len(sub.valid), len(sub.test)) == (100, 500, 10)
    assert torch.equal(sub.train.x, ds.train.x[:100])


def test_circle_points_lie_on_the_unit_circle():
    clean = make_synthetic("circle", 1000, noise=0.0)
    assert torch.allclose(clean.train.x.norm(dim=-1), torch.ones(1000), atol=1e-6)
    # angles cover the circle uniformly: each quadrant has about a quarter
    quadrant = (clean.train.x[:, 0] > 0).long() * 2 + (clean.train.x[:, 1] > 0).long()
    assert torch.allclose(torch.bincount(quadrant).float() / 1000, torch.full((4,), 0.25), atol=0.04)
    noisy = make_synthetic("circle", 4000, noise=0.05)
    r = noisy.train.x.norm(dim=-1)
    assert abs(float(r.mean()) - 1.0) < 0.01 and abs(float(r.std()) - 0.05) < 0.005
    # the hole: no point within 0.5 of the centre
    assert float(r.min()) > 0.5


def test_infinity_points_lie_on_the_lemniscate():
    x = make_synthetic("infinity", 1000, noise=0.0).train.x.double()
    a = INFINITY_SCALE
    # lemniscate of Bernoulli: (x^2 + y^2)^2 = a^2 (x^2 - y^2)
    lhs = x.pow(2).sum(-1).pow(2)
    rhs = a**2 * (x[:, 0].pow(2) - x[:, 1].pow(2))
    assert torch.allclose(lhs, rhs, atol=1e-5)
    assert x[:, 0].abs().max() <= a + 1e-6
    # two holes: nothing near the lobes' centres (+-1.2, 0), and both lobes are populated
    for cx in (-1.2, 1.2):
        assert float((x - torch.tensor([cx, 0.0], dtype=torch.float64)).norm(dim=-1).min()) > 0.3
    assert 0.4 < float((x[:, 0] > 0).double().mean()) < 0.6


def test_mog_components_and_labels():
    ds = make_synthetic("mog", 4000, noise=0.2, seed=1)
    x, y = ds.train.x, ds.train.y
    assert ds.has_labels and set(y.tolist()) == {0, 1}
    for k, centre in enumerate(MOG_CENTRES):
        pts = x[y == k]
        assert torch.allclose(pts.mean(0), torch.tensor(centre), atol=0.03)
        assert torch.allclose(pts.std(0), torch.full((2,), 0.2), atol=0.02)
    assert 0.45 < float((y == 0).float().mean()) < 0.55


def test_sparse_points_have_one_active_coordinate():
    ds = make_synthetic("sparse", 2000, noise=0.0, seed=2)
    x, axis = ds.train.x, ds.train.y
    assert ((x != 0).sum(-1) <= 1).all()
    assert torch.equal(x[torch.arange(2000), 1 - axis], torch.zeros(2000))
    assert abs(float(x[torch.arange(2000), axis].std()) - 1.0) < 0.05


def test_config_fields_are_validated():
    with pytest.raises(ConfigError) as err:
        load(tiny_config(data={"name": "circle", "n_points": 0, "noise": -0.1}))
    text = str(err.value)
    assert "data.n_points: must be > 0, got 0" in text and "data.noise: must be >= 0, got -0.1" in text


def test_unknown_name_lists_the_synthetic_sets():
    with pytest.raises(ConfigError) as err:
        load(tiny_config(data={"name": "circles"}))
    assert str(err.value).startswith("invalid config: data.name: unknown dataset 'circles'; available: ")
    assert "circle" in str(err.value) and "infinity" in str(err.value)
    with pytest.raises(ConfigError, match="unknown dataset 'circles'"):
        DataConfig(name="circles")


def test_bernoulli_likelihood_refuses_real_valued_data():
    raw = tiny_config(model={"latent_dim": 2}, data={"name": "circle"})
    with pytest.raises(DataError) as err:
        make_model(raw, make_synthetic("circle", 100))
    assert "bernoulli" in str(err.value)


def test_trains_with_a_gaussian_likelihood(tmp_path):
    raw = tiny_config(
        data={"name": "circle", "n_points": 200},
        model={"latent_dim": 2, "likelihood": {"kind": "gaussian", "scale": 0.1}},
        train={"epochs": 3},
    )
    _, results = run_training(raw, tmp_path / "run", load_dataset(DataConfig(name="circle", n_points=200)))
    assert math.isfinite(results["elbo"])
    # the validation loss improves over training
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[-1]["valid.loss"] < rows[0]["valid.loss"]
