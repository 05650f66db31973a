"""Kameleoon request parsing and response shaping (pure, no services)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from tests.unit.result_rows import goal_block, variant_row
from worker.api.errors import ApiError
from worker.api.kameleoon.params import ResultsRequest, periods, results_plan
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
    assert result.goals == ["view"] and result.interval is None
    assert result.definition is DEFINITION


def test_statistics_overrides_copy_the_definition() -> None:
    stats = plan(
        bayesian=False, sequentialTesting=True, enabledMultipleTesting=True
    ).definition.stats
    assert (stats.engine, stats.sequential, stats.correction) == (
        Engine.FREQUENTIST,
        True,
        Correction.BONFERRONI,
    )
    assert plan(bayesian=True).definition.stats.engine is Engine.BAYESIAN
    assert DEFINITION.stats.engine is Engine.FREQUENTIST and not DEFINITION.stats.sequential
    assert plan(breakdown={"type": "INTERVAL", "interval": "DAY"}).interval == "DAY"


BAYESIAN = DEFINITION.model_copy(
    update={"stats": DEFINITION.stats.model_copy(update={"engine": Engine.BAYESIAN})}
)


def bayesian_plan(**body: Any) -> Any:
    return results_plan(ResultsRequest.model_validate(BASE | body), BAYESIAN)


def test_sequential_testing_asks_for_the_frequentist_engine_unless_bayesian_is_asked_for() -> None:
    # Kameleoon's bayesian defaults to false: sequentialTesting alone is a frequentist test.
    for sequential in (True, False):
        stats = bayesian_plan(sequentialTesting=sequential).definition.stats
        assert (stats.engine, stats.sequential) == (Engine.FREQUENTIST, sequential)
    # Without sequentialTesting the experiment's own engine stays.
    assert bayesian_plan().definition is BAYESIAN
    # bayesian true with sequentialTesting false: nothing contradicts, Bayesian it is.
    assert bayesian_plan(bayesian=True, sequentialTesting=False).definition.stats.engine is (
        Engine.BAYESIAN
    )
    with pytest.raises(ApiError) as raised:
        bayesian_plan(bayesian=True, sequentialTesting=True)
    assert raised.value.status_code == 400
    assert raised.value.message == (
        "sequentialTesting applies to the frequentist engine only: a Bayesian result has no "
        "sequential form; send bayesian false (or leave it out) for sequential results."
    )


def test_the_tutorials_parameter_names_and_types_are_accepted() -> None:
    tutorial = plan(
        goalId=["view"], referenceVariationId="b", sequentialTesting="true", visitorData="false"
    )
    ours = plan(
        goalsIds=["view"], referenceVariationId="b", sequentialTesting=True, visitorData=False
    )
    assert tutorial == ours
    assert (tutorial.goals, tutorial.query.count_unit) == (["view"], "visits")
    assert tutorial.definition.stats.sequential
    assert plan(goalId=["view"], goalsIds=["view"]).goals == ["view"]
    with pytest.raises(ApiError, match="goalId and goalsIds name different goals"):
        plan(goalId=["view"], goalsIds=["buy"])


NUMBERED = DEFINITION.model_copy(
    update={
        "variants": [
            DEFINITION.variants[0].model_copy(update={"id": "0"}),
            DEFINITION.variants[1].model_copy(update={"id": "828220"}),
        ],
        "goals": [DEFINITION.goals[0].model_copy(update={"key": "123"}), DEFINITION.goals[1]],
    }
)


def test_numeric_ids_name_the_goals_and_variations_written_as_text() -> None:
    body = BASE | {"goalId": [123], "referenceVariationId": 828220}
    numbered = results_plan(ResultsRequest.model_validate(body), NUMBERED)
    assert numbered.goals == ["123"] and numbered.query.reference_variant == "828220"
    with pytest.raises(ValidationError):
        ResultsRequest.model_validate(BASE | {"goalId": [True]})


def test_sdk_and_timezone_breakdowns_are_visitor_dimensions() -> None:
    assert plan(breakdown={"type": "SDK"}).query.breakdown == "sdk"
    assert plan(breakdown={"type": "TIMEZONE"}).query.breakdown == "timezone"


@pytest.mark.parametrize(
    ("interval", "first", "last", "expected"),
    [
        # Weeks start on Monday; the first and last are clipped to the days asked for.
        ("WEEK", "2026-11-18", "2026-12-01", [("2026-11-18", "2026-11-22"), ("2026-11-23", "2026-11-29"), ("2026-11-30", "2026-12-01")]),
        ("WEEK", "2026-11-16", "2026-11-22", [("2026-11-16", "2026-11-22")]),
        ("MONTH", "2026-11-20", "2027-01-05", [("2026-11-20", "2026-11-30"), ("2026-12-01", "2026-12-31"), ("2027-01-01", "2027-01-05")]),
        ("DAY", "2026-11-20", "2026-11-21", [("2026-11-20", "2026-11-20"), ("2026-11-21", "2026-11-21")]),
    ],
)  # fmt: skip
def test_periods_split_the_days_at_week_and_month_starts(
    interval: str, first: str, last: str, expected: list[tuple[str, str]]
) -> None:
    split = periods(date.fromisoformat(first), date.fromisoformat(last), interval)  # type: ignore[arg-type]
    assert [(start.isoformat(), end.isoformat()) for start, end in split] == expected


def test_hourly_intervals_are_refused_by_the_schema() -> None:
    with pytest.raises(ValidationError, match="'DAY', 'WEEK' or 'MONTH'"):
        plan(breakdown={"type": "INTERVAL", "interval": "HOUR"})
    assert plan(breakdown={"type": "INTERVAL", "interval": "WEEK"}).interval == "WEEK"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            {"dateIntervals": [{"start": "2026-11-19T00:00:00+05:30", "end": "2026-11-20T00:00"}]},
            "UTC offsets must be whole hours",
        ),
        ({"breakdown": {"type": "CUSTOM_DATUM", "index": 1}}, "does not match any of the expected"),
        ({"breakdown": {"type": "INTERVAL"}}, "interval"),
        ({"filters": [{"type": "NEW_VISITOR", "values": ["maybe"]}]}, "should match pattern"),
        ({"dateIntervals": BASE["dateIntervals"] * 2}, "at most 1 item"),
    ],
)
def test_unanswerable_requests_are_refused_by_the_schema(body: dict[str, Any], reason: str) -> None:
    """The request schema (the OpenAPI document's) refuses them: FastAPI answers 400."""
    with pytest.raises(ValidationError, match=reason):
        plan(**body)


def test_the_end_of_an_interval_is_read_in_the_offset_of_its_start() -> None:
    query = plan(
        dateIntervals=[{"start": "2026-11-19T00:00:00-05:00", "end": "2026-11-21T03:00:00Z"}]
    ).query
    assert (query.start_date, query.end_date, query.tz) == (
        date(2026, 11, 19),
        date(2026, 11, 20),
        -5,
    )


@pytest.mark.parametrize("body", [{"goalsIds": ["nope"]}, {"referenceVariationId": "z"}])
def test_unknown_goals_and_variations_are_404(body: dict[str, Any]) -> None:
    with pytest.raises(ApiError) as raised:
        plan(**body)
    assert raised.value.status_code == 404


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
