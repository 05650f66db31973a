"""Kameleoon request parsing and response shaping (pure, no services)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.result_rows import goal_block, variant_row
from worker.api.errors import ApiError
from worker.api.kameleoon.params import ResultsRequest, results_plan
from worker.api.kameleoon.shapes import variation_data
from worker.events.experiment import Correction, Engine, ExperimentDefinition, GoalType
from worker.results.contract import VariantRow, VariantStatistics
from worker.results.verdict import UNCLUSTERED_NOTE

DEFINITION = ExperimentDefinition.model_validate(
    {
        "id": "exp",
        "project_key": "shop",
        "name": "Exp",
        "variants": [{"id": "a", "name": "A", "is_control": True}, {"id": "b", "name": "B"}],
        "goals": [{"key": "buy", "name": "Buy", "primary": True}, {"key": "view", "name": "V"}],
        "stats": {"engine": "frequentist", "sequential": False},
    }
)
BASE: dict[str, Any] = {
    "dateIntervals": [{"start": "2026-11-19T00:00:00-05:00", "end": "2026-11-20T23:00:00-05:00"}],
    "conversionType": "CONVERTED_VISITS",
}


def plan(**body: Any) -> Any:
    return results_plan(ResultsRequest.model_validate(BASE | body), DEFINITION)


def test_body_becomes_the_query() -> None:
    result = plan(
        visitorData=False,
        breakdown={"type": "NEW_VISITOR"},
        filters=[
            {"type": "DEVICE_TYPE", "values": ["MOBILE", "TABLET"]},
            {"type": "NEW_VISITOR", "values": ["RETURNING"], "include": False},
        ],
        goalsIds=["view"],
        referenceVariationId="b",
    )
    query = result.query
    assert (str(query.start_date), str(query.end_date), query.tz) == (
        "2026-11-19",
        "2026-11-20",
        -5,
    )
    assert (query.count_unit, query.conversion_type) == ("visits", "converted_visits")
    assert (query.breakdown, query.reference_variant) == ("visitor_type", "b")
    assert [[(c.field, c.operator, c.value) for c in group] for group in query.segment] == [
        [("device", "==", "MOBILE"), ("device", "==", "TABLET")],
        [("visitor_type", "!=", "returning")],
    ]
    assert result.goals == ["view"] and not result.daily
    assert result.definition is DEFINITION


def test_statistics_overrides_copy_the_definition() -> None:
    stats = plan(
        bayesian=True, sequentialTesting=True, enabledMultipleTesting=True
    ).definition.stats
    assert (stats.engine, stats.sequential, stats.correction) == (
        Engine.BAYESIAN,
        True,
        Correction.BONFERRONI,
    )
    assert DEFINITION.stats.engine is Engine.FREQUENTIST
    assert plan(breakdown={"type": "INTERVAL", "interval": "DAY"}).daily


@pytest.mark.parametrize(
    "body",
    [
        {"dateIntervals": [{"start": "2026-11-19T00:00:00+05:30", "end": "2026-11-20T00:00:00"}]},
        {"breakdown": {"type": "CUSTOM_DATUM", "index": 1}},
        {"goalsIds": ["nope"]},
        {"referenceVariationId": "z"},
    ],
)
def test_unanswerable_requests_are_400(body: dict[str, Any]) -> None:
    with pytest.raises(ApiError) as raised:
        plan(**body)
    assert raised.value.status_code == 400


def row(variant: str, **numbers: Any) -> VariantRow:
    base = {"visitors": 10, "visits": 12, "goal_events": 3, "converted_visits": 2}
    return variant_row(variant, **base | numbers)


def test_variation_data_units_are_percent() -> None:
    statistics = VariantStatistics(id="b", reliability=0.9, improvement=25.0, lift_type="relative")
    blocks = {
        "buy": goal_block([
            row("a", conversion_rate=0.2, statistics=None),
            row("b", conversion_rate=0.25, orders=2, revenue=30.0, statistics=statistics),
        ])
    }  # fmt: skip
    data = variation_data({"_reference": blocks, "mobile": blocks}, ["buy"])
    assert list(data["variationData"]) == ["_reference", "b"]
    general = data["variationData"]["b"]["breakdownData"]["mobile"]["generalData"]
    assert (general["visitorCount"], general["visitCount"]) == (10, 12)
    assert general["goalsData"]["buy"] == {
        "conversionCount": 3,
        "convertedVisitCount": 2,
        "revenueCount": 30.0,
        "averageCart": 15.0,
        "conversionRate": 25.0,
        "improvementRate": 25.0,
        "improvementInterval": None,
        "reliability": pytest.approx(90.0),
    }
    reference = data["variationData"]["_reference"]["breakdownData"]["_reference"]
    assert reference["generalData"]["goalsData"]["buy"]["reliability"] is None


def test_a_revenue_goal_adds_the_average_cart_lift_with_its_interval() -> None:
    per_order = VariantStatistics(
        id="b", reliability=0.8, improvement=-12.5, lift_type="relative", ci=(-0.3, 0.1)
    )
    blocks = {
        "buy": goal_block(
            [
                row("a", orders=4, revenue=80.0, statistics=None),
                row("b", orders=2, revenue=35.0, revenue_per_order_statistics=per_order),
            ],
            GoalType.REVENUE,
        )
    }
    data = variation_data({"_reference": blocks}, ["buy"])["variationData"]
    goal = data["b"]["breakdownData"]["_reference"]["generalData"]["goalsData"]["buy"]
    assert goal["averageCart"] == 17.5
    # Revenue per order can be negative (refunds): the interval is shown as computed.
    assert goal["averageCartImprovementRate"] == -12.5
    assert goal["averageCartImprovementInterval"] == [pytest.approx(-30.0), pytest.approx(10.0)]
    assert goal["averageCartReliability"] == pytest.approx(80.0)
    reference = data["_reference"]["breakdownData"]["_reference"]["generalData"]["goalsData"]
    assert reference["buy"]["averageCartImprovementRate"] is None


def test_visits_analysed_as_independent_carry_a_note() -> None:
    rows = [row("a", statistics=None), row("b")]
    unclustered = goal_block(rows).model_copy(
        update={"unit": "visits", "visit_analysis": "unclustered"}
    )
    clustered = unclustered.model_copy(update={"visit_analysis": "clustered"})
    note = variation_data({"_reference": {"g": unclustered}}, ["g"])["variationData"]["b"]
    goal = note["breakdownData"]["_reference"]["generalData"]["goalsData"]["g"]
    assert goal["reliabilityNote"] == UNCLUSTERED_NOTE
    plain = variation_data({"_reference": {"g": clustered}}, ["g"])["variationData"]["b"]
    assert (
        "reliabilityNote"
        not in plain["breakdownData"]["_reference"]["generalData"]["goalsData"]["g"]
    )
