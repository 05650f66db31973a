"""The anytime-valid SRM test: its value, its error rate under peeking, its power."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from scipy.special import betaln

from worker.stats.srm import sequential_srm_p_value, srm_p_value


def test_two_arms_equal_the_beta_binomial_bayes_factor() -> None:
    # Two arms: the Dirichlet-multinomial marginal is a beta-binomial one.
    x1, x2, a1, a2 = 560, 440, 50.0, 50.0
    log_bf = betaln(a1 + x1, a2 + x2) - betaln(a1, a2) - (x1 + x2) * math.log(0.5)
    assert sequential_srm_p_value([x1, x2]) == pytest.approx(math.exp(-log_bf), rel=1e-9)


def test_weights_need_not_sum_to_one() -> None:
    assert sequential_srm_p_value([700, 300], [7, 3]) == sequential_srm_p_value(
        [700, 300], [0.7, 0.3]
    )


def test_edge_cases_follow_the_chi_square_conventions() -> None:
    assert sequential_srm_p_value([0, 0]) is None
    assert sequential_srm_p_value([10]) is None
    assert sequential_srm_p_value([10, 10, 3], [1, 1, 0]) == 0.0
    assert sequential_srm_p_value([5000, 5010]) == 1.0


def test_peeking_every_interval_at_a_correct_split_never_alarms() -> None:
    # 400 experiments, 3 arms, checked after every 200 visitors up to 10,000 (50 looks).
    rng = np.random.default_rng(11)
    weights = [0.2, 0.3, 0.5]
    sequential_alarms = chi_square_alarms = 0
    for _ in range(400):
        counts = np.zeros(3, dtype=int)
        raised = chi_raised = False
        for _look in range(50):
            counts += rng.multinomial(200, weights)
            raised |= (sequential_srm_p_value(counts.tolist(), weights) or 1) < 0.001
            chi_raised |= (srm_p_value(counts.tolist(), weights) or 1) < 0.001
        sequential_alarms += raised
        chi_square_alarms += chi_raised
    # P(any alarm) <= 0.001 per experiment: more than one in 400 would be a defect.
    assert sequential_alarms <= 1
    assert chi_square_alarms >= sequential_alarms


def test_a_real_mismatch_is_found() -> None:
    assert (sequential_srm_p_value([4500, 5500]) or 1) < 1e-10
    assert (sequential_srm_p_value([2300, 2700]) or 1) < 0.001


SrmTest = Callable[[Sequence[int], Sequence[float] | None], float | None]


@pytest.mark.parametrize("test", [srm_p_value, sequential_srm_p_value])
def test_units_in_a_zero_weight_arm_are_a_mismatch_with_two_arms_too(test: SrmTest) -> None:
    """Issue 15, part 5: weights [1, 0] with n [1000, 1000] gave None, not an alarm."""
    assert test([1000, 1000], [1, 0]) == 0.0
    assert test([1000, 1000], [0, 1]) == 0.0
    assert test([1000, 1000, 1000], [1, 1, 0]) == 0.0
    # A single weighted arm and an empty zero-weight arm: nothing to test.
    assert test([1000, 0], [1, 0]) is None
