"""Caps for revenue and count goals: a percentile of per-visitor values, fixed at launch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentile_cap(values: Sequence[float], percentile: float) -> float | None:
    """The ``percentile`` (0-100) of the per-visitor values, as an observed value.

    The nearest observed value at or above the percentile ("higher"), so the cap is a value
    some visitor had and never an interpolation. None without values: nothing to cap by.
    """
    if not values:
        return None
    if not 0 < percentile < 100:
        raise ValueError(f"percentile must be between 0 and 100, got {percentile}")
    return float(np.percentile(np.asarray(values, dtype=float), percentile, method="higher"))
