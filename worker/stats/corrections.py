"""Multiple-comparison corrections: adjusted p-values and the level for adjusted intervals.

The p-value adjustments match GrowthBook's (``adjustPValuesHolmBonferroni`` and
``adjustPValuesBenjaminiHochberg``), which are the textbook step-down / step-up forms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Correction = Literal["none", "bonferroni", "holm", "bh"]


def bonferroni(p_values: Sequence[float]) -> list[float]:
    """Bonferroni: each p-value times the number of comparisons, capped at 1."""
    p = np.asarray(p_values, dtype=float)
    return [float(x) for x in np.minimum(p * p.size, 1.0)]


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment, returned in the input order."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    multipliers = p.size - np.arange(p.size)
    # The running maximum keeps adjusted p-values in the order of the raw ones.
    stepped = np.maximum.accumulate(p[order] * multipliers)
    return _unsort(np.minimum(stepped, 1.0), order)


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg step-up adjustment (false discovery rate), in input order."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(-p, kind="stable")
    ranks = p.size - np.arange(p.size)
    # Largest p first: the running minimum enforces the step-up monotonicity.
    # m / rank >= 1 first, so rounding can never push an adjusted value below its raw one.
    stepped = np.minimum.accumulate(p[order] * (p.size / ranks))
    return _unsort(np.minimum(stepped, 1.0), order)


def adjust_p_values(p_values: Sequence[float | None], method: Correction) -> list[float | None]:
    """Adjust the defined p-values of one family; undefined ones (None) stay None.

    Only defined p-values count as comparisons: an arm without data is not a test.
    """
    defined = [i for i, p in enumerate(p_values) if p is not None]
    raw = [float(p) for p in p_values if p is not None]
    if method == "none" or not raw:
        return list(p_values)
    adjusted = {"bonferroni": bonferroni, "holm": holm, "bh": benjamini_hochberg}[method](raw)
    result: list[float | None] = [None] * len(p_values)
    for index, value in zip(defined, adjusted, strict=True):
        result[index] = value
    return result


def adjusted_alpha(
    alpha: float, p_value: float, p_value_adjusted: float, comparisons: int
) -> float:
    """The per-comparison level at which to recompute an interval after a correction.

    alpha · p / p_adjusted is the level the correction effectively applies to this
    comparison, so the adjusted interval excludes zero exactly when the adjusted
    p-value is below alpha (the property GrowthBook's adjusted intervals have), and
    it is exact Bonferroni (alpha / m) for Bonferroni. Where the ratio carries no
    information (p = 0, or p_adjusted capped at 1) the Bonferroni level is used: it
    is the most conservative of the three corrections. Meant for a correction other
    than "none", over ``comparisons`` >= 1 tests.
    """
    if p_value <= 0.0 or p_value_adjusted >= 1.0:
        return alpha / max(comparisons, 1)
    return alpha * min(p_value / p_value_adjusted, 1.0)


def _unsort(values: np.ndarray, order: np.ndarray) -> list[float]:
    result = np.empty_like(values)
    result[order] = values
    return [float(x) for x in result]
