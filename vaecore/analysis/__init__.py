"""Latent-space analysis: geodesics, traversals, interpolations, latent space optimisation,
training curves, figures.

The functions behind ``vaecore sample | traverse | interpolate | analyze | lso | curves`` take a
loaded run (:func:`vaecore.load_run`) or run folders, write their figures into a folder and return
an :class:`AnalysisResult`: the numbers (a dict) with the figures (``result.figures``). Each name
is imported on first use, so the command line's ``vaecore.analysis.cli`` stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vaecore.lazy import lazy_getattr

_LAZY = {
    **dict.fromkeys(
        ("AnalysisResult", "analyze", "interpolate", "lso", "sample", "traverse"), "vaecore.analysis.commands"
    ),
    "curves": "vaecore.analysis.curves",
    **dict.fromkeys(
        ("euclidean_path", "fisher_rao_distance", "fisher_rao_geodesic", "fisher_rao_length"),
        "vaecore.analysis.geometry",
    ),
}
"""Public name -> the module it lives in."""

if TYPE_CHECKING:
    from vaecore.analysis.commands import AnalysisResult, analyze, interpolate, lso, sample, traverse
    from vaecore.analysis.curves import curves
    from vaecore.analysis.geometry import (
        euclidean_path,
        fisher_rao_distance,
        fisher_rao_geodesic,
        fisher_rao_length,
    )

__getattr__ = lazy_getattr(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AnalysisResult",
    "analyze",
    "curves",
    "euclidean_path",
    "fisher_rao_distance",
    "fisher_rao_geodesic",
    "fisher_rao_length",
    "interpolate",
    "lso",
    "sample",
    "traverse",
]
