"""Unit tests of the VAE-AS maths: factorisation, labels, cross-entropy and entropy by hand,
and the toy problems where I_q is known (the estimate converges to the truth)."""

from __future__ import annotations

import math

import pytest
import torch
from as_helpers import exact_mi, gaussian_sampler, standalone
from vaecore_as import classifier_mi, factorise, fit_classifier, smallest_base

# ----------------------------------------------------------------------------------------------
# factorisation (section 3.3)


@pytest.mark.parametrize(
    ("n", "heads", "classes", "expected"),
    [
        (50_000, None, None, (2, 224)),  # 223**2 = 49,729 < 50,000 <= 224**2 = 50,176
        (1_000, None, None, (1, 1_000)),  # within max_classes: the exact, unfactorised classifier
        (1_024, None, None, (1, 1_024)),
        (1_025, None, None, (2, 33)),  # 32**2 = 1,024 < 1,025
        (100, 3, None, (3, 5)),  # 4**3 = 64 < 100 <= 125
        (1_000, None, 10, (3, 10)),
        (1_001, None, 10, (4, 10)),
        (1, None, None, (1, 2)),
        (55_000, None, None, (2, 235)),  # the paper's MNIST training set
    ],
)
def test_factorise(n, heads, classes, expected):
    k, v = factorise(n, heads, classes)
    assert (k, v) == expected
    assert v**k >= n


def test_factorise_max_classes_and_refusal():
    assert factorise(50_000, max_classes=100) == (3, 37)  # 36**3 = 46,656 < 50,000 <= 50,653
    assert smallest_base(50_000, 2) == 224
    with pytest.raises(ValueError, match="give 100 labels, fewer than the 101 training examples"):
        factorise(101, heads=2, classes=10)


def test_labels_are_base_v_digits_and_unique():
    plugin = standalone(1000, 2, heads=3, classes=10, hidden=[])
    assert plugin.labels(torch.tensor([0, 7, 57, 999])).tolist() == [[0, 0, 0], [7, 0, 0], [7, 5, 0], [9, 9, 9]]
    plugin = standalone(500, 2)  # auto: 1 head of 500
    assert (plugin.heads, plugin.classes) == (1, 500)
    plugin = standalone(2000, 2)  # auto: 2 heads of 45 (44**2 = 1936 < 2000)
    digits = plugin.labels(torch.arange(2000))
    assert (plugin.heads, plugin.classes) == (2, 45)
    assert len({tuple(row) for row in digits.tolist()}) == 2000


def test_cross_entropy_and_entropy_by_hand():
    # A linear classifier with zero weights outputs its bias: fixed, known distributions per head.
    plugin = standalone(16, 3, heads=2, classes=4, hidden=[])
    p0 = torch.tensor([0.1, 0.2, 0.3, 0.4])
    p1 = torch.tensor([0.25, 0.25, 0.25, 0.25])
    with torch.no_grad():
        plugin.net[0].weight.zero_()
        plugin.net[0].bias.copy_(torch.cat([p0.log(), p1.log()]))
    index = torch.tensor([6, 9])  # digits (2, 1) and (1, 2)
    with torch.no_grad():
        sc, entropy = plugin.statistics(torch.randn(5, 2, 3), index)
    expected_sc = 0.5 * ((-math.log(0.3) - math.log(0.25)) + (-math.log(0.2) - math.log(0.25)))
    h0 = -sum(p * math.log(p) for p in (0.1, 0.2, 0.3, 0.4))
    assert float(sc) == pytest.approx(expected_sc, rel=1e-6)
    assert float(entropy) == pytest.approx(h0 + math.log(4), rel=1e-6)  # product: entropies add
    est = classifier_mi(plugin, lambda idx: torch.zeros(len(idx), 3), rounds=1)
    assert est["mi_entropy"] == pytest.approx(math.log(16) - h0 - math.log(4), rel=1e-5)
    assert est["mi"] == est["mi_ba"]  # the default estimator's value is log N - SC


# ----------------------------------------------------------------------------------------------
# toy problems with known I_q: N = 64 posteriors in 4 dimensions


N, D = 64, 4


def _toy(kind: str):
    gen = torch.Generator().manual_seed(1)
    if kind == "separated":  # means 3 apart on average, sd 0.01: I_q = log N
        return 3 * torch.randn(N, D, generator=gen), torch.full((N, D), 0.01)
    if kind == "prior":  # every posterior is the prior: I_q = 0
        return torch.zeros(N, D), torch.ones(N, D)
    if kind == "groups":  # 8 consecutive blocks of 8 identical posteriors, blocks separated: I_q = log 8
        return torch.repeat_interleave(3 * torch.randn(8, D, generator=gen), 8, 0), torch.full((N, D), 0.05)
    if kind == "overlap":  # partly overlapping posteriors: I_q in between (3.7 nats)
        return torch.randn(N, D, generator=gen), torch.full((N, D), 0.3)
    raise ValueError(kind)


def _converge(kind: str, heads: int, steps: int = 900):
    torch.manual_seed(0)
    mu, sd = _toy(kind)
    sample = gaussian_sampler(mu, sd)
    plugin = standalone(N, D, hidden=[64], heads=heads)
    fit_classifier(plugin, sample, steps // 6, batch_size=128, lr=1e-2)
    early = classifier_mi(plugin, sample)
    fit_classifier(plugin, sample, steps - steps // 6, batch_size=128, lr=1e-2)
    late = classifier_mi(plugin, sample)
    return plugin, early, late, exact_mi(mu, sd)


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize(("kind", "truth"), [("separated", math.log(N)), ("prior", 0.0), ("groups", math.log(8))])
def test_estimate_converges_to_known_mi(kind, truth, heads):
    plugin, early, late, exact = _converge(kind, heads)
    assert (plugin.heads, plugin.classes) == ((1, 64) if heads == 1 else (2, 8))
    assert exact == pytest.approx(truth, abs=0.01)  # the toy is what it claims to be
    # converged: within 0.05 nats (about 1% of log N) for both estimators ...
    assert late["mi_entropy"] == pytest.approx(truth, abs=0.05)
    assert late["mi_ba"] == pytest.approx(truth, abs=0.05)
    # ... and converging: closer to the truth at the end than early on (or already there)
    assert abs(late["mi_entropy"] - truth) <= max(abs(early["mi_entropy"] - truth), 0.01)


def test_overlapping_posteriors_exact_classifier_vs_factorised_lower_bound():
    _, _, one_head, exact = _converge("overlap", heads=1, steps=1200)
    assert 3.5 < exact < 3.9
    assert one_head["mi_entropy"] == pytest.approx(exact, abs=0.1)
    # Two heads: the product of per-digit marginals has more entropy than q(x|z) (their total
    # correlation), so the factorised estimate is a lower bound: far below here, where each z is
    # shared by several examples whose digits are unrelated.
    _, _, two_heads, _ = _converge("overlap", heads=2, steps=1200)
    assert two_heads["mi_entropy"] < exact - 0.5
    assert two_heads["mi_ba"] < exact
