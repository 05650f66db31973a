"""Thompson-sampling traffic weights for a multi-armed bandit, with a floor per arm."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from worker.stats.bayesian import probability_best
from worker.stats.metrics import Arm

DEFAULT_MIN_WEIGHT = 0.01
"""Smallest share any arm keeps, so a trailing arm can still recover (gbstats' floor)."""

DEFAULT_MIN_UNITS = 100
"""Units every arm needs before weights move (gbstats' bandit rule)."""


@dataclass(frozen=True)
class BanditAllocation:
    """Next period's traffic weights; ``updated`` is False when the current ones stand."""

    weights: list[float]
    updated: bool


def thompson_weights(
    arms: Sequence[Arm],
    current_weights: Sequence[float] | None = None,
    min_weight: float = DEFAULT_MIN_WEIGHT,
    min_units: int = DEFAULT_MIN_UNITS,
    higher_is_better: bool = True,
    seed: int = 0,
) -> BanditAllocation:
    """Weights proportional to each arm's probability to be best, floored at ``min_weight``.

    Until every arm has ``min_units`` units (or while the probabilities are undefined)
    the current weights are kept, normalised; without current weights, an equal split.
    """
    fallback = _normalised(current_weights, len(arms))
    if any(arm.n < min_units for arm in arms):
        return BanditAllocation(weights=fallback, updated=False)
    probabilities = probability_best(arms, higher_is_better=higher_is_better, seed=seed)
    if probabilities is None:
        return BanditAllocation(weights=fallback, updated=False)
    return BanditAllocation(weights=floor_weights(probabilities, min_weight), updated=True)


def floor_weights(probabilities: Sequence[float], min_weight: float) -> list[float]:
    """Mix probabilities with a uniform floor: each weight >= min_weight, total 1.

    w = floor + (1 - k·floor)·p. Clipping then renormalising (as gbstats does) can
    push a clipped arm back below the floor; this mixture cannot. A floor above 1/k
    is unattainable and is capped to the equal split.
    """
    count = len(probabilities)
    if count == 0:
        return []
    floor = min(max(min_weight, 0.0), 1.0 / count)
    return [floor + (1.0 - count * floor) * p for p in probabilities]


def _normalised(weights: Sequence[float] | None, count: int) -> list[float]:
    total = sum(weights) if weights is not None else 0.0
    if weights is None or total <= 0:
        return [1.0 / count] * count if count else []
    return [w / total for w in weights]
