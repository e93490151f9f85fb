"""InteL-VAE (Miao et al., ICLR 2022) for vaecore: an intermediary latent y ~ q(y|x) with the prior
and KL on y, mapped to the representation z = g(y) that the decoder reads.

One plugin, ``intel``, whose option ``mapping`` picks g: ``circle``, ``holes``, ``cluster``,
``sparse`` or ``hierarchical``. The core routes training, prior sampling and representations
through the ``latent_map`` hook, so g is applied in all three.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch
from torch import nn

import vaecore
from vaecore import validators as v
from vaecore.networks import ACTIVATIONS
from vaecore_intel import mappings as M

__all__ = ["IntelPlugin", "Options", "mappings"]
__version__ = "0.1.0"

mappings = M
MAPPINGS = ("circle", "holes", "cluster", "sparse", "hierarchical")

# which options belong to which mapping (the others must be left unset)
OWNERS: dict[str, tuple[str, ...]] = {
    "eps": ("circle", "holes"),
    "holes": ("holes",),
    "clusters": ("cluster",),
    "sectors": ("cluster",),
    "c1": ("cluster",),
    "c2": ("cluster",),
    "learn_proportions": ("cluster",),
    "floor": ("sparse",),
    "gamma": ("sparse",),
    "hidden": ("sparse", "hierarchical"),
    "activation": ("sparse", "hierarchical"),
    "levels": ("hierarchical",),
    "level_sizes": ("hierarchical",),
}
DEFAULTS: dict[str, Any] = {
    "eps": 1e-3,
    "holes": 2,
    "clusters": 2,
    "c1": 5.0,
    "c2": 0.2,
    "learn_proportions": False,
    "floor": 0.2,
    "gamma": 0.0,
    "levels": 2,
}
DEFAULT_HIDDEN = {"sparse": [10, 10], "hierarchical": [32]}
DEFAULT_ACTIVATION = {"sparse": "relu", "hierarchical": "tanh"}


def _below_one(_instance: Any, _attribute: Any, value: Any) -> None:
    if value is not None and not value < 1:
        raise ValueError(f"must be < 1, got {value!r}")


@attrs.define(kw_only=True)
class Options:
    """Options of the ``intel`` plugin. Mapping-specific options may only be set for their mapping;
    unset ones take the defaults in the README's table."""

    mapping: str = attrs.field(validator=v.one_of(MAPPINGS))
    eps: float | None = attrs.field(default=None, validator=v.gt(0))
    holes: int | None = attrs.field(default=None, validator=v.ge(1))
    clusters: int | None = attrs.field(default=None, validator=v.ge(2))
    sectors: list[int] | None = attrs.field(default=None, validator=v.each(v.ge(2)))
    c1: float | None = attrs.field(default=None, validator=v.gt(0))
    c2: float | None = attrs.field(default=None, validator=[v.gt(0), v.between(0.0, 1.0)])
    learn_proportions: bool | None = None
    floor: float | None = attrs.field(default=None, validator=[v.ge(0), _below_one])
    gamma: float | None = attrs.field(default=None, validator=v.ge(0))
    hidden: list[int] | None = attrs.field(default=None, validator=v.each(v.gt(0)))
    activation: str | None = attrs.field(default=None, validator=v.one_of(tuple(ACTIVATIONS)))
    levels: int | None = attrs.field(default=None, validator=v.ge(2))
    level_sizes: list[int] | None = attrs.field(default=None, validator=v.each(v.gt(0)))

    def validate(self) -> None:
        """Cross-checks, reported at the entry's path (``plugins[0]: ...``)."""
        problems = []
        for name, owners in OWNERS.items():
            if getattr(self, name) is not None and self.mapping not in owners:
                where = " or ".join(repr(o) for o in owners)
                problems.append(f"option {name!r} applies to mapping {where} only, not {self.mapping!r}")
        if self.sectors is not None:
            if len(self.sectors) == 0:
                problems.append("sectors: give at least one plane's sector count")
            elif self.clusters is not None and math.prod(self.sectors) != self.clusters:
                problems.append(
                    f"sectors {self.sectors} make {math.prod(self.sectors)} clusters but clusters = {self.clusters}"
                )
        if self.levels is not None and self.level_sizes is not None:
            problems.append("set levels or level_sizes, not both")
        if self.level_sizes is not None and len(self.level_sizes) < 2:
            problems.append(f"level_sizes needs at least 2 levels, got {self.level_sizes}")
        if problems:
            raise ValueError("; ".join(problems))

    def get(self, name: str) -> Any:
        """The option's value, or its default for this mapping when unset."""
        value = getattr(self, name)
        if value is not None:
            return value
        if name == "hidden":
            return list(DEFAULT_HIDDEN.get(self.mapping, []))
        if name == "activation":
            return DEFAULT_ACTIVATION.get(self.mapping, "relu")
        return DEFAULTS.get(name)

    def plane_sectors(self) -> list[int]:
        """Sector counts per plane (dims 2i, 2i+1); their product is the number of clusters."""
        return list(self.sectors) if self.sectors is not None else [self.get("clusters")]


class IntelPlugin(nn.Module):
    """InteL-VAE latent mapping z = g(y). See the README for each mapping's equations."""

    api_version = vaecore.HOOK_API_VERSION
    Options = Options

    def __init__(self, options: Options):
        super().__init__()
        self.options = options
        self.mapping = options.mapping
        self.latent_dim = 0

    # building -------------------------------------------------------------------------------

    @vaecore.hookimpl
    def setup(self, info):
        o, d = self.options, info.latent_dim
        self.latent_dim = d
        if self.mapping == "holes" and d < 2:
            raise ValueError(f"intel: mapping 'holes' needs latent_dim >= 2, got {d}")
        if self.mapping == "cluster":
            sectors = o.plane_sectors()
            learn = o.get("learn_proportions")
            if d == 1:
                if sectors != [2]:
                    raise ValueError(
                        "intel: with latent_dim = 1 the cluster mapping makes exactly 2 clusters, "
                        f"got sectors {sectors}"
                    )
                boundary = torch.zeros(1)
                if learn:
                    self.boundary = nn.Parameter(boundary)
                else:
                    self.register_buffer("boundary", boundary)
            else:
                if 2 * len(sectors) > d:
                    raise ValueError(
                        f"intel: sectors {sectors} need {2 * len(sectors)} latent dimensions (one plane each), "
                        f"latent_dim is {d}"
                    )
                self.logits = nn.ParameterList(nn.Parameter(torch.zeros(k), requires_grad=bool(learn)) for k in sectors)
        elif self.mapping == "sparse":
            self.selector = M.DimensionSelector(d, o.get("hidden"), o.get("activation"), o.get("floor"))
        elif self.mapping == "hierarchical":
            sizes = o.level_sizes if o.level_sizes is not None else M.even_levels(d, o.get("levels"))
            if sum(sizes) != d or min(sizes) < 1:
                raise ValueError(f"intel: hierarchical levels {sizes} must be positive and sum to latent_dim = {d}")
            self.hierarchy = M.Hierarchy(sizes, o.get("hidden"), o.get("activation"))

    # the map --------------------------------------------------------------------------------

    def proportions(self) -> list[torch.Tensor]:
        """The cluster proportions per plane (1-D: [P(y < b), P(y > b)] under N(0, 1))."""
        if self.latent_dim == 1:
            p0 = 0.5 * (1 + torch.erf(self.boundary / math.sqrt(2)))
            return [torch.cat([p0, 1 - p0])]
        return [torch.softmax(u, 0) for u in self.logits]

    def g(self, y: torch.Tensor) -> torch.Tensor:
        """The mapping itself (no caching): ``y`` ``(..., D)`` -> ``z`` ``(..., D)``."""
        o = self.options
        if self.mapping == "circle":
            return M.circle(y, o.get("eps"))
        if self.mapping == "holes":
            return M.holes_map(y, o.get("eps"), o.get("holes"))
        if self.mapping == "cluster":
            c1, c2 = o.get("c1"), o.get("c2")
            if self.latent_dim == 1:
                return M.split_1d(y, self.boundary, c1, c2)
            parts = []
            for i, probs in enumerate(self.proportions()):
                parts.append(M.sector_map(y[..., 2 * i : 2 * i + 2], probs, c1, c2))
            parts.append(y[..., 2 * len(parts) :])
            return torch.cat(parts, dim=-1)
        if self.mapping == "sparse":
            return y * self.selector(y)
        return self.hierarchy(y)

    @vaecore.hookimpl
    def latent_map(self, y, ctx):
        if self.mapping == "sparse":
            ds = self.selector(y)
            ctx.extras.of(self)["ds"] = ds  # the selector output of this forward pass, for extra_loss
            return y * ds
        return self.g(y)

    # losses and reports ---------------------------------------------------------------------

    @vaecore.hookimpl
    def extra_loss(self, out, ctx):
        if self.mapping != "sparse":
            return None
        ds = out.extras.of(self).get("ds")
        if ds is None:  # an output not made by model.forward
            ds = self.selector(out.y)
        return {"sparsity": vaecore.Term(M.sparsity_loss(ds), weight=float(self.options.get("gamma")))}

    @torch.no_grad()
    def _proportion_metrics(self) -> dict[str, float]:
        props = self.proportions()
        if len(props) == 1:
            return {f"prop_{k}": float(p) for k, p in enumerate(props[0])}
        return {f"plane{i}_prop_{k}": float(p) for i, ps in enumerate(props) for k, p in enumerate(ps)}

    @vaecore.hookimpl
    def on_epoch_end(self, epoch, metrics, ctx):
        if self.mapping == "cluster":
            return self._proportion_metrics()
        return None

    @torch.no_grad()
    def cluster_of(self, y: torch.Tensor) -> torch.Tensor:
        """The cluster index of points y ``(N, D)`` (mixed radix over the planes' sectors)."""
        if self.latent_dim == 1:
            return (y[..., 0] > self.boundary).long()
        index = torch.zeros(y.shape[:-1], dtype=torch.long)
        for i, probs in enumerate(self.proportions()):
            index = index * len(probs) + M.sector_index(y[..., 2 * i : 2 * i + 2], probs)
        return index

    @vaecore.hookimpl
    def eval_metrics(self, model, split, ctx):
        """Cluster: proportions and the fraction of the split's posterior means in each cluster.
        Circle: mean and minimum norm of g(mean). Sparse: mean selector output and eq. 7."""
        if self.mapping not in ("cluster", "circle", "sparse"):
            return None
        mu = torch.cat([posterior.mean for _, posterior in vaecore.encode_split(model, split, 500, ctx)])
        with torch.no_grad():
            if self.mapping == "cluster":
                result: dict[str, Any] = self._proportion_metrics()
                k = math.prod(len(p) for p in self.proportions())
                counts = torch.bincount(self.cluster_of(mu), minlength=k).float() / len(mu)
                result["data_fraction"] = counts.tolist()
                return result
            if self.mapping == "circle":
                norms = self.g(mu).norm(dim=-1)
                return {"norm_mean": float(norms.mean()), "norm_min": float(norms.min())}
            ds = self.selector(mu)
            return {"ds_mean": float(ds.mean()), "sparsity": float(M.sparsity_loss(ds))}
