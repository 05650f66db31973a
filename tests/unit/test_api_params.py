"""Mida's result parameters → the query model (worker/api/mida/params.py)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import pytest

from worker.api.errors import ApiError
from worker.api.mida.params import (
    MAX_CONDITIONS,
    ResultParams,
    metric_goal_keys,
    parse_custom_filter,
    parse_event_attribute,
    reject_repeated,
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


def test_an_unknown_goal_is_404() -> None:
    with pytest.raises(ApiError) as caught:
        query(goal_key="nope")
    assert caught.value.status_code == 404
    assert (
        caught.value.message
        == "The experiment has no goal 'nope' (it has: purchase, signup, click)."
    )


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
    # start_date alone runs through today (see below); end_date alone is open at the start
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
    with pytest.raises(ApiError, match="no goal 'nope'") as unknown:
        metric_goal_keys(DEFINITION, "signup,nope", None)
    assert unknown.value.status_code == 404
    with pytest.raises(ApiError, match="JSON array of goal keys"):
        metric_goal_keys(DEFINITION, "[1, 2]", None)


# --- issue 18: the remaining Mida gaps ------------------------------------------------


def test_only_start_date_runs_through_the_current_date_in_the_query_timezone() -> None:
    late_evening = datetime(2026, 12, 7, 22, 30, tzinfo=UTC)
    parsed = result_query(ResultParams(start_date="2026-11-01"), DEFINITION, late_evening)
    assert (parsed.start_date, parsed.end_date) == (date(2026, 11, 1), date(2026, 12, 7))
    # Two hours east of UTC it is already the 8th.
    east = result_query(ResultParams(start_date="2026-11-01", tz="2"), DEFINITION, late_evening)
    assert east.end_date == date(2026, 12, 8)
    # Only end_date: open at the start, as before.
    assert query(end_date="2026-11-30").start_date is None


def test_a_start_date_after_today_without_end_date_is_400() -> None:
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    with pytest.raises(ApiError) as caught:
        result_query(ResultParams(start_date="2026-12-08"), DEFINITION, now)
    assert caught.value.status_code == 400
    assert "after today (2026-12-07" in caught.value.message


@pytest.mark.parametrize(
    "name", ["filters", "filters[device]", "filters[country][]", "filters.device", "x[0]"]
)
def test_every_spelling_of_structured_filters_is_400(name: str) -> None:
    with pytest.raises(ApiError) as caught:
        reject_structured_filters(["goal_key", name])
    assert caught.value.status_code == 400
    assert caught.value.message == (
        f"Structured filters ({name!r}) are not supported: use filter_by or custom_filter."
    )


def test_single_valued_parameters_given_twice_are_400() -> None:
    reject_repeated(["custom_filter", "custom_filter", "goal_key"])
    for name in ("start_date", "goal_key", "event_attribute", "min_count", "breakdown_by"):
        with pytest.raises(ApiError, match=f"^{name} is given more than once; give it once.$"):
            reject_repeated(["tz", name, name])


def test_repeated_custom_filters_are_anded() -> None:
    mobile = json.dumps([[{"criteria": "device", "operator": "==", "value": "mobile"}]])
    us_or_ca = json.dumps(
        [
            [
                {"criteria": "country", "operator": "==", "value": "US"},
                {"criteria": "country", "operator": "==", "value": "CA"},
            ]
        ]
    )
    parsed = query(custom_filter=[mobile, us_or_ca], filter_by="new")
    assert parsed.segment == (
        (condition("visitor_type", "==", "new"),),
        (condition("device", "==", "mobile"),),
        (condition("country", "==", "US"), condition("country", "==", "CA")),
    )
    assert query(custom_filter=[mobile]).segment == query(custom_filter=mobile).segment


def rule(criteria: str, operator: str, value: Any) -> str:
    return json.dumps([{"criteria": criteria, "operator": operator, "value": value}])


@pytest.mark.parametrize(
    ("criteria", "operator", "value", "fragment"),
    [
        (
            "country",
            "==",
            "USA",
            "country must be an ISO 3166-1 alpha-2 code (two letters), got 'USA'",
        ),
        ("country", "!=", "U1", "country must be an ISO 3166-1 alpha-2 code"),
        ("country", "==", 12, "country must be an ISO 3166-1 alpha-2 code"),
        (
            "v.visitor_id",
            "==",
            "has space",
            "v.visitor_id must be 1-80 letters, digits, '_' or '-'",
        ),
        ("v.uuid", "**", "a/b", "v.uuid must be 1-80 letters, digits, '_' or '-'"),
        ("v.visitor_id", "==", "x" * 81, "(the pattern of visitor ids)"),
        ("country", "ex", "", "operator 'ex' does not apply to country (use one of ==, !=)"),
        ("country", "**", "U", "operator '**' does not apply to country"),
        ("device", "nx", "", "operator 'nx' does not apply to device (use one of ==, !=, **, !*)"),
        ("hourofday", "**", "1", "operator '**' does not apply to hourofday"),
        ("user_type", "!*", "new", "operator '!*' does not apply to user_type"),
        ("hourofday", ">", "noon", "hourofday must be compared with a number, got 'noon'"),
        ("dayofweek", "<=", True, "dayofweek must be compared with a number, got 'True'"),
        ("hourofday", ">=", "nan", "hourofday must be compared with a number"),
        ("hourofday", "==", "noon", "hourofday has no value 'noon'"),
    ],
)
def test_values_and_operators_outside_a_criterions_documented_form_are_400(
    criteria: str, operator: str, value: Any, fragment: str
) -> None:
    message = error_of(custom_filter=rule(criteria, operator, value))
    assert fragment in message
    assert message.startswith("custom_filter group 1, rule 1: ") and message.endswith(".")


@pytest.mark.parametrize(
    ("criteria", "operator", "value", "field"),
    [
        ("country", "==", "us", "country"),
        ("v.visitor_id", "==", "vis-61_0", "visitor_id"),
        ("v.uuid", "**", "61", "visitor_id"),
        ("v.visitor_id", "==", 12345, "visitor_id"),
        ("hourofday", ">", "7", "hour_of_day"),
        ("dayofweek", "<", 2.0, "day_of_week"),
        ("landing_page", "ex", "", "landing_page"),
    ],
)
def test_values_in_a_criterions_documented_form_pass(
    criteria: str, operator: str, value: Any, field: str
) -> None:
    ((parsed,),) = query(custom_filter=rule(criteria, operator, value)).segment
    assert parsed.field == field
