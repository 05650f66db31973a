"""Power: checked against the textbook two-sample formulas, computed here independently,
and against the confidence sequence the sequential test actually reports."""

from __future__ import annotations

import math
from typing import Any

import pytest

from worker.stats import AnalysisRequest, analyze
from worker.stats.power import (
    Design,
    critical_value,
    minimum_detectable_effect,
    treatment_power,
    units_needed,
)
from worker.stats.sequential import DEFAULT_TUNING, tuning_for_plan

# Normal quantiles from tables: 97.5 %, 95 % and 80 %.
Z_975 = 1.959963984540054
Z_95 = 1.6448536269514722
Z_80 = 0.8416212335729143


def design(**changes: Any) -> Design:
    values: dict[str, Any] = {
        "mean": 0.05,
        "variance": 0.05 * 0.95,
        "control_share": 0.5,
        "treatment_share": 0.5,
        "alpha": 0.05,
        "direction": "two_sided",
        "sequential": False,
        "tuning": DEFAULT_TUNING,
    }
    return Design(**(values | changes))


@pytest.mark.parametrize(("direction", "z_alpha"), [("two_sided", Z_975), ("greater", Z_95)])
def test_fixed_horizon_mde_and_sample_are_the_textbook_formulas(
    direction: str, z_alpha: float
) -> None:
    p, n = 0.05, 10_000
    # MDE = (z_alpha + z_power) · sqrt(2 p (1 - p) / n) / p, relative to the base rate.
    expected_mde = (z_alpha + Z_80) * math.sqrt(2 * p * (1 - p) / n) / p
    assert minimum_detectable_effect(design(direction=direction), n, n) == pytest.approx(
        expected_mde, rel=1e-12
    )
    # n per arm = 2 (z_alpha + z_power)² p (1 - p) / (δ p)²; the total is two arms.
    effect = 0.1
    per_arm = 2 * (z_alpha + Z_80) ** 2 * p * (1 - p) / (effect * p) ** 2
    assert units_needed(design(direction=direction), effect) == pytest.approx(2 * per_arm)
    # At that sample the power of the z-test is 80 % (the far tail is negligible).
    se = math.sqrt(2 * p * (1 - p) / per_arm)
    power = 0.5 * math.erfc(-(effect * p / se - z_alpha) / math.sqrt(2))
    assert power == pytest.approx(0.8, abs=1e-9)


def test_unequal_split_needs_more_units() -> None:
    # Shares 2/3 and 1/3: the variance factor 1/w_c + 1/w_t is 4.5 instead of 4.
    equal = units_needed(design(), 0.1)
    skewed = units_needed(design(control_share=2 / 3, treatment_share=1 / 3), 0.1)
    assert skewed / equal == pytest.approx(4.5 / 4)


@pytest.mark.parametrize("direction", ["two_sided", "greater", "less"])
def test_sequential_threshold_is_the_reported_confidence_sequence(direction: str) -> None:
    n = 4000
    request = AnalysisRequest.model_validate(
        {
            "metric": "proportion",
            "sequential": True,
            "difference": "absolute",
            "test_direction": direction,
            "variants": [
                {"id": "a", "control": True, "n": n, "sum": 200},
                {"id": "b", "n": n, "sum": 230},
            ],
        }
    )
    result = analyze(request).variants[0]
    assert result.ci is not None and result.lift is not None and result.se is not None
    low, high = result.ci
    halfwidth = high - result.lift if high is not None else result.lift - (low or 0.0)
    threshold = critical_value(design(direction=direction, sequential=True), 2 * n)
    assert halfwidth / result.se == pytest.approx(threshold, rel=1e-12)


def test_sequential_sample_solves_the_power_equation() -> None:
    sequential = design(sequential=True)
    total = units_needed(sequential, 0.1)
    assert minimum_detectable_effect(sequential, total / 2, total / 2) == pytest.approx(0.1)


def test_sequential_needs_about_2_2_times_the_fixed_sample_at_the_default_tuning() -> None:
    # 5 % base rate, +10 % relative, two-sided at 95 %, 80 % power (the README's numbers).
    fixed = units_needed(design(), 0.1)
    sequential = units_needed(design(sequential=True), 0.1)
    assert sequential / fixed == pytest.approx(2.27, abs=0.01)
    # Tuned to the planned sample (N* = the pair's total there), the cost falls to 1.94.
    tuned = units_needed(design(sequential=True, tuning=fixed), 0.1)
    assert tuned / fixed == pytest.approx(1.94, abs=0.01)


def test_tuning_follows_the_plan_per_arm() -> None:
    assert tuning_for_plan(None) == DEFAULT_TUNING
    assert tuning_for_plan(30_000) == 60_000


def request(control: dict[str, Any], weights: list[float] | None = None) -> AnalysisRequest:
    return AnalysisRequest.model_validate(
        {
            "metric": "proportion",
            "weights": weights,
            "variants": [
                {"id": "a", "control": True} | control,
                {"id": "b", "n": 1000, "sum": 50},
                {"id": "c", "n": 1000, "sum": 55},
            ],
        }
    )


def test_treatment_power_per_treatment() -> None:
    powers = treatment_power(request({"n": 1000, "sum": 50}), effect=0.1)
    power = powers["b"]
    assert set(powers) == {"b", "c"} and power is not None
    three_arms = design(control_share=1 / 3, treatment_share=1 / 3)
    assert power.fixed_horizon.mde == pytest.approx(
        minimum_detectable_effect(three_arms, 1000, 1000)
    )
    assert power.fixed_horizon.units_needed == pytest.approx(units_needed(three_arms, 0.1) - 3000)
    assert power.sequential.units_needed > power.fixed_horizon.units_needed
    # A large effect is already within reach: nothing more is needed.
    reached = treatment_power(request({"n": 1000, "sum": 50}), effect=2.0)["b"]
    assert reached is not None and reached.fixed_horizon.units_needed == 0.0


def test_treatment_power_is_none_where_undefined() -> None:
    # No conversions in the control: no spread, so no relative lift to plan for.
    assert treatment_power(request({"n": 1000, "sum": 0})) == {"b": None, "c": None}
    # An arm that gets no traffic never reaches any sample.
    powers = treatment_power(request({"n": 1000, "sum": 50}, weights=[1, 0, 1]))
    assert powers["b"] is None and powers["c"] is not None
    # A treatment without units yet has no MDE, but its sample is still plannable.
    fresh = AnalysisRequest.model_validate(
        {
            "metric": "proportion",
            "variants": [
                {"id": "a", "control": True, "n": 1000, "sum": 50},
                {"id": "b", "n": 0, "sum": 0},
            ],
        }
    )
    empty = treatment_power(fresh)["b"]
    assert empty is not None and empty.fixed_horizon.mde is None
    assert empty.fixed_horizon.units_needed > 0
