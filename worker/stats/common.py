"""Vocabulary shared by the statistics modules: test directions, intervals, float hygiene."""

from __future__ import annotations

import math
from typing import Literal

Direction = Literal["two_sided", "greater", "less"]
"""The alternative hypothesis about treatment minus control."""

Interval = tuple[float | None, float | None]
"""A (lower, upper) interval; None marks an unbounded side (JSON has no infinity)."""


def finite(value: float) -> float | None:
    """The value as a plain float, or None when it is NaN or infinite."""
    as_float = float(value)
    return as_float if math.isfinite(as_float) else None


def clip_probability(value: float) -> float:
    """Clamp a computed probability into [0, 1] (rounding can step just outside)."""
    return min(1.0, max(0.0, float(value)))


def improvement_direction(direction: Direction) -> Direction:
    """The one-sided direction that counts as an improvement under a test direction.

    A "less" test means lower values are better (e.g. bounce rate); every other
    direction treats higher values as better.
    """
    return "less" if direction == "less" else "greater"
