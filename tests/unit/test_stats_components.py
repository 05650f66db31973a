"""The smaller building blocks: best-arm odds, bandit weights, SRM, correction levels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from worker.stats.bandits import floor_weights, thompson_weights
from worker.stats.bayesian import expected_loss, probability_best
from worker.stats.corrections import adjust_p_values, adjusted_alpha
from worker.stats.metrics import Arm, mean_arm, proportion_arm, ratio_arm
from worker.stats.srm import srm_alarm, srm_p_value


def test_probability_best_of_two_arms_matches_the_normal_closed_form() -> None:
    control, treatment = proportion_arm(1000, 100), proportion_arm(1000, 115)
    probabilities = probability_best([control, treatment])
    assert probabilities is not None
    assert control.variance is not None and treatment.variance is not None
    sd = math.sqrt(control.variance / 1000 + treatment.variance / 1000)
    exact = norm.cdf((0.115 - 0.100) / sd)
    assert probabilities[1] == pytest.approx(exact, abs=1e-9)
    assert sum(probabilities) == pytest.approx(1.0)


def test_probability_best_of_several_arms_matches_many_joint_draws() -> None:
    arms = [
        proportion_arm(800, 40),
        proportion_arm(1000, 55),
        proportion_arm(3000, 160),
        proportion_arm(500, 30),
        proportion_arm(1200, 52),
    ]
    draws = 400_000
    rng = np.random.default_rng(11)
    means = np.array([arm.mean for arm in arms], dtype=float)
    sds = np.sqrt(np.array([arm.variance for arm in arms], dtype=float) / [a.n for a in arms])
    samples = rng.standard_normal((draws, len(arms))) * sds + means
    for higher_is_better, sign in ((True, 1.0), (False, -1.0)):
        drawn = np.bincount((sign * samples).argmax(axis=1), minlength=len(arms)) / draws
        computed = probability_best(arms, higher_is_better=higher_is_better)
        assert computed is not None
        for p, q in zip(computed, drawn, strict=True):
            assert p == pytest.approx(q, abs=4.0 * math.sqrt(p * (1.0 - p) / draws) + 1e-6)
        assert sum(computed) == pytest.approx(1.0, abs=1e-12)


def test_probability_best_of_far_apart_spreads_still_matches_the_closed_form() -> None:
    # Posterior sds 3,000 times apart: quadrature would need more nodes than the draws.
    wide, narrow = Arm(n=10, mean=0.10, variance=0.09), Arm(n=10**8, mean=0.12, variance=0.1)
    probabilities = probability_best([wide, narrow])
    assert probabilities is not None
    exact = norm.cdf(0.02 / math.sqrt(0.09 / 10 + 0.1 / 10**8))
    # Monte Carlo with 10,000 draws: standard error below 0.005.
    assert probabilities[1] == pytest.approx(exact, abs=0.02)


def test_probability_best_is_seeded_and_flips_when_lower_is_better() -> None:
    arms = [proportion_arm(1000, 100), proportion_arm(1000, 110), proportion_arm(1000, 90)]
    higher = probability_best(arms)
    assert higher == probability_best(arms)
    lower = probability_best(arms, higher_is_better=False)
    assert higher is not None and lower is not None
    assert max(range(3), key=higher.__getitem__) == 1
    assert max(range(3), key=lower.__getitem__) == 2


def test_probability_best_splits_exact_ties() -> None:
    no_spread = Arm(n=500, mean=0.0, variance=0.0)
    assert probability_best([no_spread, no_spread]) == [0.5, 0.5]


def test_floor_weights_respects_the_floor_and_sums_to_one() -> None:
    weights = floor_weights([0.0, 0.001, 0.999], 0.05)
    assert min(weights) >= 0.05
    assert sum(weights) == pytest.approx(1.0)
    assert floor_weights([0.2, 0.8], 0.9) == [0.5, 0.5]  # an unattainable floor: equal split


def test_thompson_weights_fall_back_to_equal_without_configured_weights() -> None:
    allocation = thompson_weights([proportion_arm(50, 5), proportion_arm(50, 9)])
    assert allocation.weights == [0.5, 0.5] and not allocation.updated


def test_srm_ignores_unweighted_arms_without_units_and_flags_those_with_units() -> None:
    assert srm_p_value([1000, 1000, 0], [1, 1, 0]) == pytest.approx(1.0)
    assert srm_p_value([1000, 1000, 3], [1, 1, 0]) == 0.0
    assert srm_p_value([1000], [1]) is None
    assert not srm_alarm(None)


def test_adjust_p_values_skips_undefined_ones() -> None:
    assert adjust_p_values([0.01, None, 0.02], "bonferroni") == pytest.approx([0.02, None, 0.04])
    assert adjust_p_values([0.3, None], "none") == [0.3, None]


def test_adjusted_alpha() -> None:
    assert adjusted_alpha(0.05, 0.01, 0.03, 3) == pytest.approx(0.05 / 3)
    assert adjusted_alpha(0.05, 0.4, 1.0, 4) == pytest.approx(0.05 / 4)
    assert adjusted_alpha(0.05, 0.0, 0.0, 4) == pytest.approx(0.05 / 4)


def test_expected_loss_far_in_a_tail_is_zero_not_negative() -> None:
    assert expected_loss(-50.0, 1.0) == (0.0, pytest.approx(50.0))


def test_ratio_arm_uses_the_delta_method() -> None:
    # Units with (M, D): (1, 2), (2, 2), (3, 4): ratio of sums 6 / 8.
    arm = ratio_arm(3, 6.0, 14.0, 8.0, 24.0, 1 * 2 + 2 * 2 + 3 * 4)
    assert arm.mean == pytest.approx(0.75)
    mean_m, mean_d = 2.0, 8 / 3
    var_m, var_d, cov = 1.0, 4 / 3, 1.0
    expected = var_m / mean_d**2 + var_d * mean_m**2 / mean_d**4 - 2 * cov * mean_m / mean_d**3
    assert arm.variance == pytest.approx(expected)


def test_mean_arm_variance_is_unbiased() -> None:
    arm = mean_arm(4, 10.0, 30.0)  # values 1, 2, 3, 4
    assert arm.mean == 2.5 and arm.variance == pytest.approx(5 / 3)
