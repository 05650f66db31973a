"""A/A simulation of CUPED at the statistics level: narrower intervals, alpha kept.

Every unit's metric y is correlated ρ = 0.7 with its pre-period covariate x, and both
arms have the same distribution. Each replication is read at 10 looks of 200 units per
arm with the pure functions the worker uses (relative lift, the default log-ratio
test): raw arms and CUPED-adjusted ones on the same data. A false positive is a
two-sided p-value below alpha: at any look for the sequential test, at the last look
(read once) for the fixed-horizon test. The adjustment should shrink the interval by
about sqrt(1 - ρ²) = 0.71 and leave the false-positive rate at alpha.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from worker.stats.cuped import CupedSums, cuped_arms
from worker.stats.frequentist import FrequentistResult, t_test
from worker.stats.metrics import Arm, Difference, difference, mean_arm, proportion_arm
from worker.stats.sequential import DEFAULT_TUNING, sequential_rho, sequential_test

ALPHA = 0.05
RHO = 0.7
LOOKS = 10
PER_LOOK = 200  # units per arm and look
REPLICATIONS = 1000
# Three binomial standard errors of a rate equal to alpha over the replications.
MARGIN = 3.0 * math.sqrt(ALPHA * (1.0 - ALPHA) / REPLICATIONS)
SEQUENTIAL_RHO = sequential_rho(ALPHA, DEFAULT_TUNING)

Test = Callable[[Difference], FrequentistResult]


def fixed_horizon(diff: Difference) -> FrequentistResult:
    return t_test(diff, ALPHA)


def sequential(diff: Difference) -> FrequentistResult:
    return sequential_test(diff, ALPHA, rho=SEQUENTIAL_RHO)


def simulate(metric: str, seed: int) -> np.ndarray:
    """Cumulative per-arm sums, shape (replications, looks, arms=2, 5).

    The last axis is Σy, Σy², Σx, Σx², Σxy over the units seen so far.
    """
    rng = np.random.default_rng(seed)
    shape = (REPLICATIONS, LOOKS, 2, PER_LOOK)
    if metric == "proportion":
        # y copies x with probability ρ, else is an independent draw at the same rate:
        # both are Bernoulli(0.2) and their correlation is exactly ρ.
        x = (rng.random(shape) < 0.2).astype(float)
        fresh = (rng.random(shape) < 0.2).astype(float)
        y = np.where(rng.random(shape) < RHO, x, fresh)
    else:
        common, own = rng.standard_normal(shape), rng.standard_normal(shape)
        x = 10.0 + 3.0 * common
        y = 10.0 + 3.0 * (RHO * common + math.sqrt(1.0 - RHO * RHO) * own)
    sums = np.stack([y, y * y, x, x * x, x * y], axis=-1).sum(axis=3)
    return sums.cumsum(axis=1)


def arms(metric: str, look: int, sums: np.ndarray) -> tuple[list[Arm], list[Arm]]:
    """(raw, adjusted) arms at a look from one replication's (arms, 5) sums."""
    n = PER_LOOK * (look + 1)
    raw = [
        proportion_arm(n, s[0]) if metric == "proportion" else mean_arm(n, s[0], s[1])
        for s in sums.tolist()
    ]
    cuped_sums = [CupedSums(n, s[0], s[1], s[2], s[3], s[4]) for s in sums.tolist()]
    adjusted, _ = cuped_arms(raw, cuped_sums, bernoulli=metric == "proportion")
    return raw, adjusted


def analysed(pair: list[Arm], test: Test) -> FrequentistResult:
    diff = difference(pair[0], pair[1], relative=True)
    assert diff is not None
    return test(diff)


def width(result: FrequentistResult) -> float:
    low, high = result.ci
    assert low is not None and high is not None
    return high - low


@pytest.fixture(scope="module", params=[("proportion", 11), ("mean", 12)], ids=lambda p: p[0])
def simulation(request: pytest.FixtureRequest) -> tuple[str, np.ndarray]:
    metric, seed = request.param
    return metric, simulate(metric, seed)


def test_the_simulated_correlation_is_rho(simulation: tuple[str, np.ndarray]) -> None:
    _, sums = simulation
    n = PER_LOOK * LOOKS
    sy, syy, sx, sxx, sxy = np.moveaxis(sums[:, -1], -1, 0)
    correlation = (sxy - sx * sy / n) / np.sqrt((sxx - sx * sx / n) * (syy - sy * sy / n))
    assert correlation.mean() == pytest.approx(RHO, abs=0.01)


def test_fixed_horizon_intervals_narrow_and_alpha_holds(
    simulation: tuple[str, np.ndarray],
) -> None:
    metric, sums = simulation
    ratios, raw_positives, adjusted_positives = [], 0, 0
    for replication in sums[:, -1]:
        raw, adjusted = arms(metric, LOOKS - 1, replication)
        raw_result, adjusted_result = (
            analysed(raw, fixed_horizon),
            analysed(adjusted, fixed_horizon),
        )
        ratios.append(width(adjusted_result) / width(raw_result))
        raw_positives += raw_result.p_value < ALPHA
        adjusted_positives += adjusted_result.p_value < ALPHA
    ratio = float(np.mean(ratios))
    assert ratio == pytest.approx(math.sqrt(1.0 - RHO * RHO), abs=0.03), ratio
    assert ratio < 0.8
    assert adjusted_positives / REPLICATIONS <= ALPHA + MARGIN, adjusted_positives
    assert raw_positives / REPLICATIONS <= ALPHA + MARGIN, raw_positives


def test_sequential_intervals_narrow_and_alpha_holds_at_any_look(
    simulation: tuple[str, np.ndarray],
) -> None:
    metric, sums = simulation
    ratios, positives = [], 0
    for replication in sums:
        rejected = False
        for look in range(LOOKS):
            raw, adjusted = arms(metric, look, replication[look])
            result = analysed(adjusted, sequential)
            rejected = rejected or result.p_value < ALPHA
            if look == LOOKS - 1:
                ratios.append(width(result) / width(analysed(raw, sequential)))
        positives += rejected
    ratio = float(np.mean(ratios))
    assert ratio == pytest.approx(math.sqrt(1.0 - RHO * RHO), abs=0.03), ratio
    assert positives / REPLICATIONS <= ALPHA + MARGIN, positives
