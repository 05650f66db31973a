"""Mida's result parameters → the query model (worker/api/mida/params.py)."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from worker.api.errors import ApiError
from worker.api.mida.params import (
    MAX_CONDITIONS,
    ResultParams,
    metric_goal_keys,
    parse_custom_filter,
    parse_event_attribute,
    reject_structured_filters,
    result_query,
)
from worker.events.experiment import ExperimentDefinition
from worker.results.query import Condition, EventCondition

DEFINITION = ExperimentDefinition.model_validate(
    {
        "id": "exp-a",
        "project_key": "shop",
        "name": "A",
        "status": "live",
        "variants": [
            {"id": "0", "name": "Control", "is_control": True},
            {"id": "1", "name": "Red"},
        ],
        "goals": [
            {"key": "purchase", "name": "Purchase", "type": "revenue", "primary": True},
            {"key": "signup", "name": "Signup"},
            {"key": "click", "name": "Click", "type": "count"},
        ],
    }
)


def query(**params: Any) -> Any:
    return result_query(ResultParams(**params), DEFINITION)


def error_of(**params: Any) -> str:
    with pytest.raises(ApiError) as caught:
        query(**params)
    assert caught.value.status_code == 400
    return caught.value.message


def condition(field: str, operator: str, value: Any = None, key: str | None = None) -> Condition:
    return Condition(field=field, operator=operator, value=value, key=key)  # type: ignore[arg-type]


def test_no_parameters_is_the_default_query() -> None:
    parsed = query()
    assert parsed.segment == () and parsed.event_filter == () and parsed.goal is None
    assert (parsed.start_date, parsed.end_date, parsed.tz, parsed.min_count) == (None, None, 0, 1)


def test_dates_tz_goal_and_counting_options() -> None:
    parsed = query(
        start_date="2024-01-15",
        end_date="2024-02-15",
        tz="-5",
        goal_key="signup",
        min_count=2,
        timeframe_days=7,
    )
    assert parsed.start_date == date(2024, 1, 15) and parsed.end_date == date(2024, 2, 15)
    assert (parsed.tz, parsed.goal, parsed.min_count, parsed.timeframe_days) == (
        -5,
        "signup",
        2,
        7,
    )
    assert query(start_date="2024-01-15").end_date is None  # either date alone
    assert query(goal_profile_id="click").goal == "click"
    assert query(tz="+3.0").tz == 3


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"start_date": "2024-1-5"}, "start_date must be a date"),
        ({"end_date": "2024-02-30"}, "end_date must be a date"),
        ({"start_date": "15/01/2024"}, "start_date must be a date"),
        ({"start_date": "2024-03-01", "end_date": "2024-02-01"}, "is after end_date"),
        ({"tz": "5.5"}, "tz must be a whole number of hours"),
        ({"tz": "15"}, "tz must be a whole number"),
        ({"tz": "utc"}, "tz must be a whole number"),
        ({"goal_key": "nope"}, "has no goal 'nope'"),
        ({"goal_key": "signup", "goal_profile_id": "click"}, "name different goals"),
        ({"breakdown_by": "planet"}, "breakdown_by must be one of"),
        ({"breakdown_by": "visitor_type"}, "breakdown_by must be one of"),
        ({"filter_by": "mobile,mars"}, "unknown filter_by preset 'mars'"),
    ],
)
def test_invalid_parameters_are_400_with_a_sentence(params: dict[str, Any], fragment: str) -> None:
    message = error_of(**params)
    assert fragment in message
    assert message.endswith(".") and "\n" not in message


def test_structured_filters_parameter_is_rejected() -> None:
    reject_structured_filters({"goal_key": "signup"})
    with pytest.raises(ApiError, match="use filter_by or custom_filter"):
        reject_structured_filters({"filters": '{"device": "mobile"}'})


def test_breakdowns_map_user_type_to_the_visitor_type_dimension() -> None:
    assert query(breakdown_by="user_type").breakdown == "visitor_type"
    assert query(breakdown_by="utm_campaign").breakdown == "utm_campaign"


def test_mida_example_desktop_and_us_or_ca_and_chrome() -> None:
    chrome = json.dumps([[{"criteria": "browser", "operator": "==", "value": "Chrome"}]])
    parsed = query(filter_by="desktop,country-US,country-CA", custom_filter=chrome)
    assert parsed.segment == (
        (condition("device", "==", "desktop"),),
        (condition("country", "==", "US"), condition("country", "==", "CA")),
        (condition("browser", "==", "Chrome"),),
    )


def test_custom_filter_groups_operators_and_keys() -> None:
    rules = [
        [
            {"criteria": "landing_page", "operator": "**", "value": "/pricing"},
            {"criteria": "ref_page", "operator": "!*", "value": "google"},
        ],
        {"criteria": "queryparam", "key": "gclid", "operator": "ex"},
        {"criteria": "utm", "key": "utm_campaign", "operator": "==", "value": "spring"},
        {"criteria": "dayofweek", "operator": ">=", "value": 5},
        {"criteria": "attribute", "key": "plan", "operator": "bt", "value": ""},
        {"criteria": "attribute", "key": "signup_date", "operator": "days_lt", "value": 30},
        {"criteria": "attribute", "key": "orders", "operator": "gte", "value": 3},
        {"criteria": "v.uuid", "operator": "nx", "value": ""},
    ]
    assert parse_custom_filter(json.dumps(rules)) == (
        (condition("landing_page", "contains", "/pricing"), condition("ref_page", "not_contains", "google")),
        (condition("query_param", "exists", key="gclid"),),
        (condition("utm_campaign", "==", "spring"),),
        (condition("day_of_week", ">=", 5),),
        (condition("attribute", "==", True, key="plan"),),
        (condition("attribute", "days_lt", 30, key="signup_date"),),
        (condition("attribute", ">=", 3, key="orders"),),
        (condition("visitor_id", "not_exists"),),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("rules", "fragment"),
    [
        ("[[{", "custom_filter must be valid JSON"),
        ("[" * 5000 + "]" * 5000, "custom_filter must be valid JSON"),
        ('"device"', "must be a JSON array"),
        ("[[]]", "group 1 is empty"),
        ('[{"criteria": "planet", "operator": "==", "value": "x"}]', "unknown criteria 'planet'"),
        ('[{"criteria": "device", "operator": ">", "value": "x"}]', "does not apply to device"),
        ('[{"criteria": "device", "operator": "gt", "value": "x"}]', "does not apply to device"),
        ('[{"criteria": "device", "value": "x"}]', "needs an operator"),
        ('[{"criteria": "device", "operator": "=="}]', "needs a value"),
        (
            '[{"criteria": "device", "operator": "==", "value": [1]}]',
            "rule 1: value must be a string",
        ),
        ('[{"criteria": "queryparam", "operator": "==", "value": "x"}]', "a key is needed"),
        (
            '[{"criteria": "utm", "key": "utm_foo", "operator": "==", "value": "x"}]',
            "utm needs a key",
        ),
        ('[{"criteria": "device", "operator": "==", "value": "' + "x" * 501 + '"}]', "at most 500"),
        ("[1]", "must be an object"),
    ],
)
def test_malformed_custom_filters_are_400(rules: str, fragment: str) -> None:
    assert fragment in error_of(custom_filter=rules)


def test_custom_filter_size_is_bounded() -> None:
    rule = {"criteria": "device", "operator": "==", "value": "mobile"}
    message = error_of(custom_filter=json.dumps([rule] * (MAX_CONDITIONS + 1)))
    assert f"at most {MAX_CONDITIONS}" in message
    assert "longer than" in error_of(custom_filter="[" + " " * 40_000 + "]")


def test_mida_example_revenue_over_100_and_currency_usd() -> None:
    flat = [
        {"key": "revenue", "operand": ">", "value": 100},
        {"key": "currency", "operand": "=", "value": "USD"},
    ]
    expected = (
        (
            EventCondition(key="revenue", operator=">", value=100),
            EventCondition(key="currency", operator="==", value="USD"),
        ),
    )
    assert parse_event_attribute(json.dumps(flat)) == expected  # a flat list is one AND group
    assert parse_event_attribute(json.dumps([flat])) == expected


def test_event_attribute_groups_are_or_of_and() -> None:
    rules = [
        [{"key": "plan", "operator": "**", "value": "pro"}],
        [{"key": "coupon", "operand": "nx"}, {"key": "items.count", "operand": ">=", "value": 2}],
    ]
    assert parse_event_attribute(json.dumps(rules)) == (
        (EventCondition(key="plan", operator="contains", value="pro"),),
        (
            EventCondition(key="coupon", operator="not_exists"),
            EventCondition(key="items.count", operator=">=", value=2),
        ),
    )


@pytest.mark.parametrize(
    ("rules", "fragment"),
    [
        ('[{"key": "has space", "operand": "=", "value": 1}]', "condition 1: key must be 1-80"),
        ('[{"key": "' + "k" * 81 + '", "operand": "=", "value": 1}]', "key must be 1-80"),
        ('[{"key": "plan", "operand": "=", "value": "' + "v" * 501 + '"}]', "at most 500"),
        ('[{"key": "plan", "operand": "~", "value": 1}]', "unknown operand '~'"),
        ('[{"key": "plan", "operand": "="}]', "needs a value"),
        ('[[{"key": "plan", "operand": "=", "value": 1}], {"key": "x"}]', "group 2 must be"),
        ("{", "event_attribute must be valid JSON"),
    ],
)
def test_malformed_event_attributes_are_400(rules: str, fragment: str) -> None:
    assert fragment in error_of(event_attribute=rules)


def test_metric_keys_select_goals_or_default_to_the_secondary_ones() -> None:
    assert metric_goal_keys(DEFINITION, None, None) == ["signup", "click"]
    assert metric_goal_keys(DEFINITION, "click, purchase", None) == ["click", "purchase"]
    assert metric_goal_keys(DEFINITION, None, '["signup"]') == ["signup"]
    with pytest.raises(ApiError, match="no goal 'nope'"):
        metric_goal_keys(DEFINITION, "signup,nope", None)
    with pytest.raises(ApiError, match="JSON array of goal keys"):
        metric_goal_keys(DEFINITION, "[1, 2]", None)
