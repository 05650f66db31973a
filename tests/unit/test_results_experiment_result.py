"""Totals + definition → the result document: which statistics go in, and the shape.

The shape is checked on the document's JSON (``published``): what snapshots store and
publish, and what these tests pinned down before the document became a model.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import numpy as np
import pytest

from worker.events.experiment import ExperimentDefinition
from worker.results.cell_aggregation import CellTable
from worker.results.columns import encode
from worker.results.contract import ResultDocument
from worker.results.experiment_result import result_document
from worker.results.query import ResultQuery
from worker.results.query_totals import QueryTotals
from worker.results.service import days_spanned
from worker.results.variant_totals import VariantTotals
from worker.stats import AnalysisRequest, analyze_goals
from worker.stats.power import treatment_power
from worker.stats.srm import srm_p_value


def definition(**stats: Any) -> ExperimentDefinition:
    return ExperimentDefinition.model_validate(
        {
            "id": "exp",
            "project_key": "shop",
            "name": "Checkout",
            "status": "live",
            "variants": [
                {"id": "b", "name": "B", "traffic_weight": 1},
                {"id": "a", "name": "A", "is_control": True, "traffic_weight": 2},
                {"id": "c", "name": "C", "traffic_weight": 1},
            ],
            "goals": [
                {"key": "signup", "name": "Signup"},
                {"key": "buy", "name": "Buy", "type": "revenue", "primary": True},
                {"key": "click", "name": "Click", "type": "count"},
            ],
            "stats": stats,
        }
    )


def row(variant: str, visitors: int, scale: float = 1.0) -> VariantTotals:
    conversions = int(visitors * 0.1 * scale)
    return VariantTotals(
        variant,
        visitors=visitors,
        visits=visitors + visitors // 3,
        conversions=conversions,
        converted_visits=conversions + 7,
        goal_events=conversions * 2,
        goal_events_sum_squares=conversions * 5,
        orders=conversions,
        revenue=conversions * 20.0 * scale,
        revenue_sum_squares=conversions * 500.0 * scale,
    )


def published(document: ResultDocument) -> dict[str, Any]:
    return document.model_dump(mode="json")


ROWS = [row("a", 2000), row("b", 1000, 1.2), row("c", 1000, 0.9)]
TOTALS = {goal: QueryTotals(ROWS) for goal in ("signup", "buy", "click")}


def test_each_goal_type_gets_its_metric_and_the_goals_form_one_family() -> None:
    exp = definition(engine="frequentist", correction="holm", sequential=False)
    document = published(result_document(exp, TOTALS))
    weights = [0.5, 0.25, 0.25]
    inputs: dict[str, list[dict[str, Any]]] = {
        "signup": [{"n": r.visitors, "sum": r.conversions} for r in ROWS],
        "buy": [
            {"n": r.visitors, "sum": r.revenue, "sum_squares": r.revenue_sum_squares} for r in ROWS
        ],
        "click": [
            {"n": r.visitors, "sum": r.goal_events, "sum_squares": r.goal_events_sum_squares}
            for r in ROWS
        ],
    }
    requests = [
        AnalysisRequest.model_validate(
            {
                "metric": "proportion" if goal == "signup" else "mean",
                "alpha": 0.05,
                "weights": weights,
                "variants": [
                    {"id": r.variant_id, "control": r.variant_id == "a"} | values
                    for r, values in zip(ROWS, inputs[goal], strict=True)
                ],
            }
        )
        for goal in ("signup", "buy", "click")
    ]
    for goal, result in zip(
        ("signup", "buy", "click"), analyze_goals(requests, "holm"), strict=True
    ):
        block = document["goals"][goal]
        assert [v["variant_id"] for v in block["variants"]] == ["a", "b", "c"]
        assert block["variants"][0]["statistics"] is None
        for variant, expected in zip(block["variants"][1:], result.variants, strict=True):
            # Power is an addition of the document's, tested on its own below.
            shown = {k: v for k, v in variant["statistics"].items() if k != "power"}
            assert shown == expected.model_dump(mode="json")
    assert document["srm_p_value"] == srm_p_value([2000, 1000, 1000], weights)
    assert document["srm_alarm"] is False
    assert document["reference_variant"] == "a" and document["goal"] == "buy"
    assert document["settings"]["alpha"] == pytest.approx(0.05)
    control = document["goals"]["signup"]["variants"][0]
    assert control["is_control"] and control["is_reference"] and control["traffic_weight"] == 0.5
    assert control["conversion_rate"] == 0.1 and control["units"] == 2000
    assert document["segments"] == {} and document["breakdown"] is None


def test_visits_unit_uses_visits_and_caps_converted_visits() -> None:
    exp = definition(engine="frequentist")
    rows = [VariantTotals("a", visitors=10, visits=12, converted_visits=13)] + [
        VariantTotals(v, visitors=10, visits=12, converted_visits=3) for v in ("b", "c")
    ]
    query = ResultQuery(count_unit="visits", goal="signup")
    block = published(result_document(exp, {"signup": QueryTotals(rows)}, query))["goals"]["signup"]
    assert block["unit"] == "visits"
    assert [v["units"] for v in block["variants"]] == [12, 12, 12]
    assert block["variants"][1]["conversion_rate"] == 0.25
    converted = published(
        result_document(
            exp, {"signup": QueryTotals(rows)}, ResultQuery(conversion_type="converted_visits")
        )
    )
    assert converted["goals"]["signup"]["unit"] == "visits"


def test_reference_override_and_bayesian_checks() -> None:
    exp = definition(engine="bayesian", confidence_threshold_percent=90)
    document = published(
        result_document(exp, {"buy": TOTALS["buy"]}, ResultQuery(reference_variant="c"))
    )
    variants = document["goals"]["buy"]["variants"]
    assert [v["variant_id"] for v in variants] == ["c", "b", "a"]
    assert variants[0]["is_reference"] and not variants[0]["is_control"]
    statistics = variants[2]["statistics"]
    assert statistics["chance_to_win"] is not None and statistics["p_value"] is None
    assert set(statistics["frequentist_check"]) == {"p_value", "p_value_adjusted", "ci_adjusted"}
    assert document["settings"]["alpha"] == pytest.approx(0.1)


def test_breakdowns_are_analysed_per_segment() -> None:
    exp = definition(engine="frequentist")
    segments = {"mobile": ROWS, "desktop": [row("a", 20), row("b", 10)]}
    totals = QueryTotals(ROWS, "device", segments)
    document = published(result_document(exp, {"buy": totals}, ResultQuery(breakdown="device")))
    assert list(document["segments"]) == ["mobile", "desktop"]
    desktop = document["segments"]["desktop"]["goals"]["buy"]["variants"]
    assert [v["visitors"] for v in desktop] == [20, 10, 0]
    assert document["segments"]["mobile"]["goals"] == document["goals"]


def test_only_the_largest_segments_get_statistics() -> None:
    exp = definition(engine="bayesian")
    segments = {
        f"page{i}": [row("a", 20 * (i + 1)), row("b", 10 * (i + 1)), row("c", 10)] for i in range(5)
    }
    document = published(
        result_document(
            exp,
            {"buy": QueryTotals(ROWS, "landing_page", segments)},
            ResultQuery(breakdown="landing_page"),
            max_segment_statistics=2,
        )
    )
    analysed = [
        label
        for label, segment in document["segments"].items()
        if segment["goals"]["buy"]["variants"][1]["statistics"] is not None
    ]
    assert analysed == ["page3", "page4"]
    skipped = document["segments"]["page0"]["goals"]["buy"]
    assert skipped["variants"][1]["visitors"] == 10 and skipped["probability_best"] is None
    assert (
        "frequentist_check"
        not in document["segments"]["page4"]["goals"]["buy"]["variants"][1]["statistics"]
    )
    assert "frequentist_check" in document["goals"]["buy"]["variants"][1]["statistics"]


def _buy_request(prior: dict[str, float] | None) -> AnalysisRequest:
    """The worker's buy (revenue) request, built here from the rows, as the calculator takes it."""
    return AnalysisRequest.model_validate(
        {
            "metric": "mean",
            "engine": "bayesian",
            "sequential": True,
            "alpha": 0.05,
            "prior": prior,
            "weights": [0.5, 0.25, 0.25],
            "variants": [
                {
                    "id": r.variant_id,
                    "control": r.variant_id == "a",
                    "n": r.visitors,
                    "sum": r.revenue,
                    "sum_squares": r.revenue_sum_squares,
                }
                for r in ROWS
            ],
        }
    )


def test_a_proper_prior_in_the_definition_gives_the_calculators_posterior() -> None:
    prior = {"mean": 0.01, "variance": 0.0004}
    document = published(result_document(definition(prior=prior), {"buy": TOTALS["buy"]}))
    flat = published(result_document(definition(), {"buy": TOTALS["buy"]}))
    shown = [v["statistics"] for v in document["goals"]["buy"]["variants"][1:]]
    for statistics, expected in zip(
        shown, analyze_goals([_buy_request(prior)], "none")[0].variants, strict=True
    ):
        for key in ("lift", "ci", "chance_to_win", "risk", "se"):
            assert statistics[key] == expected.model_dump(mode="json")[key]
    flat_lifts = [v["statistics"]["lift"] for v in flat["goals"]["buy"]["variants"][1:]]
    assert [s["lift"] for s in shown] != pytest.approx(flat_lifts, rel=1e-3)
    assert flat_lifts == [v.lift for v in analyze_goals([_buy_request(None)], "none")[0].variants]


def test_a_prior_is_refused_with_the_frequentist_engine() -> None:
    with pytest.raises(ValueError, match="bayesian engine only"):
        definition(engine="frequentist", prior={"variance": 0.1})
    with pytest.raises(ValueError, match="greater than -1"):
        definition(prior={"mean": -1.0, "variance": 0.1})


def test_sequential_tuning_follows_the_plan_unless_set() -> None:
    tuned = result_document(definition(planned_sample_size=3000), TOTALS)
    assert tuned.settings.sequential_tuning == 6000
    explicit = result_document(definition(planned_sample_size=3000, sequential_tuning=800), TOTALS)
    assert explicit.settings.sequential_tuning == 800
    assert result_document(definition(), TOTALS).settings.sequential_tuning == 5000


def test_each_treatment_reports_its_power() -> None:
    exp = definition(engine="frequentist", minimum_detectable_effect=0.2)
    document = published(result_document(exp, TOTALS, days_with_data=4.0))
    request = AnalysisRequest.model_validate(
        {
            "metric": "proportion",
            "sequential": True,
            "weights": [0.5, 0.25, 0.25],
            "variants": [
                {"id": r.variant_id, "control": r.variant_id == "a", "n": r.visitors}
                | {"sum": r.conversions}
                for r in ROWS
            ],
        }
    )
    expected = treatment_power(request, effect=0.2)["b"]
    assert expected is not None
    power = document["goals"]["signup"]["variants"][1]["statistics"]["power"]
    assert power["effect"] == 0.2 and power["power"] == 0.8
    for horizon, numbers in (
        ("fixed_horizon", expected.fixed_horizon),
        ("sequential", expected.sequential),
    ):
        units = math.ceil(numbers.units_needed)
        assert power[horizon] == {
            "mde": numbers.mde,
            "units_needed": units,
            # 4000 visitors over 4 days: 1000 a day.
            "days_needed": units / 1000,
        }
    # Without the days with data, only the units are known.
    undated = published(result_document(exp, TOTALS))["goals"]["signup"]["variants"][1]
    assert undated["statistics"]["power"]["sequential"]["days_needed"] is None


def test_power_is_left_out_where_undefined() -> None:
    exp = definition(engine="frequentist")
    rows = [VariantTotals(v, visitors=100) for v in ("a", "b", "c")]
    document = published(result_document(exp, {"signup": QueryTotals(rows)}))
    assert "power" not in document["goals"]["signup"]["variants"][1]["statistics"]


def test_days_with_data_span_the_query_dates() -> None:
    # Hour buckets from 1970-01-02 00:00 UTC to 1970-01-04 11:00: 2.5 days with data.
    hours = np.array([24, 30, 83], dtype=np.int64)
    table = CellTable(variants=encode([], 0), hour_buckets=hours, cell_columns={}, metrics={})
    assert days_spanned(table, ResultQuery()) == 2.5
    # Clipped to the queried dates: only 1970-01-02 (hours 24 and 30).
    one_day = ResultQuery(start_date=date(1970, 1, 2), end_date=date(1970, 1, 2))
    assert days_spanned(table, one_day) == 7 / 24
    assert days_spanned(table, ResultQuery(start_date=date(1971, 1, 1))) is None
