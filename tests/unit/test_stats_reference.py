"""Published gbstats reference values, reproduced to 5 decimals.

Inputs and expectations come from gbstats' own tests (packages/stats/tests/frequentist/
test_tests.py and tests/bayesian/test_tests.py of growthbook/growthbook), GrowthBook's
p-value adjustment tests, and its SRM check.

Relative lifts are built with ``method="ratio"``, gbstats' normal approximation on the
ratio itself; the default log-ratio test (see ``worker.stats.metrics``) keeps gbstats'
estimate and standard error but has its own interval, p-value and posterior.
"""

from __future__ import annotations

import numpy as np
import pytest

from worker.stats.bayesian import BayesianResult, GaussianPrior, bayesian_test
from worker.stats.common import Direction, Interval
from worker.stats.corrections import benjamini_hochberg, bonferroni, holm
from worker.stats.frequentist import t_test
from worker.stats.metrics import Arm, Difference, difference, mean_arm, proportion_arm
from worker.stats.sequential import DEFAULT_TUNING, sequential_rho, sequential_test
from worker.stats.srm import srm_p_value


def rounded(value: float | None, decimals: int = 5) -> float | None:
    """gbstats' comparison: round to 5 decimals (np.round and round agree here)."""
    return None if value is None else round(value, decimals)


def rounded_interval(ci: Interval) -> tuple[float | None, float | None]:
    return rounded(ci[0]), rounded(ci[1])


def mean_diff(n_control: int, relative: bool) -> Difference:
    """gbstats' SampleMeanStatistic pair: sums 1396.87 / 2422.7 over n_control / 3461 units."""
    control = mean_arm(n_control, 1396.87, 52377.9767)
    treatment = mean_arm(3461, 2422.7, 134698.29)
    diff = difference(control, treatment, relative, method="ratio")
    assert diff is not None
    return diff


def proportion_diff(
    control: tuple[int, int], treatment: tuple[int, int], relative: bool = True
) -> Difference:
    diff = difference(proportion_arm(*control), proportion_arm(*treatment), relative, "ratio")
    assert diff is not None
    return diff


class TestFixedHorizon:
    def test_proportion_relative_two_sided(self) -> None:
        result = t_test(proportion_diff((28, 14), (30, 16)))
        assert rounded(result.estimate) == 0.06667
        assert rounded_interval(result.ci) == (-0.47767, 0.61101)
        assert rounded(result.se) == 0.2717
        assert rounded(result.p_value) == 0.80707

    def test_mean_relative_two_sided(self) -> None:
        result = t_test(mean_diff(3407, relative=True))
        assert rounded(result.estimate) == 0.70732
        assert rounded_interval(result.ci) == (-0.03526, 1.44989)
        assert rounded(result.se) == 0.37879
        assert rounded(result.p_value) == 0.06191

    def test_mean_absolute_two_sided(self) -> None:
        result = t_test(mean_diff(3407, relative=False))
        assert rounded(result.estimate) == 0.29
        assert rounded_interval(result.ci) == (0.04538, 0.53462)
        assert rounded(result.se) == 0.12478
        assert rounded(result.p_value) == 0.02016

    @pytest.mark.parametrize(
        ("relative", "direction", "ci", "p_value"),
        [
            (True, "greater", (-0.045136675850396046, None), 0.06558262868467746),
            (False, "greater", (0.020791480063255735, None), 0.03554272489873023),
            (True, "less", (None, 1.0518588475628676), 0.9344173713153225),
            (False, "less", (None, 0.44796185327007765), 0.9644572751012698),
        ],
    )
    def test_mean_one_sided(
        self, relative: bool, direction: Direction, ci: Interval, p_value: float
    ) -> None:
        result = t_test(mean_diff(3000, relative), direction=direction)
        assert rounded_interval(result.ci) == rounded_interval(ci)
        assert rounded(result.p_value) == rounded(p_value)


class TestSequential:
    def test_proportion_relative_default_tuning(self) -> None:
        result = sequential_test(proportion_diff((3000, 1396), (3461, 2422)), tuning=5000)
        assert rounded(result.estimate) == 0.50386
        assert rounded_interval(result.ci) == (0.40098, 0.60675)
        assert rounded(result.se) == 0.03386
        assert rounded(result.p_value) == 0.0

    def test_mean_relative_small_tuning(self) -> None:
        result = sequential_test(mean_diff(3000, relative=True), tuning=1000)
        assert rounded(result.estimate) == 0.50336
        assert rounded_interval(result.ci) == (-0.55844, 1.56516)
        assert rounded(result.se) == 0.33341
        assert result.p_value == 1.0

    @pytest.mark.parametrize(
        ("relative", "direction", "ci"),
        [
            (True, "greater", (-0.42356454602790883, None)),
            (False, "greater", (-0.12656844172804982, None)),
            (True, "less", (None, 1.4302867177403806)),
            (False, "less", (None, 0.5953217750613832)),
        ],
    )
    def test_mean_one_sided_intervals(
        self, relative: bool, direction: Direction, ci: Interval
    ) -> None:
        result = sequential_test(mean_diff(3000, relative), direction=direction)
        assert rounded_interval(result.ci) == rounded_interval(ci)

    def test_one_sided_p_value_is_the_root_gbstats_bisects_for(self) -> None:
        """gbstats reports 0.46316491943359384: the bisection midpoint after its stopping
        rule fired, not the root itself. The closed-form root agrees to 3 decimals, and at
        that level (same design rho) the interval's bound sits exactly on zero."""
        diff = mean_diff(3000, relative=False)
        p_value = sequential_test(diff, direction="greater").p_value
        assert p_value == pytest.approx(0.46316491943359384, abs=2e-4)
        rho = sequential_rho(0.05, DEFAULT_TUNING, "greater")
        at_p = sequential_test(diff, alpha=p_value, direction="greater", rho=rho)
        assert at_p.ci[0] == pytest.approx(0.0, abs=1e-9)

    def test_tuning_near_the_sample_size_gives_the_tightest_interval(self) -> None:
        widths = {}
        for tuning in (10.0, 6461.0, 10_000.0):
            low, high = sequential_test(mean_diff(3000, relative=True), tuning=tuning).ci
            assert low is not None and high is not None
            widths[tuning] = high - low
        assert widths[6461.0] < widths[10_000.0] < widths[10.0]


def gbstats_relative(control: Arm, treatment: Arm) -> Difference | None:
    return difference(control, treatment, relative=True, method="ratio")


def posterior_of(diff: Difference, prior: GaussianPrior | None = None) -> BayesianResult:
    result = bayesian_test(diff, prior=prior)
    assert result is not None
    return result


class TestBayesian:
    def test_proportion_flat_prior(self) -> None:
        result = posterior_of(proportion_diff((100, 49), (100, 51)))
        assert rounded(result.estimate) == 0.04082
        assert rounded(result.sd) == 0.14725
        assert rounded_interval(result.ci) == (-0.24779, 0.32943)
        assert rounded(result.chance_to_win) == 0.60918
        assert (rounded(result.risk[0]), rounded(result.risk[1])) == (0.0814, 0.04058)

    def test_mean_flat_prior(self) -> None:
        diff = gbstats_relative(mean_arm(10, 100, 1002.25), mean_arm(10, 105, 1111.5))
        assert diff is not None
        result = posterior_of(diff)
        assert rounded(result.estimate) == 0.05
        assert rounded(result.sd) == 0.03572
        assert rounded_interval(result.ci) == (-0.02, 0.12)
        assert rounded(result.chance_to_win) == 0.91923
        assert (rounded(result.risk[0]), rounded(result.risk[1])) == (0.05131, 0.00131)

    def test_mean_informative_prior(self) -> None:
        diff = gbstats_relative(mean_arm(10, 100, 1002.25), mean_arm(10, 105, 1111.5))
        assert diff is not None
        result = posterior_of(diff, GaussianPrior(mean=0.1, variance=0.1))
        assert rounded(result.estimate) == 0.05063
        assert rounded(result.sd) == 0.03549
        assert rounded_interval(result.ci) == (-0.01893, 0.12019)
        assert rounded(result.chance_to_win) == 0.92315
        assert (rounded(result.risk[0]), rounded(result.risk[1])) == (0.05186, 0.00123)

    def test_risk_matches_monte_carlo_expected_loss(self) -> None:
        """gbstats checks its closed-form risk against simulation the same way."""
        result = posterior_of(proportion_diff((100, 49), (100, 51)))
        rng = np.random.default_rng(20240329)
        draws = rng.normal(result.estimate, result.sd, size=2_000_000)
        assert result.risk[0] == pytest.approx(np.mean(np.maximum(draws, 0)), abs=1e-3)
        assert result.risk[1] == pytest.approx(np.mean(np.maximum(-draws, 0)), abs=1e-3)


class TestCorrections:
    def test_holm(self) -> None:
        p_values = [0.01, 0.04, 0.03, 0.005, 0.55, 0.6]
        adjusted = holm(p_values)
        by_raw = [a for _, a in sorted(zip(p_values, adjusted, strict=True))]
        assert [rounded(a) for a in by_raw] == [0.03, 0.05, 0.12, 0.12, 1, 1]

    def test_benjamini_hochberg(self) -> None:
        p_values = [0.898, 0.138, 0.007, 0.964, 0.538, 0.006, 0.138]
        adjusted = benjamini_hochberg(p_values)
        by_raw_descending = [
            a for _, a in sorted(zip(p_values, adjusted, strict=True), reverse=True)
        ]
        assert [rounded(a) for a in by_raw_descending] == [
            0.964,
            0.964,
            0.7532,
            0.2415,
            0.2415,
            0.0245,
            0.0245,
        ]

    def test_bonferroni(self) -> None:
        assert bonferroni([0.01, 0.2, 0.5]) == pytest.approx([0.03, 0.6, 1.0])


def test_srm_chi_square() -> None:
    p_value = srm_p_value([1500, 1480], [0.5, 0.5])
    assert p_value is not None
    assert round(p_value, 6) == 0.714088


@pytest.mark.parametrize(
    ("control", "treatment"),
    [
        (proportion_arm(28, 14), proportion_arm(30, 16)),
        (proportion_arm(3000, 1396), proportion_arm(3461, 2422)),
        (mean_arm(3407, 1396.87, 52377.9767), mean_arm(3461, 2422.7, 134698.29)),
    ],
)
def test_the_log_ratio_keeps_the_gbstats_lift_and_standard_error(
    control: Arm, treatment: Arm
) -> None:
    """What differs from gbstats for relative lifts is the interval and the p-value (on
    the log scale, mapped back); the point estimate and the delta-method standard
    error are the same numbers."""
    log_ratio = difference(control, treatment, relative=True)
    ratio = gbstats_relative(control, treatment)
    assert log_ratio is not None and ratio is not None
    fixed, gbstats = t_test(log_ratio), t_test(ratio)
    assert fixed.estimate == pytest.approx(gbstats.estimate, rel=1e-14)
    assert fixed.se == pytest.approx(gbstats.se, rel=1e-12)
    assert fixed.ci != gbstats.ci
