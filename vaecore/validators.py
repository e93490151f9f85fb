"""attrs validators with messages that read well after a config path (``train.lr: must be > 0``).

Plugins use them for their ``Options`` classes so that every config error reads the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

Validator = Callable[[Any, Any, Any], None]


def _optional(check: Callable[[Any], str | None]) -> Validator:
    def validate(_instance: Any, _attribute: Any, value: Any) -> None:
        if value is None:
            return
        problem = check(value)
        if problem:
            raise ValueError(f"{problem}, got {value!r}")

    return validate


def _compare(holds: Callable[[Any], bool], text: str, finite: bool) -> Validator:
    def check(value: Any) -> str | None:
        if finite and isinstance(value, float) and math.isinf(value):
            return f"must be a finite number {text}"
        return None if holds(value) else f"must be {text}"

    return _optional(check)


def gt(bound: float, *, finite: bool = False) -> Validator:
    """Value must be greater than ``bound`` (None passes: use for optional fields too); with
    ``finite``, infinity is refused too (NaN always is: it is greater than nothing)."""
    return _compare(lambda v: v > bound, f"> {bound}", finite)


def ge(bound: float, *, finite: bool = False) -> Validator:
    """Value must be at least ``bound`` (with ``finite``, and not infinite)."""
    return _compare(lambda v: v >= bound, f">= {bound}", finite)


def between(low: float, high: float) -> Validator:
    """Value must lie in the closed interval [low, high]."""
    return _optional(lambda v: None if low <= v <= high else f"must be between {low} and {high}")


def one_of(choices: Iterable[Any]) -> Validator:
    """Value must be one of ``choices``."""
    allowed = tuple(choices)
    text = ", ".join(repr(c) for c in allowed)
    return _optional(lambda v: None if v in allowed else f"must be one of {text}")


def each(check: Validator) -> Validator:
    """Apply ``check`` to every element of a list."""

    def validate(instance: Any, attribute: Any, value: Any) -> None:
        for item in value or ():
            check(instance, attribute, item)

    return validate


def nonempty() -> Validator:
    """A list must have at least one element (None passes)."""
    return _optional(lambda v: None if len(v) else "must list at least one value")


def odd() -> Validator:
    """An integer must be odd (None passes)."""
    return _optional(lambda v: None if v % 2 else "must be odd")
