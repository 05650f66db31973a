"""The orchestration the CLI and the worker share: wiring, corrections, vendor scores."""

from __future__ import annotations

from typing import Any

import pytest

from worker.stats import AnalysisRequest, AnalysisResult, analyze, analyze_goals
from worker.stats.bayesian import GaussianPrior, absolute_prior, bayesian_test
from worker.stats.frequentist import t_test
from worker.stats.metrics import difference, mean_arm, proportion_arm

MEAN_A = {"n": 3000, "sum": 1396.87, "sum_squares": 52377.9767}
MEAN_B = {"n": 3461, "sum": 2422.7, "sum_squares": 134698.29}
GBSTATS = {"relative_method": "ratio"}
"""gbstats 0.8.0's relative-lift test, to compare with its published values."""


def request(*variants: dict[str, Any], **settings: Any) -> AnalysisRequest:
    ids = [{"id": str(i), "control": i == 0} for i in range(len(variants))]
    payload = {"variants": [i | v for i, v in zip(ids, variants, strict=True)], **settings}
    payload.setdefault("metric", "proportion")
    return AnalysisRequest.model_validate(payload)


def plain(result: AnalysisResult) -> dict[str, Any]:
    """The result as the JSON the CLI prints (untyped, like any consumer sees it)."""
    return result.model_dump(mode="json")


def only_variant(result: AnalysisResult) -> Any:
    (variant,) = result.variants
    return variant


def test_frequentist_proportion_matches_gbstats_through_the_entry_point() -> None:
    arms = ({"n": 28, "sum": 14}, {"n": 30, "sum": 16})
    variant = only_variant(analyze(request(*arms, **GBSTATS)))
    assert round(variant.lift, 5) == 0.06667
    assert (round(variant.ci[0], 5), round(variant.ci[1], 5)) == (-0.47767, 0.61101)
    assert round(variant.se, 5) == 0.2717
    assert round(variant.p_value, 5) == 0.80707
    assert variant.p_value_adjusted == variant.p_value and variant.ci_adjusted == variant.ci
    assert variant.chance_to_win is None and variant.risk is None
    assert variant.improvement == pytest.approx(100 * variant.lift)


def test_sequential_proportion_matches_gbstats_through_the_entry_point() -> None:
    arms = ({"n": 3000, "sum": 1396}, {"n": 3461, "sum": 2422})
    result = analyze(request(*arms, sequential=True, **GBSTATS))
    variant = only_variant(result)
    assert round(variant.lift, 5) == 0.50386
    assert (round(variant.ci[0], 5), round(variant.ci[1], 5)) == (0.40098, 0.60675)
    assert round(variant.se, 5) == 0.03386


def test_bayesian_proportion_matches_gbstats_through_the_entry_point() -> None:
    arms = ({"n": 100, "sum": 49}, {"n": 100, "sum": 51})
    result = analyze(request(*arms, engine="bayesian", **GBSTATS))
    variant = only_variant(result)
    assert round(variant.lift, 5) == 0.04082
    assert round(variant.chance_to_win, 5) == 0.60918
    assert [round(r, 5) for r in variant.risk] == [0.0814, 0.04058]
    assert variant.p_value is None and variant.p_value_adjusted is None
    # Kameleoon's Bayesian reliability is the chance to beat the reference.
    assert variant.reliability == variant.chance_to_win


def test_reliability_is_one_minus_the_one_sided_p_value() -> None:
    variant = only_variant(analyze(request(MEAN_A, MEAN_B, metric="mean", **GBSTATS)))
    # gbstats' OneSidedTreatmentGreaterTTest p-value on these data: 0.06558262868467746.
    assert variant.reliability == pytest.approx(1 - 0.06558262868467746, abs=1e-12)


def test_reliability_for_a_lower_is_better_metric_uses_the_less_direction() -> None:
    settings = {"metric": "mean", "test_direction": "less", **GBSTATS}
    variant = only_variant(analyze(request(MEAN_A, MEAN_B, **settings)))
    assert variant.p_value == pytest.approx(0.9344173713153225)
    assert variant.reliability == pytest.approx(1 - 0.9344173713153225)


def test_improvement_is_the_relative_lift_in_percent_even_for_absolute_analyses() -> None:
    settings = {"metric": "mean", "difference": "absolute"}
    variant = only_variant(analyze(request(MEAN_A, MEAN_B, **settings)))
    assert variant.lift == pytest.approx(2422.7 / 3461 - 1396.87 / 3000)
    assert variant.improvement == pytest.approx(100 * ((2422.7 / 3461) / (1396.87 / 3000) - 1))


def test_bayesian_lower_is_better_flips_chance_to_win_and_risk() -> None:
    arms = ({"n": 100, "sum": 49}, {"n": 100, "sum": 51})
    higher = only_variant(analyze(request(*arms, engine="bayesian")))
    lower = only_variant(analyze(request(*arms, engine="bayesian", test_direction="less")))
    assert lower.chance_to_win == pytest.approx(1 - higher.chance_to_win)
    assert lower.risk == (higher.risk[1], higher.risk[0])


def test_bayesian_prior_is_relative_and_rescaled_for_absolute_lifts() -> None:
    settings = {"metric": "mean", "engine": "bayesian", "difference": "absolute"}
    prior = {"mean": 0.1, "variance": 0.1}
    control = {"n": 10, "sum": 100, "sum_squares": 1002.25}
    treatment = {"n": 10, "sum": 105, "sum_squares": 1111.5}
    variant = only_variant(analyze(request(control, treatment, prior=prior, **settings)))
    diff = difference(mean_arm(10, 100, 1002.25), mean_arm(10, 105, 1111.5), relative=False)
    assert diff is not None
    expected = bayesian_test(diff, prior=absolute_prior(GaussianPrior(0.1, 0.1), 10.0))
    assert expected is not None
    assert variant.lift == pytest.approx(expected.estimate)
    assert variant.chance_to_win == pytest.approx(expected.chance_to_win)


def four_treatments(**settings: Any) -> dict[str, Any]:
    return plain(
        analyze(
            request(
                {"n": 5000, "sum": 500},
                {"n": 5000, "sum": 560},
                {"n": 5000, "sum": 590},
                {"n": 5000, "sum": 505},
                {"n": 5000, "sum": 650},
                **settings,
            )
        )
    )


def test_bonferroni_interval_is_the_interval_at_alpha_over_m() -> None:
    result = four_treatments(correction="bonferroni")
    diff = difference(proportion_arm(5000, 500), proportion_arm(5000, 560), relative=True)
    assert diff is not None
    first = result["variants"][0]
    assert first["p_value_adjusted"] == pytest.approx(min(1.0, 4 * first["p_value"]))
    assert first["ci_adjusted"] == pytest.approx(list(t_test(diff, alpha=0.05 / 4).ci))


@pytest.mark.parametrize("correction", ["bonferroni", "holm", "bh"])
@pytest.mark.parametrize("settings", [{}, {"sequential": True}, {"test_direction": "greater"}])
def test_adjusted_interval_excludes_zero_exactly_when_adjusted_p_is_below_alpha(
    correction: str, settings: dict[str, Any]
) -> None:
    for variant in four_treatments(correction=correction, **settings)["variants"]:
        low, high = variant["ci_adjusted"]
        excludes_zero = (low is not None and low > 0) or (high is not None and high < 0)
        assert excludes_zero == (variant["p_value_adjusted"] < 0.05)
        assert variant["p_value_adjusted"] >= variant["p_value"]
        raw_low, raw_high = variant["ci"]
        assert low is None or low <= raw_low
        assert high is None or high >= raw_high


def test_goals_form_one_family_for_the_correction() -> None:
    goals = [request({"n": 5000, "sum": 500}, {"n": 5000, "sum": s}) for s in (560, 590)]
    alone = [plain(analyze(goal))["variants"][0]["p_value"] for goal in goals]
    family = [
        plain(r)["variants"][0]["p_value_adjusted"] for r in analyze_goals(goals, "bonferroni")
    ]
    assert family == pytest.approx([min(1.0, 2 * p) for p in alone])


def test_srm_alarm() -> None:
    fine = plain(analyze(request({"n": 1500, "sum": 10}, {"n": 1480, "sum": 10})))
    broken = plain(analyze(request({"n": 1500, "sum": 10}, {"n": 1300, "sum": 10})))
    assert round(fine["srm_p_value"], 6) == 0.714088 and not fine["srm_alarm"]
    assert broken["srm_p_value"] < 0.001 and broken["srm_alarm"]


def test_srm_uses_the_configured_weights() -> None:
    result = analyze(request({"n": 2000, "sum": 10}, {"n": 1000, "sum": 10}, weights=[2, 1]))
    assert result.srm_p_value == pytest.approx(1.0)


def test_bandit_reweights_toward_the_best_arm_once_every_arm_has_enough_units() -> None:
    result = four_treatments(bandit_min_weight=0.05)
    weights, best = result["bandit_weights"], result["probability_best"]
    assert result["bandit_updated"]
    assert sum(weights.values()) == pytest.approx(1.0)
    assert min(weights.values()) >= 0.05
    assert max(weights, key=weights.__getitem__) == "4"
    assert max(best, key=best.__getitem__) == "4"


def test_bandit_keeps_configured_weights_below_the_minimum_units() -> None:
    result = analyze(request({"n": 99, "sum": 5}, {"n": 500, "sum": 90}, weights=[3, 1]))
    assert not result.bandit_updated
    assert result.bandit_weights == {"0": 0.75, "1": 0.25}
