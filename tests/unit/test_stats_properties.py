"""Properties every test must have, checked on generated sufficient statistics."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.stats import AnalysisRequest, analyze
from worker.stats.bayesian import bayesian_test
from worker.stats.common import Direction, Interval
from worker.stats.corrections import adjust_p_values
from worker.stats.frequentist import FrequentistResult, t_test
from worker.stats.metrics import Arm, Difference, difference, mean_arm, proportion_arm
from worker.stats.sequential import sequential_test

DIRECTIONS: list[Direction] = ["two_sided", "greater", "less"]
directions = st.sampled_from(DIRECTIONS)
alphas = st.floats(min_value=0.01, max_value=0.2)


@st.composite
def proportion_arms(draw: st.DrawFn, min_n: int = 2) -> Arm:
    """A conversion arm with at least one conversion and one non-conversion."""
    n = draw(st.integers(min_value=min_n, max_value=1_000_000))
    conversions = draw(st.integers(min_value=1, max_value=n - 1))
    return proportion_arm(n, conversions)


@st.composite
def mean_arms(draw: st.DrawFn, min_n: int = 2) -> Arm:
    """A positive-mean arm built from a mean and a coefficient of variation.

    The spread is kept well above rounding noise in n·mean², or the arm would
    (rightly) count as having no variance.
    """
    n = draw(st.integers(min_value=min_n, max_value=100_000))
    mean = draw(st.floats(min_value=0.01, max_value=1_000))
    sd = mean * draw(st.floats(min_value=1e-3, max_value=10))
    return mean_arm(n, n * mean, (n - 1) * sd * sd + n * mean * mean)


def arm_pairs(min_n: int = 2) -> st.SearchStrategy[tuple[Arm, Arm]]:
    return st.one_of(
        st.tuples(proportion_arms(min_n), proportion_arms(min_n)),
        st.tuples(mean_arms(min_n), mean_arms(min_n)),
    )


def defined(control: Arm, treatment: Arm, relative: bool) -> Difference:
    diff = difference(control, treatment, relative)
    assert diff is not None, "non-degenerate arms always allow inference"
    return diff


def reach(result: FrequentistResult) -> float:
    """Total distance from the estimate to the interval's finite bound(s)."""
    return sum(abs(bound - result.estimate) for bound in result.ci if bound is not None)


def contains(ci: Interval, value: float) -> bool:
    low, high = ci
    return (low is None or low <= value) and (high is None or value <= high)


@given(arm_pairs(), st.booleans(), directions, alphas)
def test_p_values_are_probabilities(
    arms: tuple[Arm, Arm], relative: bool, direction: Direction, alpha: float
) -> None:
    diff = defined(*arms, relative)
    for result in (t_test(diff, alpha, direction), sequential_test(diff, alpha, direction)):
        assert 0.0 <= result.p_value <= 1.0
    posterior = bayesian_test(diff, alpha)
    assert posterior is not None
    assert 0.0 <= posterior.chance_to_win <= 1.0


@given(st.lists(st.one_of(st.none(), st.floats(0, 1)), max_size=12))
def test_adjusted_p_values_are_probabilities_no_smaller_than_raw(
    p_values: list[float | None],
) -> None:
    for method in ("bonferroni", "holm", "bh"):
        adjusted = adjust_p_values(p_values, method)
        for raw, adj in zip(p_values, adjusted, strict=True):
            assert (raw is None) == (adj is None)
            if raw is not None and adj is not None:
                assert raw <= adj <= 1.0


@given(arm_pairs(), st.booleans(), directions, alphas)
def test_interval_contains_the_estimate(
    arms: tuple[Arm, Arm], relative: bool, direction: Direction, alpha: float
) -> None:
    diff = defined(*arms, relative)
    for result in (t_test(diff, alpha, direction), sequential_test(diff, alpha, direction)):
        assert contains(result.ci, result.estimate)
    posterior = bayesian_test(diff, alpha)
    assert posterior is not None
    assert contains(posterior.ci, posterior.estimate)


@given(arm_pairs(), alphas)
def test_swapping_the_arms_flips_the_absolute_lift(arms: tuple[Arm, Arm], alpha: float) -> None:
    control, treatment = arms
    forward = t_test(defined(control, treatment, relative=False), alpha)
    backward = t_test(defined(treatment, control, relative=False), alpha)
    assert backward.estimate == -forward.estimate
    assert math.isclose(backward.se, forward.se, rel_tol=1e-12)
    assert math.isclose(backward.p_value, forward.p_value, rel_tol=1e-9, abs_tol=1e-300)
    assert forward.ci[0] is not None and backward.ci[1] is not None
    assert math.isclose(backward.ci[1], -forward.ci[0], rel_tol=1e-9, abs_tol=1e-12)


@given(
    st.integers(min_value=2, max_value=500),
    st.integers(min_value=1, max_value=99),
    st.integers(min_value=2, max_value=500),
    st.integers(min_value=1, max_value=99),
    st.integers(min_value=2, max_value=20),
    st.booleans(),
    directions,
)
def test_more_data_at_the_same_rates_narrows_the_interval(
    n_control: int,
    percent_control: int,
    n_treatment: int,
    percent_treatment: int,
    factor: int,
    relative: bool,
    direction: Direction,
) -> None:
    def arms(scale: int) -> tuple[Arm, Arm]:
        # Rates fixed as whole percentages so scaling the counts keeps them exact.
        return (
            proportion_arm(100 * n_control * scale, percent_control * n_control * scale),
            proportion_arm(100 * n_treatment * scale, percent_treatment * n_treatment * scale),
        )

    small, large = defined(*arms(1), relative), defined(*arms(factor), relative)
    for test in (t_test, sequential_test):
        assert reach(test(large, direction=direction)) < reach(test(small, direction=direction))


@given(arm_pairs(min_n=30), st.booleans(), directions, alphas)
def test_sequential_interval_is_never_narrower_than_fixed_horizon(
    arms: tuple[Arm, Arm], relative: bool, direction: Direction, alpha: float
) -> None:
    """From 30 units per arm on. Below that the fixed test's t quantile (tiny Welch dof)
    can exceed the asymptotic (normal) sequence's width: different approximations, not
    a property of the designs."""
    diff = defined(*arms, relative)
    fixed = t_test(diff, alpha, direction)
    always_valid = sequential_test(diff, alpha, direction)
    assert reach(always_valid) >= reach(fixed)


sums = st.floats(min_value=-1e150, max_value=1e150)
spreads = st.one_of(st.just(0.0), st.floats(min_value=0, max_value=1e150))


@st.composite
def variant_inputs(draw: st.DrawFn, metric: str) -> dict[str, float]:
    """Sufficient statistics any real data could produce, degenerate ones included."""
    n = draw(st.one_of(st.integers(0, 3), st.integers(0, 10**9)))
    if metric == "proportion":
        return {"n": n, "sum": draw(st.integers(0, n))}

    def moments() -> tuple[float, float]:
        if n == 0:
            return 0.0, 0.0
        total = draw(sums)
        return total, total * (total / n) + draw(spreads)

    total, sum_squares = moments()
    stats = {"n": n, "sum": total, "sum_squares": sum_squares}
    if metric == "ratio":
        denominator, denominator_squares = moments()
        stats |= {
            "denominator_sum": denominator,
            "denominator_sum_squares": denominator_squares,
            "main_denominator_sum_product": draw(sums) if n else 0.0,
        }
    return stats


@st.composite
def requests(draw: st.DrawFn) -> dict[str, object]:
    metric = draw(st.sampled_from(["proportion", "mean", "ratio"]))
    variants = draw(st.lists(variant_inputs(metric), min_size=1, max_size=4))
    return {
        "metric": metric,
        "engine": draw(st.sampled_from(["frequentist", "bayesian"])),
        "sequential": draw(st.booleans()),
        "sequential_tuning": draw(st.sampled_from([5000.0, 1e-300, 1.0, 2.0**53])),
        "alpha": draw(st.sampled_from([0.05, 1e-300, 0.49999999999999994])),
        "test_direction": draw(directions),
        "difference": draw(st.sampled_from(["relative", "absolute"])),
        "correction": draw(st.sampled_from(["none", "bonferroni", "holm", "bh"])),
        "prior": draw(st.one_of(st.none(), st.just({"mean": 0.0, "variance": 0.09}))),
        "variants": [
            {"id": str(i), "control": i == 0, **stats} for i, stats in enumerate(variants)
        ],
    }


@settings(max_examples=300, deadline=None)
@given(requests())
def test_analysis_output_is_always_finite_json(payload: dict[str, object]) -> None:
    """Any valid input, degenerate ones included, yields JSON without NaN or Infinity."""
    result = analyze(AnalysisRequest.model_validate(payload)).model_dump(mode="json")
    json.dumps(result, allow_nan=False)
    for variant in result["variants"]:
        for key in ("p_value", "p_value_adjusted", "chance_to_win", "reliability"):
            assert variant[key] is None or 0.0 <= variant[key] <= 1.0
