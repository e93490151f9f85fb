"""Unit tests of the InteL mappings' maths: hand-computed values, continuity, differentiability and
the property each mapping claims."""

from __future__ import annotations

import math

import pytest
import torch
from vaecore_intel import IntelPlugin, Options
from vaecore_intel import mappings as M

from vaecore.hooktypes import ModelInfo

torch.set_default_dtype(torch.float32)


def make(latent_dim: int = 2, **options) -> IntelPlugin:
    plugin = IntelPlugin(Options(**options))
    info = ModelInfo(latent_dim=latent_dim, feature_dim=8, input_shape=(2,), n_train=10, likelihood="gaussian")
    plugin.setup(info=info)
    return plugin.double()


def polar(r: float | torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    return torch.stack([r * torch.cos(angle), r * torch.sin(angle)], dim=-1)


ALL_MAPS = [
    dict(mapping="circle"),
    dict(mapping="holes"),
    dict(mapping="holes", holes=3),
    dict(mapping="cluster", clusters=3),
    dict(mapping="cluster", clusters=4, sectors=[2, 2]),
    dict(mapping="cluster", clusters=2, c2=0.5, learn_proportions=True),
    dict(mapping="sparse"),
    dict(mapping="hierarchical", level_sizes=[1, 1, 2]),
]


# hand-computed values -----------------------------------------------------------------------


def test_circle_values_and_norm():
    y = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=torch.float64)
    z = M.circle(y, eps=1e-3)
    assert torch.allclose(z[0], torch.tensor([3.0, 4.0], dtype=torch.float64) / 5.001)
    assert torch.equal(z[1], torch.zeros(2, dtype=torch.float64))  # continuous at the origin


def test_circle_outputs_have_unit_norm_away_from_origin():
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(5000, 6, generator=gen, dtype=torch.float64)
    y = y[y.norm(dim=-1) > 0.1]
    norms = make(6, mapping="circle").g(y).norm(dim=-1)
    assert norms.min() > 0.99 and norms.max() < 1.0
    # exactly ||y|| / (||y|| + eps)
    ny = y.norm(dim=-1)
    assert torch.allclose(norms, ny / (ny + 1e-3))


def test_two_hole_gluing_eq5_values():
    u = torch.tensor([[0.6, 0.8], [1.0, 0.0], [-0.6, -0.8]], dtype=torch.float64)
    # factor at |u1| = 0.6: sqrt(4/3 - 0.16) - 1/sqrt(3) = 1.0832051 - 0.5773503 = 0.5058548
    expected = torch.tensor([[0.6, 0.8 * 0.5058548], [1.0, 0.0], [-0.6, -0.8 * 0.5058548]], dtype=torch.float64)
    assert torch.allclose(M.glue_two(u), expected, atol=1e-7)


def test_holes_glue_points_meet_at_origin():
    # (0, 1) and (0, -1) are glued (two holes, eq. 5)
    g = make(mapping="holes").g(torch.tensor([[0.0, 2.0], [0.0, -2.0]], dtype=torch.float64))
    assert g.abs().max() < 1e-7
    # three holes: (0, 1) rotated by 120 and 240 degrees all go to the origin, other points do not
    plugin = make(mapping="holes", holes=3)
    glue = polar(1.5, torch.tensor([90.0, 210.0, 330.0], dtype=torch.float64) * math.pi / 180)
    assert plugin.g(glue).abs().max() < 1e-7
    other = polar(1.5, torch.tensor([0.0, 150.0, 270.0], dtype=torch.float64) * math.pi / 180)
    # r(theta) = |sin(3 (theta - 90deg) / 2)|: |sin(-135deg)| = 0.7071 at 0, 1 half-way between
    # glue points (150 and 270 degrees); times the circle projection 1.5 / (1.5 + eps)
    expected = torch.tensor([0.70711, 1.0, 1.0], dtype=torch.float64) * 1.5 / 1.501
    assert torch.allclose(plugin.g(other).norm(dim=-1), expected, atol=1e-5)


def test_holes_image_has_two_loops():
    """The image of the circle under the two-hole map crosses the origin twice (one figure-eight):
    its winding number around the centre of each lobe is +-1."""
    theta = torch.linspace(0, 2 * math.pi, 4001, dtype=torch.float64)
    z = make(mapping="holes").g(polar(1.0, theta))
    for centre in ([0.6, 0.0], [-0.6, 0.0]):
        d = z - torch.tensor(centre, dtype=torch.float64)
        angle = torch.atan2(d[:, 1], d[:, 0])
        winding = torch.remainder(angle.diff() + math.pi, 2 * math.pi) - math.pi
        assert abs(abs(float(winding.sum())) / (2 * math.pi) - 1) < 1e-6


def test_cluster_hand_value_four_sectors():
    # K = 4, first boundary along -e2: y = (1, -0.5) is in the sector [-90, 0] degrees, its distance
    # to the boundary is 0.5 (to the ray at 0 degrees), bisector at -45 degrees
    f64 = torch.float64
    z = M.sector_map(torch.tensor([[1.0, -0.5]], dtype=f64), torch.full((4,), 0.25, dtype=f64), 5.0, 0.2)
    push = 5 * 0.5**0.2 / math.sqrt(2)
    assert torch.allclose(z, torch.tensor([[1 + push, -0.5 - push]], dtype=torch.float64))


def test_cluster_two_sectors_move_only_first_coordinate_like_1d():
    gen = torch.Generator().manual_seed(1)
    y = torch.randn(200, 3, generator=gen, dtype=torch.float64)
    two = make(3, mapping="cluster", clusters=2, c2=0.5).g(y)
    one = M.split_1d(y, torch.zeros(1, dtype=torch.float64), 5.0, 0.5)
    assert torch.allclose(two, one)
    assert torch.allclose(two[:, 1:], y[:, 1:], rtol=0, atol=1e-12)


def test_split_1d_hand_value_and_proportions():
    f64 = torch.float64
    z = M.split_1d(torch.tensor([[2.0], [0.0]], dtype=f64), torch.tensor([0.5], dtype=f64), 5.0, 0.5)
    assert torch.allclose(z[:, 0], torch.tensor([2 + 5 * math.sqrt(1.5), -5 * math.sqrt(0.5)], dtype=torch.float64))
    plugin = make(1, mapping="cluster", learn_proportions=True)
    with torch.no_grad():
        plugin.boundary.fill_(0.5)
    p0 = 0.5 * (1 + math.erf(0.5 / math.sqrt(2)))  # Phi(0.5) = 0.6915
    assert torch.allclose(plugin.proportions()[0], torch.tensor([p0, 1 - p0], dtype=torch.float64))


def test_sparsity_loss_hand_value():
    # rows (1, .2) and (.2, 1): each normalises to (5/6, 1/6), entropy 0.4505612; their mean
    # (.6, .6) has entropy log 2 = 0.6931472
    ds = torch.tensor([[1.0, 0.2], [0.2, 1.0]], dtype=torch.float64)
    assert M.sparsity_loss(ds).item() == pytest.approx(0.4505612 - 0.6931472, abs=1e-6)
    # leading sample dimension: the mean over K of the per-sample values
    stacked = torch.stack([ds, torch.full((2, 2), 0.5, dtype=torch.float64)])
    assert M.sparsity_loss(stacked).item() == pytest.approx((0.4505612 - 0.6931472 + 0.0) / 2, abs=1e-6)


# properties ------------------------------------------------------------------------------


@pytest.mark.parametrize("proportions", [[1 / 3] * 3, [0.5, 0.3, 0.2], [0.7, 0.3]])
def test_cluster_boundaries_fixed_and_continuous_across_them(proportions):
    probs = torch.tensor(proportions, dtype=torch.float64)
    bounds = M.START_ANGLE + 2 * math.pi * torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.float64), probs]), 0)[:-1]
    radii = torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64)
    for angle in bounds:
        on = polar(radii, angle.expand(3))
        assert torch.allclose(M.sector_map(on, probs, 5.0, 0.2), on, atol=1e-9)  # boundaries fixed
        previous = None
        for delta in (1e-3, 1e-5, 1e-7, 1e-9):
            left = M.sector_map(polar(radii, (angle - delta).expand(3)), probs, 5.0, 0.2)
            right = M.sector_map(polar(radii, (angle + delta).expand(3)), probs, 5.0, 0.2)
            jump = float((left - right).norm(dim=-1).max())
            if previous is not None:
                assert jump < previous  # the gap shrinks to 0 with the distance: no jump
            previous = jump
            # Hoelder continuity: each side moves by at most c1 * dis^c2 with dis <= r * delta, and
            # the two inputs are 2 r delta apart
            assert jump <= (2 * 5.0 * (2.5 * delta) ** 0.2 + 2 * 2.5 * delta) * (1 + 1e-6)
        assert previous < 0.2  # versus a push of about 5 * r^0.2 = 6 inside the sectors


def test_cluster_pushes_points_apart():
    gen = torch.Generator().manual_seed(2)
    y = torch.randn(4000, 2, generator=gen, dtype=torch.float64)
    probs = torch.full((3,), 1 / 3, dtype=torch.float64)
    z = M.sector_map(y, probs, 5.0, 0.2)
    k = M.sector_index(y, probs)
    # each point moves away from the origin along its sector's bisector by c1 * dis^c2
    mid = M.START_ANGLE + 2 * math.pi * (k.double() + 0.5) / 3
    along = ((z - y) * torch.stack([torch.cos(mid), torch.sin(mid)], -1)).sum(-1)
    assert torch.allclose((z - y).norm(dim=-1), along)
    assert (along >= 0).all()
    # clusters separate: the smallest gap between two clusters' points (away from the boundaries)
    # grows far beyond that of y
    far = along > 3.0

    def gap(points):
        return min(
            float(torch.cdist(points[far & (k == a)], points[far & (k == b)]).min())
            for a, b in ((0, 1), (1, 2), (0, 2))
        )

    assert gap(z) > gap(y) + 2.0
    # the fraction of points in each cluster is the sector's proportion (prior mass)
    assert torch.allclose(torch.bincount(k, minlength=3).double() / len(k), probs, atol=0.03)


def test_sparse_outputs_keep_at_least_the_floor():
    plugin = make(6, mapping="sparse", floor=0.3)
    with torch.no_grad():
        for p in plugin.selector.parameters():
            p.normal_(0, 3)  # saturate the sigmoid both ways
    y = torch.randn(2000, 6, dtype=torch.float64)
    ds = plugin.selector(y)
    z = plugin.g(y)
    assert ds.min() >= 0.3 and ds.max() <= 1.0
    assert ds.min() < 0.31 and ds.max() > 0.99  # both ends are reached
    assert torch.allclose(z, y * ds)
    assert ((z.abs() >= 0.3 * y.abs() - 1e-12) & (z.abs() <= y.abs() + 1e-12)).all()
    assert (torch.sign(z) == torch.sign(y)).all()


def test_hierarchical_level_depends_only_on_higher_levels():
    plugin = make(5, mapping="hierarchical", level_sizes=[1, 2, 2])
    y = torch.randn(5, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(plugin.g, y)  # (5, 5): dz_i / dy_j
    level = torch.tensor([0, 1, 1, 2, 2])
    later = level.unsqueeze(1) < level.unsqueeze(0)  # j on a lower level than i
    assert torch.equal(jac[later], torch.zeros(int(later.sum()), dtype=torch.float64))
    assert jac[~later].abs().sum() > 0
    assert jac[0, 0] == 1.0  # z_0 = y_0
    # the lowest level does read the highest one (through z_1)
    assert jac[3:, 0].abs().sum() > 0


def test_even_levels():
    assert M.even_levels(10, 3) == [3, 3, 4]
    assert M.even_levels(4, 2) == [2, 2]


# shapes and differentiability -----------------------------------------------------------------


@pytest.mark.parametrize("options", ALL_MAPS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_shape_generic(options):
    plugin = make(4, **options)
    y = torch.randn(3, 7, 4, dtype=torch.float64)
    z = plugin.g(y)
    assert z.shape == y.shape
    assert torch.allclose(z.reshape(21, 4), plugin.g(y.reshape(21, 4)))


@pytest.mark.parametrize("options", ALL_MAPS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_differentiable(options):
    plugin = make(4, **options)
    gen = torch.Generator().manual_seed(3)
    y = torch.randn(6, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(plugin.g, (y,), eps=1e-7, atol=1e-4)
    # finite gradients at the special points: origin, sector boundaries, glue points
    special = torch.tensor(
        [[0.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.5, 0.0], [1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]],
        dtype=torch.float64,
        requires_grad=True,
    )
    plugin.g(special).sum().backward()
    assert torch.isfinite(special.grad).all()
    params = [p for p in plugin.parameters() if p.requires_grad]
    if params:
        y2 = torch.randn(50, 4, generator=gen, dtype=torch.float64)
        grads = torch.autograd.grad(plugin.g(y2).pow(2).sum(), params)
        assert all(torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0  # learnable parts get a gradient


def test_learnable_proportions_get_gradient_in_2d():
    plugin = make(2, mapping="cluster", clusters=3, learn_proportions=True)
    y = torch.randn(100, 2, dtype=torch.float64)
    (grad,) = torch.autograd.grad(plugin.g(y).pow(2).sum(), [plugin.logits[0]])
    assert grad.abs().sum() > 0
    fixed = make(2, mapping="cluster", clusters=3)
    assert not any(p.requires_grad for p in fixed.parameters())


def test_minimising_the_sparsity_loss_sparsifies_the_selector():
    """Gradient descent on eq. 7 alone makes each DS(y) concentrate on few dimensions (lower
    per-sample entropy) while different y use different dimensions (entropy of the mean stays high).
    At identical outputs eq. 7 is a saddle (zero gradient), so the selector starts from varied ones."""
    torch.manual_seed(0)
    plugin = make(8, mapping="sparse", hidden=[32])
    with torch.no_grad():
        for p in plugin.selector.parameters():
            p.mul_(3.0)
    y = torch.randn(256, 8, dtype=torch.float64)
    before = M.sparsity_loss(plugin.selector(y)).item()
    entropy_before = M.normalised_entropy(plugin.selector(y)).mean().item()
    opt = torch.optim.Adam(plugin.selector.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        M.sparsity_loss(plugin.selector(y)).backward()
        opt.step()
    ds = plugin.selector(y).detach()
    after = M.sparsity_loss(ds).item()
    assert after < before - 0.2
    # per-sample entropy down to about its floor-limited minimum (two dimensions at 1, six at the
    # floor 0.2: 1.767), entropy of the batch mean close to log 8
    assert M.normalised_entropy(ds).mean() < min(entropy_before - 0.1, 1.8)
    assert M.normalised_entropy(ds.mean(0)) > math.log(8) - 0.05
    # the fraction of coordinates at the floor (dimensions switched off) grows
    assert (ds < 0.3).float().mean() > 0.6
