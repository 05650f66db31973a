"""Vocabulary shared by the statistics modules: test directions, intervals, float hygiene."""

from __future__ import annotations

import math
import sys
from typing import Literal

Direction = Literal["two_sided", "greater", "less"]
"""The alternative hypothesis about treatment minus control."""

LiftType = Literal["relative", "absolute"]
"""Treatment minus control, divided by the control mean ("relative") or not."""

RelativeMethod = Literal["log_ratio", "ratio"]
"""Which scale a relative lift is tested on: log(treatment / control), whose error
rates hold at low counts in both directions, or the ratio itself (gbstats 0.8.0)."""

LiftFallback = Literal["control_mean_not_positive", "treatment_mean_not_positive"]
"""Why a relative lift was asked for and the absolute difference reported instead."""

Interval = tuple[float | None, float | None]
"""A (lower, upper) interval; None marks an unbounded side (JSON has no infinity)."""


# exp(x) overflows a double above this, where math.exp and math.expm1 raise.
_LOG_MAX_FLOAT = math.log(sys.float_info.max)


def exp_capped(value: float) -> float:
    """exp(value), or infinity where the double would overflow."""
    return math.exp(value) if value < _LOG_MAX_FLOAT else math.inf


def expm1_capped(value: float) -> float:
    """exp(value) - 1, exact near zero, or infinity where the double would overflow."""
    return math.expm1(value) if value < _LOG_MAX_FLOAT else math.inf


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
