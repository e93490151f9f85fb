"""Figures of the analysis commands (matplotlib is the optional extra ``vaecore[plots]``).

Every figure is saved as PNG (150 dpi) and in each extra format of :data:`STYLE` (``pdf``,
``svg``: ``--format png,pdf``), with a title line naming the run and the checkpoint
(:func:`styled`). Each function returns a :class:`Plot`: the matplotlib figure and the names of
the files it wrote. Figures are built on :class:`matplotlib.figure.Figure`, not pyplot: nothing
here changes the backend of a notebook or registers figures that would have to be closed.
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
def styled(formats: tuple[str, ...] | None = None, caption: str | None = None) -> Iterator[None]:
    """Figures made inside the block are saved in ``formats`` (PNG always) with ``caption``
    under the title; None keeps what an enclosing block set."""
    bad = [f for f in formats or () if f not in FORMATS]
    if bad:
        raise VaecoreError(f"--format {bad[0]}: not a figure format; choose from {', '.join(FORMATS)}")
    old = attrs.evolve(STYLE)
    if formats is not None:
        STYLE.formats = tuple(dict.fromkeys(("png", *formats)))
    if caption is not None:
        STYLE.caption = caption
    try:
        yield
    finally:
        STYLE.formats, STYLE.caption = old.formats, old.caption


def _title(fig: Any, title: str) -> None:
    text = f"{title}\n{STYLE.caption}" if STYLE.caption else title
    fig.suptitle(text, fontsize=9)


@attrs.frozen
class Plot:
    """One figure an analysis made: the matplotlib ``figure`` (a notebook shows it) and the
    ``files`` it was saved as, named by ``name`` (the file stem)."""

    name: str
    figure: Any
    files: list[str]


def _save(fig: Any, path: Path, rect: tuple[float, float, float, float] = (0, 0, 1, 1)) -> Plot:
    """Lay ``fig`` out within ``rect`` (of the figure) and save it as ``path`` (PNG) and in the
    other formats."""
    fig.tight_layout(rect=rect)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = []
    for fmt in STYLE.formats:
        target = path.with_suffix(f".{fmt}")
        fig.savefig(target, dpi=150)
        names.append(target.name)
    return Plot(path.stem, fig, names)


def new_figure(**kwargs: Any) -> Any:
    """A matplotlib Figure (``figsize`` etc.), or a clear message when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise VaecoreError("figures need matplotlib: pip install 'vaecore[plots]'") from exc
    return Figure(**kwargs)


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
) -> Plot:
    """Save ``images`` (N, ...) as a grid of ``rows`` rows of grey-scale pictures."""
    n = images.shape[0]
    cols = -(-n // rows)
    fig = new_figure(figsize=(cols * 0.9 + 0.6, rows * 0.9 + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)
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
) -> Plot:
    """Bars with their labels; ``threshold`` is drawn as a dashed line with the count above it."""
    fig = new_figure(figsize=(max(4.5, 0.25 * len(values) + 1.5), 3.4))
    ax = fig.subplots()
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
) -> Plot:
    """One line per series, with a legend."""
    fig = new_figure(figsize=(5.5, 3.4))
    ax = fig.subplots()
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, label=label, marker="o" if len(xs) < 30 else None, markersize=3)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    _title(fig, title)
    return _save(fig, path)


LINE_STYLES = ("-", "--", ":", "-.")


def panels(
    series: dict[str, dict[tuple[str, str], tuple[list[float], list[float]]]], path: Path, title: str, xlabel: str
) -> Plot:
    """One panel per key (its y label); in each, one line per ``(run, split)``: a colour per run,
    a line style per split (the first split solid, the next dashed), one legend for the figure
    (the splits alone when there is one run)."""
    keys = list(series)
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    runs = list(dict.fromkeys(run for lines in series.values() for run, _ in lines))
    splits = list(dict.fromkeys(split for lines in series.values() for _, split in lines))
    colours = {run: f"C{i % 10}" for i, run in enumerate(runs)}
    styles = {split: LINE_STYLES[i % len(LINE_STYLES)] for i, split in enumerate(splits)}
    width = 4.2 * cols

    def label(run: str, split: str) -> str:
        return split if len(runs) == 1 else f"{run} ({split})" if len(splits) > 1 else run

    labels = [label(run, split) for run in runs for split in splits]
    fits = int(width // (0.06 * max(map(len, labels)) + 0.7))
    # the legend fills column by column: a column per run keeps each run's splits together
    legend_cols = max(1, min(fits, len(labels) if len(runs) == 1 else len(runs)))
    legend_height = 0.2 * -(-len(labels) // legend_cols) + 0.15  # inches
    height = 3.0 * rows + 0.5 + legend_height
    fig = new_figure(figsize=(width, height))
    axes = fig.subplots(rows, cols, squeeze=False)
    marker = "o" if max(len(xs) for lines in series.values() for xs, _ in lines.values()) < 30 else None
    handles: dict[str, Any] = {}
    for ax, key in zip(axes.flat, keys):
        for (run, split), (xs, ys) in series[key].items():
            (line,) = ax.plot(xs, ys, color=colours[run], linestyle=styles[split], marker=marker, markersize=2.5)
            handles.setdefault(label(run, split), line)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(key)
    for ax in list(axes.flat)[len(keys) :]:
        ax.set_visible(False)
    ordered = [label for label in labels if label in handles]
    fig.legend([handles[label] for label in ordered], ordered, loc="lower center", ncols=legend_cols, fontsize=7)
    _title(fig, title)
    return _save(fig, path, rect=(0, legend_height / height, 1, 1))


def scatter(
    points: dict[str, tuple[torch.Tensor, torch.Tensor | None]],
    path: Path,
    title: str,
    axis_labels: tuple[str, str] = ("dimension 1", "dimension 2"),
) -> Plot:
    """Side-by-side 2-D scatter plots, each coloured by its labels (with a class legend) when given."""
    fig = new_figure(figsize=(4.2 * len(points), 4.4))
    axes = fig.subplots(1, len(points), squeeze=False)
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
