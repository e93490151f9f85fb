"""Figures of the analysis commands (matplotlib is the optional extra ``vaecore[plots]``).

Every figure is saved as PNG (150 dpi) and in each extra format of :data:`STYLE` (``pdf``,
``svg``: ``--format png,pdf``), with a title line naming the run and the checkpoint
(:func:`styled`). Each function returns the names of the files it wrote.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import torch

from vaecore.errors import VaecoreError

FORMATS = ("png", "pdf", "svg")


@attrs.define
class Style:
    """What every figure of the current command shares: its formats and its provenance line."""

    formats: tuple[str, ...] = ("png",)
    caption: str = ""


STYLE = Style()


@contextlib.contextmanager
def styled(formats: tuple[str, ...] = ("png",), caption: str = "") -> Iterator[None]:
    """Figures made inside the block are saved in ``formats`` with ``caption`` under the title."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise VaecoreError(f"--format {bad[0]}: not a figure format; choose from {', '.join(FORMATS)}")
    old = attrs.evolve(STYLE)
    STYLE.formats, STYLE.caption = tuple(dict.fromkeys(("png", *formats))), caption
    try:
        yield
    finally:
        STYLE.formats, STYLE.caption = old.formats, old.caption


def _title(fig: Any, title: str) -> None:
    text = f"{title}\n{STYLE.caption}" if STYLE.caption else title
    fig.suptitle(text, fontsize=9)


def _save(fig: Any, path: Path) -> list[str]:
    """Save ``fig`` as ``path`` (PNG) and in the other formats; returns the file names."""
    plt = pyplot()
    fig.tight_layout()
    names = []
    for fmt in STYLE.formats:
        target = path.with_suffix(f".{fmt}")
        fig.savefig(target, dpi=150)
        names.append(target.name)
    plt.close(fig)
    return names


def pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend, or a clear message when missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise VaecoreError("figures need matplotlib: pip install 'vaecore[plots]'") from exc
    return plt


def image_shape(input_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The 2-D image shape of an input, or None when inputs are not images (e.g. 2-D points)."""
    if len(input_shape) == 2:
        return input_shape[0], input_shape[1]
    if len(input_shape) == 3 and input_shape[0] in (1, 3):
        return input_shape[1], input_shape[2]
    side = math.isqrt(math.prod(input_shape))
    return (side, side) if side * side == math.prod(input_shape) and side > 4 else None


def image_grid(
    images: torch.Tensor,
    shape: tuple[int, int],
    path: Path,
    rows: int,
    title: str = "",
    row_labels: list[str] | None = None,
) -> list[str]:
    """Save ``images`` (N, ...) as a grid of ``rows`` rows of grey-scale pictures."""
    plt = pyplot()
    n = images.shape[0]
    cols = -(-n // rows)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9 + 0.6, rows * 0.9 + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if i < n:
            ax.imshow(images[i].reshape(shape).clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
    if row_labels:
        for r, label in enumerate(row_labels):
            axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    _title(fig, title)
    return _save(fig, path)


def bar_chart(
    values: list[float],
    labels: list[str],
    path: Path,
    title: str,
    ylabel: str,
    xlabel: str,
    log: bool = False,
    threshold: float | None = None,
) -> list[str]:
    """Bars with their labels; ``threshold`` is drawn as a dashed line with the count above it."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4.5, 0.25 * len(values) + 1.5), 3.4))
    ax.bar(range(len(values)), values, color="tab:blue")
    ax.set_xticks(range(len(values)), labels, fontsize=6, rotation=90)
    if log:
        ax.set_yscale("log")
    if threshold is not None:
        above = sum(v > threshold for v in values)
        ax.axhline(
            threshold, color="tab:red", linestyle="--", linewidth=1, label=f"threshold {threshold:g} ({above} above)"
        )
        ax.legend(fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _title(fig, title)
    return _save(fig, path)


def line_chart(
    series: dict[str, tuple[list[int], list[float]]],
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    log: bool = False,
) -> list[str]:
    """One line per series, with a legend."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, label=label, marker="o" if len(xs) < 30 else None, markersize=3)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    _title(fig, title)
    return _save(fig, path)


def panels(
    series: dict[str, dict[str, tuple[list[float], list[float]]]], path: Path, title: str, xlabel: str
) -> list[str]:
    """One panel per key (its y label), one line per run in each, a shared legend."""
    plt = pyplot()
    keys = list(series)
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows + 0.6), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for run, (xs, ys) in series[key].items():
            ax.plot(xs, ys, label=run, marker="o" if len(xs) < 30 else None, markersize=2.5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(key)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(keys) :]:
        ax.set_visible(False)
    _title(fig, title)
    return _save(fig, path)


def scatter(
    points: dict[str, tuple[torch.Tensor, torch.Tensor | None]],
    path: Path,
    title: str,
    axis_labels: tuple[str, str] = ("dimension 1", "dimension 2"),
) -> list[str]:
    """Side-by-side 2-D scatter plots, each coloured by its labels (with a class legend) when given."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(points), figsize=(4.2 * len(points), 4.4), squeeze=False)
    for ax, (name, (xy, labels)) in zip(axes.flat, points.items()):
        colours = None if labels is None else labels.numpy()
        dots = ax.scatter(xy[:, 0].numpy(), xy[:, 1].numpy(), c=colours, s=3, cmap="tab10", alpha=0.6)
        if labels is not None:
            ax.legend(*dots.legend_elements(), title="label", fontsize=6, title_fontsize=7, markerscale=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(axis_labels[0])
        ax.set_ylabel(axis_labels[1])
        ax.set_aspect("equal", adjustable="datalim")
    _title(fig, title)
    return _save(fig, path)
