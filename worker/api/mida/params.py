"""Mida's result parameters, validated and translated into the query model (pure).

Every problem is a 400 with one sentence naming the parameter. The translation is
the only place that knows Mida's spellings (``**`` for contains, ``queryparam``,
``user_type``, ``=`` in event attributes...); the query model knows none of them.

JSON parameters: ``custom_filter`` is an AND of OR groups and ``event_attribute`` an
OR of AND groups, as Mida documents. In both, a flat list of conditions means all of
them (AND) and a single object is a list of one. ``custom_filter`` may be repeated (its
array form): the parts are ANDed. Each criterion takes the operators of its kind only
(:data:`CRITERIA_OPERATORS`), and values that cannot name anything are refused: a
country that is no two-letter code, a visitor id outside the visitor-id pattern, a
day or hour that is no number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Query
from pydantic import BaseModel, ValidationError

from worker.api.errors import ApiError, bad_request
from worker.api.openapi_patterns import alternatives, case_insensitive_word, comma_list
from worker.events.experiment import ExperimentDefinition
from worker.results.presets import COUNTRY_PREFIX, PRESETS, REGIONS, preset_filter
from worker.results.query import (
    FIXED_VALUES,
    AndGroup,
    Condition,
    Dimension,
    EventCondition,
    EventFilter,
    OrGroup,
    ResultQuery,
    SegmentFilter,
    fixed_value,
)

MAX_JSON_CHARS = 32_000
MAX_CONDITIONS = 100
MAX_VALUE_CHARS = 500
TZ_RANGE = (-12, 14)

BREAKDOWNS: dict[str, Dimension] = {
    "device": "device", "browser": "browser", "os": "os", "country": "country",
    "region": "region", "city": "city", "user_type": "visitor_type",
    "ref_page": "ref_page", "landing_page": "landing_page",
    "utm_campaign": "utm_campaign", "utm_source": "utm_source", "utm_medium": "utm_medium",
    "utm_content": "utm_content", "utm_term": "utm_term",
}  # fmt: skip
"""Mida's ``breakdown_by`` values → query dimensions; anything else is a 400."""

CRITERIA = {
    "landing_page": "landing_page", "ref_page": "ref_page", "user_agent": "user_agent",
    "queryparam": "query_param", "source": "source", "device": "device",
    "browser": "browser", "os": "os", "dayofweek": "day_of_week",
    "hourofday": "hour_of_day", "visitor_type": "visitor_type", "user_type": "visitor_type",
    "country": "country", "v.visitor_id": "visitor_id", "v.uuid": "visitor_id",
    "attribute": "attribute",
}  # fmt: skip
"""``custom_filter`` criteria → query fields (``utm`` is handled apart: its key names one)."""

UTM_KEYS = ("campaign", "source", "medium", "content", "term")
_KEYED = {"queryparam", "attribute", "utm"}
_TIME_CRITERIA = {"dayofweek", "hourofday"}

SEGMENT_OPERATORS = {
    "==": "==", "!=": "!=", "**": "contains", "!*": "not_contains",
    "ex": "exists", "nx": "not_exists",
}  # fmt: skip
ORDER_OPERATORS = {">": ">", ">=": ">=", "<": "<", "<=": "<="}
ATTRIBUTE_OPERATORS = {
    "gt": ">", "gte": ">=", "lt": "<", "lte": "<=",
    "days_gt": "days_gt", "days_gte": "days_gte", "days_lt": "days_lt", "days_lte": "days_lte",
}  # fmt: skip
BOOLEAN_OPERATORS = {"bt": True, "bf": False}
"""Attribute is true / is false: an equality with a fixed value."""

OPERATORS = {
    **SEGMENT_OPERATORS, **ORDER_OPERATORS, **ATTRIBUTE_OPERATORS,
    **dict.fromkeys(BOOLEAN_OPERATORS, "=="),
}  # fmt: skip
"""Every ``custom_filter`` operator → the query operator."""

_TEXT = tuple(SEGMENT_OPERATORS)
_LISTED = ("==", "!=", "**", "!*")
_CODES = ("==", "!=")
_TIME = ("==", "!=", *ORDER_OPERATORS)
CRITERIA_OPERATORS: dict[str, tuple[str, ...]] = {
    "landing_page": _TEXT, "ref_page": _TEXT, "user_agent": _TEXT, "queryparam": _TEXT,
    "utm": _TEXT, "v.visitor_id": _TEXT, "v.uuid": _TEXT,
    "source": _LISTED, "device": _LISTED, "browser": _LISTED, "os": _LISTED,
    "visitor_type": _CODES, "user_type": _CODES, "country": _CODES,
    "dayofweek": _TIME, "hourofday": _TIME,
    "attribute": (*_TEXT, *ORDER_OPERATORS, *ATTRIBUTE_OPERATORS, *BOOLEAN_OPERATORS),
}  # fmt: skip
"""The operators each criterion takes, as the dashboard's segment builder offers them:
presence (``ex``/``nx``) only where a value may be missing, no ``**`` on a two-letter
code or a visitor type, comparisons only on numbers (time criteria, attributes)."""

EVENT_OPERATORS = {
    "=": "==", "==": "==", "!=": "!=", ">": ">", "<": "<", ">=": ">=", "<=": "<=",
    "**": "contains", "!*": "not_contains", "ex": "exists", "nx": "not_exists",
}  # fmt: skip

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.ASCII)
_TZ = re.compile(r"^[+-]?\d{1,2}(\.0+)?$", re.ASCII)
_EVENT_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,80}$", re.ASCII)
_COUNTRY = re.compile(r"^[A-Za-z]{2}$", re.ASCII)
_VISITOR_ID = re.compile(r"^[A-Za-z0-9_\-]{1,80}$", re.ASCII)  # worker.events.fields.VisitorId
_PRESENCE = ("exists", "not_exists")
_EQUALITY = ("==", "!=")
_VISITOR_CRITERIA = ("v.visitor_id", "v.uuid")

Model = TypeVar("Model", bound=BaseModel)

JSON_TEXT: dict[str, Any] = {"contentMediaType": "application/json"}
"""The JSON-in-text parameters say so in the OpenAPI document (their grammar is in the
description and enforced by the parsers below)."""

# What the parsers below accept, stated in the OpenAPI document (an absent parameter
# and an empty one are alike everywhere).
DATE_TEXT: dict[str, Any] = {
    "anyOf": [{"type": "string", "format": "date"}, {"type": "string", "maxLength": 0}]
}
TZ_TEXT: dict[str, Any] = {
    "type": "string",
    "pattern": r"^(?:(?:-(?:0?[0-9]|1[0-2])|\+?(?:0?[0-9]|1[0-4]))(?:\.0+)?)?$",
}
BREAKDOWN_TEXT: dict[str, Any] = {"type": "string", "enum": [*BREAKDOWNS, ""]}
PRESETS_TEXT: dict[str, Any] = {
    "type": "string",
    "pattern": comma_list(
        alternatives(
            [case_insensitive_word(name) for name in (*PRESETS, *REGIONS)]
            + [case_insensitive_word(COUNTRY_PREFIX) + "[A-Za-z]{2}"]
        )
    ),
}


@dataclass
class SeriesParams:
    """The query parameters Mida's result, metrics and timeseries endpoints share."""

    start_date: Annotated[
        str | None,
        Query(description="First entry date, YYYY-MM-DD (inclusive).", json_schema_extra=DATE_TEXT),
    ] = None
    end_date: Annotated[
        str | None,
        Query(description="Last entry date, YYYY-MM-DD (inclusive).", json_schema_extra=DATE_TEXT),
    ] = None
    tz: Annotated[
        str | None,
        Query(
            description="Timezone as whole hours east of UTC (-12..14); default 0.",
            json_schema_extra=TZ_TEXT,
        ),
    ] = None
    goal_key: Annotated[str | None, Query(description="Goal key; default: the primary goal.")] = (
        None
    )
    goal_profile_id: Annotated[
        str | None, Query(description="Goal id; here the same as the goal key.")
    ] = None
    filter_by: Annotated[
        str | None,
        Query(
            description="Presets, comma-separated: mobile, new, paid, country-US, europe...",
            json_schema_extra=PRESETS_TEXT,
        ),
    ] = None
    custom_filter: Annotated[
        str | list[str] | None,
        Query(
            description=(
                "JSON: AND of OR groups of {criteria, operator, value[, key]}; "
                "repeated, the parts are ANDed."
            ),
            json_schema_extra=JSON_TEXT,
        ),
    ] = None
    event_attribute: Annotated[
        str | None,
        Query(
            description="JSON: OR of AND groups of {key, operand, value}.",
            json_schema_extra=JSON_TEXT,
        ),
    ] = None
    min_count: Annotated[
        int | None, Query(ge=1, le=1_000_000, description="Goal events needed per visitor.")
    ] = None
    timeframe_days: Annotated[
        int | None, Query(ge=1, le=3650, description="Conversion window after entry, in days.")
    ] = None


@dataclass
class ResultParams(SeriesParams):
    """The parameters of Mida's result: those of every endpoint and the breakdown."""

    breakdown_by: Annotated[
        str | None,
        Query(
            description="One of: " + ", ".join(BREAKDOWNS) + ".",
            json_schema_extra=BREAKDOWN_TEXT,
        ),
    ] = None


def reject_structured_filters(names: Iterable[str]) -> None:
    """Mida rejects its former structured ``filters`` parameter, in every spelling
    (``filters``, ``filters[device]``, ``filters.device``, any bracketed key); so do we."""
    for name in names:
        if name == "filters" or name.startswith("filters.") or "[" in name:
            raise bad_request(
                f"Structured filters ({_quote(name)}) are not supported: "
                "use filter_by or custom_filter."
            )


SINGLE_VALUED = tuple(field.name for field in fields(ResultParams) if field.name != "custom_filter")
"""The result parameters that take one value (``custom_filter`` may be repeated)."""


def reject_repeated(names: Sequence[str], single_valued: Iterable[str] = SINGLE_VALUED) -> None:
    """400 when a single-valued parameter is given more than once: which one would be
    meant is a guess, and a silent guess is a different answer."""
    for name in single_valued:
        if names.count(name) > 1:
            raise bad_request(f"{name} is given more than once; give it once.")


def result_query(
    params: SeriesParams, definition: ExperimentDefinition, now: datetime | None = None
) -> ResultQuery:
    """The validated query of the parameters for this experiment.

    Only ``start_date`` given: the range ends at the current date (``now``, default the
    server's clock, in the query's timezone), as Mida documents.
    """
    tz = parse_tz(params.tz)
    start = parse_date("start_date", params.start_date)
    end = parse_date("end_date", params.end_date)
    if start and end and start > end:
        raise bad_request(f"start_date {start} is after end_date {end}.")
    if start and end is None:
        end = ((now or datetime.now(UTC)) + timedelta(hours=tz)).date()
        if start > end:
            raise bad_request(
                f"start_date {start} is after today ({end}, tz {tz}), where a range "
                "without end_date ends."
            )
    parts = (
        [params.custom_filter] if isinstance(params.custom_filter, str) else params.custom_filter
    )
    segment = _presets(params.filter_by) + tuple(
        group for part in parts or () for group in parse_custom_filter(part)
    )
    query_fields: dict[str, Any] = {
        "start_date": start,
        "end_date": end,
        "tz": tz,
        "goal": resolve_goal(definition, params.goal_key, params.goal_profile_id),
        "segment": segment,
        "breakdown": (
            parse_breakdown(params.breakdown_by) if isinstance(params, ResultParams) else None
        ),
        "event_filter": parse_event_attribute(params.event_attribute),
        "min_count": params.min_count or 1,
        "timeframe_days": params.timeframe_days,
    }
    return _validated(ResultQuery, query_fields, "The query")


def parse_date(name: str, raw: str | None) -> date | None:
    """A YYYY-MM-DD date, or None when absent."""
    if raw is None or raw == "":
        return None
    try:
        if _DATE.fullmatch(raw):
            return date.fromisoformat(raw)
    except ValueError:
        pass
    raise bad_request(f"{name} must be a date written YYYY-MM-DD, got {_quote(raw)}.")


def parse_tz(raw: str | None) -> int:
    """Mida's ``tz``: an hour offset; only whole hours, as counters are hourly."""
    if raw is None or raw == "":
        return 0
    low, high = TZ_RANGE
    if _TZ.fullmatch(raw) and low <= (hours := int(float(raw))) <= high:
        return hours
    raise bad_request(
        f"tz must be a whole number of hours between {low} and {high}, got {_quote(raw)}."
    )


def resolve_goal(
    definition: ExperimentDefinition, goal_key: str | None, goal_profile_id: str | None
) -> str | None:
    """The goal asked for (None: the primary goal); goals here are known by key only. A
    goal the experiment lacks is a 404: a well-formed name of nothing, as an unknown
    experiment id is."""
    if goal_key and goal_profile_id and goal_key != goal_profile_id:
        raise bad_request("goal_key and goal_profile_id name different goals; give one of them.")
    wanted = goal_key or goal_profile_id
    if not wanted:
        return None
    if all(goal.key != wanted for goal in definition.goals):
        known = ", ".join(goal.key for goal in definition.goals)
        raise ApiError(404, f"The experiment has no goal {_quote(wanted)} (it has: {known}).")
    return wanted


def parse_breakdown(raw: str | None) -> Dimension | None:
    """A supported ``breakdown_by`` dimension, or None when absent."""
    if raw is None or raw == "":
        return None
    if raw not in BREAKDOWNS:
        raise bad_request(
            f"breakdown_by must be one of {', '.join(BREAKDOWNS)}; got {_quote(raw)}."
        )
    return BREAKDOWNS[raw]


def parse_custom_filter(raw: str | None) -> SegmentFilter:
    """``custom_filter`` JSON → AND of OR groups of segment conditions."""
    if raw is None or raw == "":
        return ()
    payload = _listed(_json("custom_filter", raw), "custom_filter")
    groups: list[OrGroup] = []
    for number, item in enumerate(payload, start=1):
        rules = item if isinstance(item, list) else [item]
        if not rules:
            raise bad_request(f"custom_filter group {number} is empty.")
        where = f"custom_filter group {number}"
        groups.append(
            tuple(_segment_condition(rule, f"{where}, rule {i}") for i, rule in enumerate(rules, 1))
        )
    _check_size("custom_filter", sum(len(group) for group in groups))
    return tuple(groups)


def parse_event_attribute(raw: str | None) -> EventFilter:
    """``event_attribute`` JSON → OR of AND groups of event conditions."""
    if raw is None or raw == "":
        return ()
    payload = _listed(_json("event_attribute", raw), "event_attribute")
    if payload and all(isinstance(item, dict) for item in payload):
        payload = [payload]  # a flat list of conditions is one AND group
    groups: list[AndGroup] = []
    for number, item in enumerate(payload, start=1):
        if not isinstance(item, list) or not item:
            raise bad_request(
                f"event_attribute group {number} must be a non-empty list of conditions."
            )
        where = f"event_attribute group {number}"
        groups.append(
            tuple(
                _event_condition(rule, f"{where}, condition {i}") for i, rule in enumerate(item, 1)
            )
        )
    _check_size("event_attribute", sum(len(group) for group in groups))
    return tuple(groups)


def metric_goal_keys(
    definition: ExperimentDefinition, metric_keys: str | None, goal_keys: str | None
) -> list[str]:
    """The goals of ``/metrics``: those named (comma list or JSON array), else the
    secondary goals; an unknown key is a 404 (:func:`resolve_goal`)."""
    raw = metric_keys or goal_keys
    if not raw:
        return [goal.key for goal in definition.goals if not goal.primary]
    if raw.lstrip().startswith("["):
        named = _json("metric_keys", raw)
        if not isinstance(named, list) or not all(isinstance(key, str) for key in named):
            raise bad_request("metric_keys must be a JSON array of goal keys or a comma list.")
        keys = [key.strip() for key in named]
    else:
        keys = [key.strip() for key in raw.split(",")]
    selected = list(dict.fromkeys(key for key in keys if key))
    for key in selected:
        resolve_goal(definition, key, None)
    return selected


def _presets(filter_by: str | None) -> SegmentFilter:
    try:
        return preset_filter(filter_by or "")
    except ValueError as error:
        raise bad_request(f"filter_by: {error}.") from error


def _segment_condition(rule: object, where: str) -> Condition:
    if not isinstance(rule, dict):
        raise bad_request(f"{where} must be an object with criteria, operator and value.")
    criteria = _text_field(rule, ("criteria", "type"), where, "a criteria").lower()
    operator = _text_field(rule, ("operator", "operand"), where, "an operator").lower()
    if criteria not in CRITERIA and criteria != "utm":
        raise bad_request(f"{where}: unknown criteria {_quote(criteria)}.")
    fields: dict[str, Any] = {"value": _value(rule, where)}
    if criteria == "utm":
        utm = str(rule.get("key") or "").lower().removeprefix("utm_")
        if utm not in UTM_KEYS:
            raise bad_request(f"{where}: utm needs a key, one of {', '.join(UTM_KEYS)}.")
        fields["field"] = f"utm_{utm}"
    else:
        fields["field"] = CRITERIA[criteria]
        if criteria in _KEYED:
            fields["key"] = rule.get("key")
    fields["operator"] = _segment_operator(criteria, operator, where)
    if operator in BOOLEAN_OPERATORS:
        fields["value"] = BOOLEAN_OPERATORS[operator]
    if fields["operator"] in _PRESENCE:
        fields["value"] = None  # the dashboard may send an empty value with ex / nx
    elif fields["value"] is not None:
        _check_value_form(criteria, fields["operator"], fields["value"], where)
    if fields["operator"] in _EQUALITY and fields["field"] in FIXED_VALUES:
        fields["value"] = _listed_value(criteria, fields["field"], fields["value"], where)
    return _validated(Condition, fields, where)


def _check_value_form(criteria: str, operator: str, value: object, where: str) -> None:
    """400 for a value that cannot name anything of the criterion: a country that is no
    ISO 3166-1 alpha-2 code (two letters, as events carry it), a visitor id (or part of
    one, for ``**``) outside the visitor-id pattern, a compared day or hour that is no
    number (equalities are checked against the criterion's list instead)."""
    text = str(value)
    if criteria == "country" and not (isinstance(value, str) and _COUNTRY.fullmatch(text)):
        raise bad_request(
            f"{where}: country must be an ISO 3166-1 alpha-2 code (two letters), "
            f"got {_quote(text)}."
        )
    if criteria in _VISITOR_CRITERIA and (
        isinstance(value, bool) or not _VISITOR_ID.fullmatch(text)
    ):
        raise bad_request(
            f"{where}: {criteria} must be 1-80 letters, digits, '_' or '-' "
            f"(the pattern of visitor ids), got {_quote(text)}."
        )
    compared = criteria in _TIME_CRITERIA and operator in ORDER_OPERATORS.values()
    if compared and (isinstance(value, bool) or not _is_number(value)):
        raise bad_request(
            f"{where}: {criteria} must be compared with a number, got {_quote(text)}."
        )


def _is_number(value: object) -> bool:
    """A finite number, or text that writes one."""
    try:
        return math.isfinite(float(str(value)))
    except ValueError:
        return False


def _listed_value(criteria: str, field: str, value: object, where: str) -> object:
    """An equality's value on a criterion with a fixed list: one of the list (any case),
    else a 400 naming the list, never a silently empty result."""
    if value is None:
        return value  # the query model reports the missing value
    listed = fixed_value(field, value)
    if listed is None:
        raise bad_request(
            f"{where}: {criteria} has no value {_quote(str(value))} "
            f"(use one of {', '.join(FIXED_VALUES[field])})."
        )
    return value if str(value).casefold() == listed else listed


def _segment_operator(criteria: str, operator: str, where: str) -> str:
    allowed = CRITERIA_OPERATORS[criteria]
    if operator not in allowed:
        raise bad_request(
            f"{where}: operator {_quote(operator)} does not apply to {criteria} "
            f"(use one of {', '.join(allowed)})."
        )
    return OPERATORS[operator]


def _event_condition(rule: object, where: str) -> EventCondition:
    if not isinstance(rule, dict):
        raise bad_request(f"{where} must be an object with key, operand and value.")
    operand = _text_field(rule, ("operand", "operator"), where, "an operand")
    if operand not in EVENT_OPERATORS:
        raise bad_request(
            f"{where}: unknown operand {_quote(operand)} (use one of {', '.join(EVENT_OPERATORS)})."
        )
    key = rule.get("key")
    if not isinstance(key, str) or not _EVENT_KEY.fullmatch(key):
        raise bad_request(f"{where}: key must be 1-80 letters, digits, '_', '.' or '-'.")
    operator = EVENT_OPERATORS[operand]
    value = None if operator in _PRESENCE else _value(rule, where)
    return _validated(EventCondition, {"key": key, "operator": operator, "value": value}, where)


def _text_field(rule: Mapping[str, Any], names: tuple[str, ...], where: str, label: str) -> str:
    value = next((rule[name] for name in names if name in rule), None)
    if not isinstance(value, str) or not value:
        raise bad_request(f"{where} needs {label}.")
    return value


def _value(rule: Mapping[str, Any], where: str) -> str | int | float | bool | None:
    """The rule's value if it is a string (up to 500 characters), number or boolean."""
    value = rule.get("value")
    if value is not None and not isinstance(value, str | int | float | bool):
        raise bad_request(f"{where}: value must be a string, a number or a boolean.")
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        raise bad_request(f"{where}: value must be at most {MAX_VALUE_CHARS} characters.")
    return value


def _json(name: str, raw: str) -> Any:
    if len(raw) > MAX_JSON_CHARS:
        raise bad_request(f"{name} is longer than {MAX_JSON_CHARS} characters.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise bad_request(f"{name} must be valid JSON ({error}).") from error


def _listed(payload: Any, name: str) -> list[Any]:
    if isinstance(payload, dict):
        return [payload]
    if not isinstance(payload, list):
        raise bad_request(f"{name} must be a JSON array (or one object).")
    return payload


def _check_size(name: str, conditions: int) -> None:
    if conditions > MAX_CONDITIONS:
        raise bad_request(
            f"{name} has {conditions} conditions; at most {MAX_CONDITIONS} are allowed."
        )


def _validated(model: type[Model], fields: dict[str, Any], where: str) -> Model:
    """The model of ``fields``, or a 400 with the first validation problem."""
    try:
        return model.model_validate(fields)
    except ValidationError as error:
        raise bad_request(f"{where}: {_first_problem(error)}.") from error


def _first_problem(error: ValidationError) -> str:
    problem = error.errors()[0]
    location = ".".join(str(part) for part in problem.get("loc", ()))
    message = str(problem.get("msg", "is invalid")).removeprefix("Value error, ").rstrip(".")
    return f"{location}: {message}" if location else message


def _quote(raw: str, limit: int = 60) -> str:
    """A client value quoted for a message, cut short so errors stay one line."""
    shown = raw if len(raw) <= limit else raw[:limit] + "…"
    return repr(shown)
