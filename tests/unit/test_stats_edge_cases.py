"""Degenerate data: every field defined or None, never NaN, never an exception."""

from __future__ import annotations

import json
from typing import Any

import pytest

from worker.stats import AnalysisRequest, analyze

ENGINES: list[dict[str, Any]] = [
    {"engine": "frequentist"},
    {"engine": "frequentist", "sequential": True},
    {"engine": "bayesian"},
    {"engine": "bayesian", "prior": {"mean": 0, "variance": 0.09}},
]

INFERENCE = ("ci", "ci_adjusted", "se", "p_value", "p_value_adjusted", "chance_to_win", "risk")


def run(variants: list[dict[str, Any]], **settings: Any) -> dict[str, Any]:
    """Analyse, and prove the result is strict JSON (no NaN or Infinity)."""
    ids = [{"id": str(i), "control": i == 0} for i in range(len(variants))]
    payload = {"variants": [i | v for i, v in zip(ids, variants, strict=True)], **settings}
    payload.setdefault("metric", "proportion")
    result = analyze(AnalysisRequest.model_validate(payload)).model_dump(mode="json")
    json.dumps(result, allow_nan=False)
    return result


def assert_no_inference(variant: dict[str, Any]) -> None:
    for key in INFERENCE:
        assert variant[key] is None, key
    assert variant["reliability"] is None


@pytest.mark.parametrize("engine", ENGINES)
def test_zero_visitors_everywhere(engine: dict[str, Any]) -> None:
    result = run([{"n": 0, "sum": 0}, {"n": 0, "sum": 0}], correction="holm", **engine)
    (variant,) = result["variants"]
    assert_no_inference(variant)
    assert variant["lift"] is None and variant["improvement"] is None
    assert result["srm_p_value"] is None and result["srm_alarm"] is False
    assert result["probability_best"] is None
    assert result["bandit_weights"] == {"0": 0.5, "1": 0.5}
    assert result["bandit_updated"] is False


@pytest.mark.parametrize("engine", ENGINES)
def test_zero_visitors_in_the_treatment(engine: dict[str, Any]) -> None:
    result = run([{"n": 1000, "sum": 100}, {"n": 0, "sum": 0}], **engine)
    (variant,) = result["variants"]
    assert_no_inference(variant)
    assert variant["lift"] is None
    assert result["srm_p_value"] < 1e-100  # all traffic in one of two equal arms
    assert result["srm_alarm"] is True


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("conversions", [0, 1000])
def test_zero_or_all_conversions_in_both_arms(engine: dict[str, Any], conversions: int) -> None:
    arms = [{"n": 1000, "sum": conversions}, {"n": 1000, "sum": conversions}]
    relative = run(arms, **engine)["variants"][0]
    absolute = run(arms, difference="absolute", **engine)["variants"][0]
    for variant in (relative, absolute):
        assert_no_inference(variant)
    assert absolute["lift"] == 0.0
    # A relative lift over a zero control rate is undefined, so the absolute difference
    # is reported and says so; over 100% it is zero.
    assert relative["lift"] == 0.0
    if conversions == 0:
        assert relative["lift_type"] == "absolute"
        assert relative["lift_fallback"] == "control_mean_not_positive"
        assert relative["improvement"] is None
    else:
        assert (relative["lift_type"], relative["lift_fallback"]) == ("relative", None)


@pytest.mark.parametrize("engine", ENGINES)
def test_zero_conversions_in_the_control_only(engine: dict[str, Any]) -> None:
    arms = [{"n": 1000, "sum": 0}, {"n": 1000, "sum": 30}]
    relative = run(arms, **engine)["variants"][0]
    absolute = run(arms, difference="absolute", **engine)["variants"][0]
    # No relative lift over a zero rate: the absolute difference, marked as such.
    assert relative == absolute | {"lift_fallback": "control_mean_not_positive"}
    assert relative["improvement"] is None and relative["lift_type"] == "absolute"
    assert absolute["lift"] == pytest.approx(0.03)
    # The control has no spread, so like gbstats we make no inferential claim.
    assert_no_inference(absolute)


@pytest.mark.parametrize("engine", ENGINES)
def test_zero_variance_mean_metric(engine: dict[str, Any]) -> None:
    """Every unit worth exactly 0.1: Σy² - (Σy)²/n is pure rounding noise, not spread."""
    arms = [
        {"n": 3000, "sum": 300.0, "sum_squares": 30.0},
        {"n": 3000, "sum": 330.0, "sum_squares": 36.3},
    ]
    (variant,) = run(arms, metric="mean", **engine)["variants"]
    assert variant["lift"] == pytest.approx(0.1)
    assert_no_inference(variant)


@pytest.mark.parametrize("engine", ENGINES)
def test_one_unit_per_arm(engine: dict[str, Any]) -> None:
    arms = [{"n": 1, "sum": 2.0, "sum_squares": 4.0}, {"n": 1, "sum": 3.0, "sum_squares": 9.0}]
    result = run(arms, metric="mean", **engine)
    (variant,) = result["variants"]
    assert variant["lift"] == pytest.approx(0.5)
    assert_no_inference(variant)
    assert result["probability_best"] is None


@pytest.mark.parametrize("engine", ENGINES)
def test_single_arm(engine: dict[str, Any]) -> None:
    result = run([{"n": 500, "sum": 40}], correction="bh", **engine)
    assert result["variants"] == []
    assert result["srm_p_value"] is None and result["srm_alarm"] is False
    assert result["probability_best"] == {"0": 1.0}
    assert result["bandit_weights"] == {"0": 1.0}


@pytest.mark.parametrize("engine", ENGINES)
def test_ratio_with_a_zero_denominator(engine: dict[str, Any]) -> None:
    ratio = {
        "sum_squares": 0.0,
        "denominator_sum": 0.0,
        "denominator_sum_squares": 0.0,
        "main_denominator_sum_product": 0.0,
    }
    arms = [{"n": 100, "sum": 0.0, **ratio}, {"n": 100, "sum": 0.0, **ratio}]
    result = run(arms, metric="ratio", **engine)
    (variant,) = result["variants"]
    assert variant["lift"] is None
    assert_no_inference(variant)
    assert result["probability_best"] is None


def test_extreme_evidence_gives_p_values_of_zero_not_nan() -> None:
    arms = [{"n": 10**9, "sum": 10**8}, {"n": 10**9, "sum": 2 * 10**8}]
    for settings in ENGINES[:2]:
        (variant,) = run(arms, **settings)["variants"]
        assert variant["p_value"] == 0.0
        assert variant["reliability"] == 1.0
