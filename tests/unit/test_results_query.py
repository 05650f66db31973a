"""The query model, Mida's filter_by presets and the planner."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from worker.events.experiment import ExperimentDefinition
from worker.results.planning import plan_query
from worker.results.presets import REGIONS, preset_filter
from worker.results.query import Condition, ResultQuery


def hour_of(moment: datetime) -> int:
    return int(moment.timestamp()) // 3600


def definition() -> ExperimentDefinition:
    return ExperimentDefinition.model_validate(
        {
            "id": "exp",
            "project_key": "shop",
            "name": "Exp",
            "variants": [
                {"id": "a", "name": "A", "is_control": True},
                {"id": "b", "name": "B"},
                {"id": "c", "name": "C"},
            ],
            "goals": [
                {"key": "signup", "name": "Signup"},
                {"key": "buy", "name": "Buy", "type": "revenue", "primary": True},
            ],
        }
    )


@pytest.mark.parametrize(
    ("tz", "first", "end"),
    [
        (0, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)),
        (5, datetime(2026, 2, 28, 19, tzinfo=UTC), datetime(2026, 3, 2, 19, tzinfo=UTC)),
        (-7, datetime(2026, 3, 1, 7, tzinfo=UTC), datetime(2026, 3, 3, 7, tzinfo=UTC)),
        (14, datetime(2026, 2, 28, 10, tzinfo=UTC), datetime(2026, 3, 2, 10, tzinfo=UTC)),
    ],
)
def test_dates_cover_whole_local_days(tz: int, first: datetime, end: datetime) -> None:
    query = ResultQuery(start_date=date(2026, 3, 1), end_date=date(2026, 3, 2), tz=tz)
    assert query.hour_range() == (hour_of(first), hour_of(end))


def test_either_date_alone_leaves_the_other_side_open() -> None:
    assert ResultQuery(start_date=date(2026, 3, 1)).hour_range()[1] is None
    assert ResultQuery(end_date=date(2026, 3, 1)).hour_range()[0] is None
    assert ResultQuery().hour_range() == (None, None)


@pytest.mark.parametrize(
    "payload",
    [
        {"start_date": "2026-03-02", "end_date": "2026-03-01"},
        {"tz": 15},
        {"min_count": 0},
        {"timeframe_days": 0},
        {"breakdown": "attribute"},
        {"segment": [[]]},
        {"segment": [[{"field": "device", "operator": "exists", "value": "x"}]]},
        {"segment": [[{"field": "device", "operator": "=="}]]},
        {"segment": [[{"field": "attribute", "operator": "==", "value": "x"}]]},
        {"segment": [[{"field": "device", "key": "k", "operator": "==", "value": "x"}]]},
        {"segment": [[{"field": "region", "operator": "days_gt", "value": 3}]]},
        {"segment": [[{"field": "device", "operator": "~", "value": "x"}]]},
        {"event_filter": [[{"key": "bad key", "operator": "==", "value": 1}]]},
        {"event_filter": [[{"key": "plan", "operator": "days_gt", "value": 1}]]},
        {"count_unit": "sessions"},
        {"filters": []},
    ],
)
def test_invalid_queries_are_rejected(payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ResultQuery.model_validate(payload)


def test_queries_are_hashable_and_user_type_is_visitor_type() -> None:
    query = ResultQuery.model_validate(
        {
            "breakdown": "user_type",
            "segment": [[{"field": "device", "operator": "==", "value": "x"}]],
        }
    )
    assert query.breakdown == "visitor_type"
    assert hash(query) == hash(ResultQuery.model_validate(query.model_dump()))


def test_goal_and_reference_default_to_the_definition() -> None:
    exp = definition()
    assert ResultQuery().goal_key(exp) == "buy"
    assert ResultQuery(goal="signup").goal_key(exp) == "signup"
    assert ResultQuery().variant_order(exp) == ["a", "b", "c"]
    assert ResultQuery(reference_variant="c").variant_order(exp) == ["c", "a", "b"]
    with pytest.raises(ValueError, match="no goal"):
        ResultQuery(goal="nope").goal_key(exp)
    with pytest.raises(ValueError, match="no variant"):
        ResultQuery(reference_variant="z").variant_order(exp)


def cond(field: str, value: str) -> Condition:
    return Condition.model_validate({"field": field, "operator": "==", "value": value})


def test_presets_of_different_dimensions_are_anded_and_countries_ored() -> None:
    assert preset_filter("desktop, country-US,country-ca,returning") == (
        (cond("device", "desktop"),),
        (cond("country", "US"), cond("country", "CA")),
        (cond("visitor_type", "returning"),),
    )
    assert preset_filter("mobile,tablet,paid") == (
        (cond("device", "mobile"), cond("device", "tablet")),
        (cond("source", "paid"),),
    )
    assert preset_filter("") == ()


def test_regional_presets_expand_to_countries_and_merge_with_single_countries() -> None:
    (group,) = preset_filter("europe,country-DE,northamerica")
    countries = [condition.value for condition in group]
    assert countries == list(dict.fromkeys(REGIONS["europe"] + ("DE",) + REGIONS["northamerica"]))
    for name in ("asiapacific", "latinamerica", "africa", "middleeast"):
        assert len(preset_filter(name)[0]) == len(REGIONS[name])


@pytest.mark.parametrize("value", ["moon", "country-USA", "country-", "country-1x"])
def test_unknown_presets_raise(value: str) -> None:
    with pytest.raises(ValueError, match="unknown filter_by preset"):
        preset_filter(value)


def test_planner() -> None:
    cells = ResultQuery.model_validate(
        {
            "segment": [[{"field": "device", "operator": "contains", "value": "mob"}]],
            "breakdown": "hour_of_day",
            "start_date": "2026-01-01",
            "count_unit": "visits",
        }
    )
    assert plan_query(cells).source == "counters"
    assert plan_query(ResultQuery(segment=preset_filter("europe,mobile,new"))).source == "counters"
    scan = ResultQuery.model_validate(
        {
            "segment": [
                [{"field": "region", "operator": "exists"}],
                [{"field": "attribute", "key": "k", "operator": "==", "value": 1}],
            ],
            "breakdown": "city",
            "min_count": 2,
            "timeframe_days": 3,
            "event_filter": [[{"key": "k", "operator": "exists"}]],
        }
    )
    plan = plan_query(scan)
    assert plan.source == "visitors"
    assert plan.reasons == (
        "filter on region",
        "filter on attribute",
        "breakdown by city",
        "min_count above 1",
        "timeframe_days",
        "event attribute filter",
    )
