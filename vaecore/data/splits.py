"""In-memory splits: tensors, not per-sample Python objects, so batching costs one index-select."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import numpy as np
import torch

from vaecore.hooktypes import Batch


def draw_rows(total: int, n: int, seed: int, labels: torch.Tensor | None = None) -> torch.Tensor:
    """The sorted indices of n of ``total`` rows drawn without replacement by
    ``numpy.random.default_rng(seed)``. With ``labels`` the draw is stratified: each class gets
    its share of n (largest remainders break ties, so the counts sum to n) drawn at random from
    its rows (the classes left over after rounding down, largest remainder first, ties in a random
    order), so a subset of a file sorted by class still holds every class in proportion."""
    rng = np.random.default_rng(seed)
    if labels is None:
        return torch.from_numpy(np.sort(rng.choice(total, size=n, replace=False)))
    classes, inverse, counts = np.unique(labels.cpu().numpy(), return_inverse=True, return_counts=True)
    quota = counts * n / total
    take = np.floor(quota).astype(np.int64)
    leftover = np.lexsort((rng.random(len(classes)), take - quota))  # largest remainder first, ties at random
    take[leftover[: n - int(take.sum())]] += 1
    picked = [rng.choice(np.flatnonzero(inverse == c), size=int(k), replace=False) for c, k in enumerate(take)]
    return torch.from_numpy(np.sort(np.concatenate(picked)))


def as_float(x: torch.Tensor) -> torch.Tensor:
    """Inputs as the model sees them: float32; ``uint8`` storage (intensities 0-255, as a lazily
    loaded file keeps them) scaled to [0, 1]."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


@attrs.frozen
class Split:
    """One split of a dataset: inputs ``x`` ``(N, *shape)`` as float32 and optional labels ``y``.

    ``x`` may also be ``uint8`` (intensities 0-255, e.g. memory-mapped from an ``.npy`` file by
    ``data.name = "npy"``): then it is converted batch by batch (:meth:`inputs`, :meth:`batches`),
    never held as float32 as a whole.

    ``probs`` (dynamic binarization, train split only): the intensities that ``batches`` re-draws
    each batch from when given a generator, x ~ Bernoulli(probs), so every epoch (the trainer seeds
    one generator per epoch) sees a new binarization, reproducibly. ``x`` then holds one fixed
    binarization, used for ordered iteration (evaluation) and everything else.
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    probs: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def value_range(self) -> tuple[float, float]:
        """The smallest and largest input value, on the model's scale (uint8 storage / 255)."""
        if not len(self):
            return 0.0, 0.0
        scale = 255.0 if self.x.dtype == torch.uint8 else 1.0
        return float(self.x.min()) / scale, float(self.x.max()) / scale

    def inputs(self, index: torch.Tensor | slice | list[int] | None = None) -> torch.Tensor:
        """The inputs at ``index`` (all when None) as float32 (see :func:`as_float`)."""
        return as_float(self.x if index is None else self.x[index])

    @property
    def index(self) -> torch.Tensor:
        return torch.arange(len(self))

    def rows(self, index: torch.Tensor | slice) -> Split:
        """The rows at ``index`` (indices or a slice), with their labels and intensities."""
        return Split(
            self.x[index], None if self.y is None else self.y[index], None if self.probs is None else self.probs[index]
        )

    def head(self, n: int | None) -> Split:
        """The first n rows (all when n is None or larger than the split)."""
        if n is None or n >= len(self):
            return self
        return self.rows(slice(0, n))

    def sample(self, n: int | None, seed: int) -> Split:
        """n rows drawn without replacement (see :func:`draw_rows`: stratified by label when the
        split has labels), kept in the split's order (all when n is None or larger than the split).
        A seed always gives the same rows."""
        if n is None or n >= len(self):
            return self
        return self.rows(draw_rows(len(self), n, seed, self.y))

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Minibatches in a random order drawn from ``generator``, or in order when it is None.

        With ``probs`` and a generator, each batch's inputs are drawn from Bernoulli(probs) with the
        same generator (right after the permutation), so a given generator state fixes the epoch."""
        n = len(self)
        if generator is None:
            for start in range(0, n, batch_size):
                index = torch.arange(start, min(start + batch_size, n))
                yield Batch(
                    self.inputs(slice(start, start + batch_size)), index, None if self.y is None else self.y[index]
                )
            return
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            x = self.inputs(index) if self.probs is None else torch.bernoulli(self.probs[index], generator=generator)
            yield Batch(x, index, None if self.y is None else self.y[index])

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)


@attrs.frozen
class Dataset:
    """A named dataset with its splits. ``binary`` says every input is 0 or 1.

    ``meta`` holds JSON-serialisable facts about the data that building the model needs besides
    the input shape (a text corpus's vocabulary). The core records it in the run's ``run.json``
    (``data_meta``) and passes it to every component factory that takes a ``data_meta`` argument,
    so a run's model is rebuilt from the run folder alone, without its data."""

    name: str
    train: Split
    valid: Split
    test: Split
    binary: bool
    meta: dict[str, Any] = attrs.field(factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @property
    def has_labels(self) -> bool:
        return self.train.y is not None

    def split(self, name: str) -> Split:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]
