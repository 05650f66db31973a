"""Result documents → Mida's response bodies (worker/api/mida/shapes.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.unit.result_rows import buyer_totals, variant_row
from worker.api.experiment_state import days_running
from worker.api.mida.shapes import (
    breakdown,
    distribution,
    experiment_summary,
    mida_time,
    result_response,
)
from worker.events.experiment import ExperimentDefinition, GoalType
from worker.results.experiment_result import result_document
from worker.results.query import ResultQuery
from worker.results.query_totals import QueryTotals
from worker.results.variant_totals import VariantTotals

NOW = datetime(2024, 1, 30, 12, tzinfo=UTC)


def definition(**changes: Any) -> ExperimentDefinition:
    raw: dict[str, Any] = {
        "id": "cta",
        "project_key": "shop",
        "name": "CTA colour",
        "status": "live",
        "started_at": "2024-01-15T10:30:00+00:00",
        "variants": [
            {"id": "0", "name": "Control", "is_control": True, "traffic_weight": 1},
            {"id": "1", "name": "Red", "traffic_weight": 1},
        ],
        "goals": [
            {"key": "purchase", "name": "Purchase", "type": "revenue", "primary": True},
            {"key": "signup", "name": "Signup"},
        ],
    }
    return ExperimentDefinition.model_validate(raw | changes)


def row(
    variant: str, visitors: int, conversions: int, revenue: float, orders: int
) -> VariantTotals:
    return VariantTotals(
        variant,
        visitors=visitors,
        visits=visitors,
        conversions=conversions,
        converted_visits=conversions,
        goal_events=orders,
        goal_events_sum_squares=orders * 4,
        orders=orders,
        revenue=revenue,
        revenue_sum_squares=revenue * revenue,
    )


def document(experiment: ExperimentDefinition, control: VariantTotals, red: VariantTotals) -> Any:
    totals = {goal.key: QueryTotals([control, red]) for goal in experiment.goals}
    return result_document(experiment, totals, ResultQuery())


def mida(experiment: ExperimentDefinition, doc: Any, goal: str = "purchase") -> dict[str, Any]:
    response = result_response(experiment, doc, goal, None, NOW)
    return response.model_dump(mode="json", exclude_unset=True)


def test_result_matches_mida_fields_and_units() -> None:
    experiment = definition()
    body = mida(
        experiment,
        document(experiment, row("0", 1500, 120, 6000.0, 130), row("1", 1480, 148, 8880.0, 160)),
    )
    assert body["success"] is True
    assert (body["test_id"], body["test_name"], body["status"], body["status_code"]) == (
        "cta", "CTA colour", "live", 1,
    )  # fmt: skip
    assert body["start_date"] == "2024-01-15T10:30:00.000Z" and body["end_date"] is None
    assert body["days_running"] == 15
    assert body["primary_goal"] == {
        "goal_key": "purchase", "goal_name": "Purchase", "goal_type": "revenue", "goal_value": "purchase",
    }  # fmt: skip
    assert (body["total_visitors"], body["total_conversions"]) == (2980, 268)
    control, red = body["variants"]
    assert (control["variant_id"], control["conversion_rate"], control["is_control"]) == (
        "0",
        8.0,
        True,
    )
    assert "improvement" not in control and control["statistics"] is None
    assert (red["conversion_rate"], red["improvement"]) == (10.0, 25.0)
    assert red["rpv"] == 6.0 and control["rpv"] == 4.0
    assert red["revenue_per_visitor_improvement"] == 50.0
    assert (
        red["aov"] == 55.5 and red["traffic_weight"] == 50.0 and red["variant_status"] == "active"
    )
    assert body["has_revenue"] is True
    assert (body["total_revenue"], body["total_orders"]) == (14880.0, 290)
    assert body["rpv"] == round(14880 / 2980, 4) and body["aov"] == round(14880 / 290, 4)
    assert 0 <= body["srm_p_value"] <= 1
    statistics = red["statistics"]
    assert statistics["engine"] == "bayesian" and statistics["sequential"] is True
    assert 0 <= statistics["chance_to_beat_control"] <= 100
    low, high = statistics["credible_interval"]
    assert low < high and "p_value" not in statistics


def test_goal_without_revenue_has_no_revenue_block() -> None:
    experiment = definition()
    body = mida(
        experiment, document(experiment, row("0", 100, 10, 0, 0), row("1", 100, 12, 0, 0)), "signup"
    )
    assert body["has_revenue"] is False and "total_revenue" not in body
    assert body["goal"]["goal_key"] == "signup" and body["primary_goal"]["goal_key"] == "purchase"


def test_improvement_needs_a_control_with_conversions() -> None:
    experiment = definition()
    body = mida(experiment, document(experiment, row("0", 100, 0, 0, 0), row("1", 100, 5, 50, 5)))
    red = body["variants"][1]
    assert "improvement" not in red and "revenue_per_visitor_improvement" not in red
    empty = mida(experiment, document(experiment, row("0", 0, 0, 0, 0), row("1", 0, 0, 0, 0)))
    assert [v["conversion_rate"] for v in empty["variants"]] == [0.0, 0.0]


def test_frequentist_statistics_and_completed_status() -> None:
    experiment = definition(
        status="completed",
        ended_at="2024-01-25T00:00:00+00:00",
        stats={"engine": "frequentist", "sequential": False},
    )
    doc = document(experiment, row("0", 5000, 400, 0, 0), row("1", 5000, 480, 0, 0))
    body = result_response(experiment, doc, "signup", experiment.ended_at, NOW).model_dump(
        mode="json", exclude_unset=True
    )
    assert (body["status"], body["status_code"], body["days_running"]) == ("inactive", 0, 9)
    assert body["end_date"] == "2024-01-25T00:00:00.000Z"
    statistics = body["variants"][1]["statistics"]
    assert statistics["engine"] == "frequentist" and statistics["sequential"] is False
    assert 0 <= statistics["p_value"] <= 1 and "chance_to_beat_control" not in statistics
    low, high = statistics["confidence_interval"]
    assert low < body["variants"][1]["improvement"] < high


def test_breakdown_segment_has_lifts_within_the_segment() -> None:
    rows = [
        variant_row("0", name="Control", is_control=True, visitors=200, conversions=20),
        variant_row("1", name="Red", is_control=False, visitors=100, conversions=15),
    ]
    segment = breakdown(definition(), "mobile", rows, GoalType.CONVERSION).model_dump(
        exclude_unset=True
    )
    assert segment["criteria"] == "mobile"
    assert (segment["total_visitors"], segment["total_conversions"]) == (300, 35)
    assert segment["conversion_rate"] == round(3500 / 300, 4)
    assert "improvement" not in segment["variants"][0]
    assert segment["variants"][1]["improvement"] == 50.0


def test_distribution_modes_and_listing_status() -> None:
    assert distribution(definition()).distribution_mode == "equal"
    weighted = definition(
        variants=[
            {"id": "0", "name": "Control", "is_control": True, "traffic_weight": 3},
            {"id": "1", "name": "Red", "traffic_weight": 1},
            {"id": "2", "name": "Off", "traffic_weight": 0},
        ]
    )
    shares = distribution(weighted)
    assert shares.distribution_mode == "custom"
    assert [(v.traffic_weight, v.variant_status) for v in shares.variants] == [
        (75.0, "active"), (25.0, "active"), (0.0, "paused"),
    ]  # fmt: skip
    bandit = distribution(definition(type="mab"))
    assert bandit.is_mab and bandit.distribution_mode == "mab"
    assert all(v.traffic_weight is None for v in bandit.variants)
    summary = experiment_summary(definition(status="completed"))
    assert (summary.status, summary.is_completed) == (0, 1)
    assert experiment_summary(definition(status="draft")).status == 9


def test_times_in_mida_format() -> None:
    assert mida_time(datetime(2024, 1, 15, 12, 30, tzinfo=UTC)) == "2024-01-15T12:30:00.000Z"
    assert mida_time(None) is None
    assert days_running(definition(started_at=None), None, NOW) == 0


def test_refunds_never_turn_a_worse_revenue_per_visitor_into_an_improvement() -> None:
    # Net revenue below zero (refunds): control -200 over 100 visitors, treatment -300.
    experiment = definition()
    body = mida(
        experiment,
        document(experiment, row("0", 100, 10, -200.0, 10), row("1", 100, 10, -300.0, 10)),
    )
    treatment = body["variants"][1]
    assert (
        "revenue_per_visitor_improvement" not in treatment
    )  # no relative change of a negative base
    statistics = treatment["revenue_per_visitor_statistics"]
    # The engine fell back to the absolute difference: no interval in Mida's percent units.
    assert statistics.get("confidence_interval") is None
    assert statistics.get("credible_interval") is None


BUYERS = {
    "0": [(1, 40.0), (2, 90.0), (1, 35.0), (3, 150.0), (1, 55.0), (1, 42.0), (2, 70.0)],
    "1": [(1, 60.0), (1, 75.0), (2, 160.0), (1, 58.0), (4, 230.0), (1, 66.0), (2, 120.0)],
}


def test_a_revenue_goal_adds_the_order_value_lift_with_its_own_statistics() -> None:
    experiment = definition(stats={"engine": "frequentist", "sequential": False})
    doc = document(
        experiment, buyer_totals("0", 100, BUYERS["0"]), buyer_totals("1", 100, BUYERS["1"])
    )
    control, red = mida(experiment, doc)["variants"]
    assert "aov_improvement" not in control and "aov_statistics" not in control
    # 482 over 11 orders against 769 over 12.
    assert red["aov_improvement"] == round(100.0 * ((769 / 12) / (482 / 11) - 1.0), 4)
    raw = doc.goals["purchase"].variants[1].revenue_per_order_statistics
    assert raw is not None and raw.ci is not None
    assert red["aov_statistics"] == {
        "engine": "frequentist",
        "sequential": False,
        "p_value": raw.p_value,
        "confidence_interval": [round(100.0 * side, 4) for side in raw.ci if side is not None],
    }
    signup = mida(experiment, doc, "signup")["variants"][1]
    assert "aov_improvement" not in signup and "aov_statistics" not in signup
