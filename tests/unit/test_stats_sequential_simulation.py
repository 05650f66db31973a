"""A/A simulation: peeking at an always-valid result does not inflate false positives."""

from __future__ import annotations

import numpy as np

from worker.stats.frequentist import t_test
from worker.stats.metrics import difference, proportion_arm
from worker.stats.sequential import sequential_test

ALPHA = 0.05
EXPERIMENTS = 1000
PEEKS = 20
UNITS_PER_PEEK = 500  # per arm
RATE = 0.1


def false_positive_rates() -> tuple[float, float]:
    """Share of A/A experiments declared significant at any of the peeks.

    Returns (sequential, fixed-horizon t-test) rates over the same simulated data.
    """
    rng = np.random.default_rng(20240611)
    conversions = rng.binomial(UNITS_PER_PEEK, RATE, size=(EXPERIMENTS, PEEKS, 2)).cumsum(axis=1)
    sequential_hits = fixed_hits = 0
    for experiment in conversions:
        sequential_rejected = fixed_rejected = False
        for peek, (control, treatment) in enumerate(experiment, start=1):
            n = peek * UNITS_PER_PEEK
            diff = difference(proportion_arm(n, control), proportion_arm(n, treatment), True)
            assert diff is not None
            sequential_rejected = sequential_rejected or sequential_test(diff).p_value < ALPHA
            fixed_rejected = fixed_rejected or t_test(diff).p_value < ALPHA
        sequential_hits += sequential_rejected
        fixed_hits += fixed_rejected
    return sequential_hits / EXPERIMENTS, fixed_hits / EXPERIMENTS


def test_peeking_keeps_the_sequential_false_positive_rate_at_alpha() -> None:
    sequential_rate, fixed_rate = false_positive_rates()
    # The binomial standard error over 1000 experiments is about 0.007 at alpha.
    assert sequential_rate <= ALPHA + 0.015
    # The same peeks with the fixed-horizon test inflate the rate several-fold, which
    # shows the simulation is sensitive enough to catch a sequence that does not hold.
    assert fixed_rate > 2 * ALPHA
