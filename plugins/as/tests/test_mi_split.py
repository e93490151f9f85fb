"""The classifier's estimate of I_q against the core's whole-split estimator ``mi_split`` on a
trained model (real data: the first 300 rows of the shipped binarized MNIST)."""

from __future__ import annotations

import math

import pytest
import torch
from as_helpers import standalone
from vaecore_as import classifier_mi, fit_classifier

from vaecore.testing import binarized_mnist, run_training, tiny_config

functional = pytest.importorskip(
    "vaecore.metrics.functional", reason="the core diagnostics (vaecore.metrics) are not there"
)

N = 300


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A plain VAE with a 2-d latent (so posteriors overlap and I_q is well below log N)."""
    torch.manual_seed(0)
    data = binarized_mnist(N, 100, 100)
    raw = tiny_config(
        [],
        model={"latent_dim": 2, "encoder": {"hidden": [64]}, "decoder": {"hidden": [64]}},
        train={"epochs": 30, "batch_size": 25},
        eval={"nll_samples": 0, "probes": False},
    )
    trainer, _ = run_training(raw, tmp_path_factory.mktemp("mi") / "run", data)
    model = trainer.model.eval()
    with torch.no_grad():
        posterior, _ = model.encode(data.train.x, model.context(training=False))
    return posterior.loc, posterior.log_var


def _mi_split(loc, log_var, draws=10):
    values = [
        float(functional.mutual_information(loc, log_var, loc + (0.5 * log_var).exp() * torch.randn_like(loc)))
        for _ in range(draws)
    ]
    mean = sum(values) / draws
    return mean, (sum((v - mean) ** 2 for v in values) / (draws - 1)) ** 0.5


def test_classifier_agrees_with_mi_split(trained):
    loc, log_var = trained
    torch.manual_seed(0)
    truth, spread = _mi_split(loc, log_var)
    assert 1.0 < truth < math.log(N) - 1.0  # a non-trivial regime: neither collapsed nor saturated

    def sample(index):
        return loc[index] + (0.5 * log_var[index]).exp() * torch.randn(len(index), loc.shape[1])

    plugin = standalone(N, 2, hidden=[64, 64])  # one exact head of 300 classes
    assert plugin.heads == 1
    fit_classifier(plugin, sample, 1500, batch_size=128, lr=3e-3)
    est = classifier_mi(plugin, sample, rounds=40)
    print(f"mi_split {truth:.3f} +- {spread:.3f}; entropy form {est['mi_entropy']:.3f}, mi_ba {est['mi_ba']:.3f}")
    # Tolerance 0.15 nats (about 2% of log N): the toy problems converge to within 0.05-0.1 nats
    # from below (an under-fitted classifier is under-confident), and the two Monte Carlo
    # estimates each carry about 0.02 nats of noise (``spread`` is measured, not assumed).
    assert spread < 0.05
    assert est["mi_entropy"] == pytest.approx(truth, abs=0.15)
    assert est["mi_ba"] == pytest.approx(truth, abs=0.15)


def test_factorised_estimate_is_a_lower_bound(trained):
    loc, log_var = trained
    torch.manual_seed(0)
    truth, _ = _mi_split(loc, log_var)

    def sample(index):
        return loc[index] + (0.5 * log_var[index]).exp() * torch.randn(len(index), loc.shape[1])

    plugin = standalone(N, 2, hidden=[64, 64], heads=2)  # 2 heads of 18 classes
    fit_classifier(plugin, sample, 1500, batch_size=128, lr=3e-3)
    est = classifier_mi(plugin, sample, rounds=40)
    mi_entropy, mi_ba = est["mi_entropy"], est["mi_ba"]
    print(f"mi_split {truth:.3f}; 2 heads of {plugin.classes}: entropy form {mi_entropy:.3f}, mi_ba {mi_ba:.3f}")
    assert est["mi_entropy"] < truth + 0.05 and est["mi_ba"] < truth + 0.05
