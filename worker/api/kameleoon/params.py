"""Kameleoon's results request body, and the query it asks for (pure).

A request names one date interval (whole local days of its start and end, in the
offset its timestamps carry), how conversions count, the reference, the goals, an
optional breakdown, cell filters and statistics overrides. Anything this server cannot
answer exactly is a 400 naming the field, never a silently different answer.

The names of Kameleoon's results tutorial work as well as the reference's: ``goalId``
for ``goalsIds``, ``"true"``/``"false"`` text for the booleans, numbers for goal and
variation ids (ours are text: ``123`` names the goal ``"123"``). ``sequentialTesting``
chooses the stopping rule of the frequentist engine: given without ``bayesian``
(Kameleoon's default is false) it asks for that engine; with ``bayesian: true`` it is a
400 when true, as a Bayesian result has no sequential form.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from worker.api.errors import ApiError, bad_request
from worker.api.openapi_patterns import case_insensitive_choice
from worker.events.experiment import Correction, Engine, ExperimentDefinition
from worker.results.query import Condition, Dimension, ResultQuery

ValueCellType = Literal["DEVICE_TYPE", "BROWSER", "OS", "COUNTRY"]
DimensionType = Literal[
    "DEVICE_TYPE", "BROWSER", "OS", "COUNTRY", "NEW_VISITOR", "DAY_OF_WEEK", "SDK", "TIMEZONE",
]  # fmt: skip
"""Breakdowns by a dimension; Kameleoon's CUSTOM_DATUM has none here (a 400, as the
request schema says)."""

CELL_FIELDS: dict[str, Dimension] = {
    "DEVICE_TYPE": "device",
    "BROWSER": "browser",
    "OS": "os",
    "COUNTRY": "country",
    "NEW_VISITOR": "visitor_type",
}
"""Kameleoon's filter and breakdown types that are segment-cell dimensions here."""

BREAKDOWNS: dict[str, Dimension] = {
    **CELL_FIELDS,
    "DAY_OF_WEEK": "day_of_week",
    "SDK": "sdk",
    "TIMEZONE": "timezone",
}
"""Breakdown types → dimensions; SDK and TIMEZONE are the assignment context's ``sdk``
and ``timezone`` (visitors without one under ``(not set)``)."""

Interval = Literal["DAY", "WEEK", "MONTH"]
INTERVALS: tuple[Interval, ...] = ("DAY", "WEEK", "MONTH")
VISITOR_TYPES = {
    "new": "new",
    "new_visitor": "new",
    "true": "new",
    "returning": "returning",
    "returning_visitor": "returning",
    "false": "returning",
}
"""NEW_VISITOR filter values, case-insensitive, to this server's visitor types."""

SECONDS_PER_HOUR = 3600
Text = Annotated[str, Field(min_length=1, max_length=200)]


def _number_as_text(value: object) -> object:
    """Kameleoon's ids are numbers; ours are text: ``123`` names ``"123"``."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Id = Annotated[Text, BeforeValidator(_number_as_text)]
GoalIds = Annotated[list[Id], Field(min_length=1, max_length=50)]
_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


def _whole_hour_offset(moment: datetime) -> datetime:
    offset = moment.utcoffset() or timedelta(0)
    if offset.total_seconds() % SECONDS_PER_HOUR:
        raise ValueError("UTC offsets must be whole hours (counters are hourly)")
    return moment


Moment = Annotated[
    datetime,
    AfterValidator(_whole_hour_offset),
    Field(json_schema_extra={"pattern": "(?:[Zz]|[+-][0-9]{2}:00)$"}),
]
"""An ISO timestamp whose UTC offset is whole hours."""


class DateInterval(BaseModel):
    """One date interval; both ends are ISO timestamps with whole-hour offsets. The
    interval's days are those of its start's offset (the end is read in it)."""

    model_config = _STRICT

    start: Moment
    end: Moment


class IntervalBreakdown(BaseModel):
    """Split by the period of entry; HOUR is not offered, as queries select whole days."""

    model_config = _STRICT

    type: Literal["INTERVAL"]
    interval: Interval


class DimensionBreakdown(BaseModel):
    """Split by a dimension of the visitors."""

    model_config = _STRICT

    type: DimensionType


Breakdown = Annotated[IntervalBreakdown | DimensionBreakdown, Field(discriminator="type")]

VisitorTypeText = Annotated[str, Field(pattern=case_insensitive_choice(VISITOR_TYPES))]


class ValueFilter(BaseModel):
    """Keep (``include``) or drop visitors whose ``type`` is one of ``values``."""

    model_config = _STRICT

    type: ValueCellType
    values: Annotated[list[Text], Field(min_length=1, max_length=100)]
    include: bool = True


class VisitorTypeFilter(BaseModel):
    """Keep (``include``) or drop new or returning visitors."""

    model_config = _STRICT

    type: Literal["NEW_VISITOR"]
    values: Annotated[list[VisitorTypeText], Field(min_length=1, max_length=100)]
    include: bool = True


Filter = Annotated[ValueFilter | VisitorTypeFilter, Field(discriminator="type")]


class ResultsRequest(BaseModel):
    """The body of ``POST /experiments/{id}/results`` and ``/feature-flags/{id}/results``."""

    model_config = _STRICT

    dateIntervals: Annotated[list[DateInterval], Field(min_length=1, max_length=1)]
    conversionType: Literal["ALL_CONVERSION", "CONVERTED_VISITS"]
    visitorData: bool = True
    allVariationsData: bool = True
    referenceVariationId: Id | None = None
    goalsIds: GoalIds | None = None
    goalId: GoalIds | None = Field(
        default=None, description="The results tutorial's name of goalsIds."
    )
    breakdown: Breakdown | None = None
    filters: Annotated[list[Filter], Field(max_length=50)] = []
    bayesian: bool | None = None
    sequentialTesting: bool | None = None
    enabledMultipleTesting: bool | None = None
    callbackUrl: Annotated[str, Field(max_length=2000)] | None = None


@dataclass(frozen=True)
class ResultsPlan:
    """What to compute: the definition with the request's statistics overrides, the
    query, the goals to report and the period of entry an INTERVAL breakdown splits by
    (None: no such breakdown)."""

    definition: ExperimentDefinition
    query: ResultQuery
    goals: list[str]
    interval: Interval | None


def results_plan(body: ResultsRequest, definition: ExperimentDefinition) -> ResultsPlan:
    """The plan of a request for ``definition``; 400 on anything it cannot answer, 404
    for a goal or reference variation the experiment does not have (a well-formed id of
    nothing, as an unknown experiment id is)."""
    interval = _interval(body.breakdown)
    reference = body.referenceVariationId
    if reference is not None and definition.variant(reference) is None:
        raise ApiError(404, f"Experiment {definition.id!r} has no variation {reference!r}.")
    try:
        start, end, tz = _dates(body.dateIntervals)
        query = ResultQuery(
            start_date=start,
            end_date=end,
            tz=tz,
            segment=tuple(group for spec in body.filters for group in _filter_groups(spec)),
            breakdown=None if interval else _breakdown(body.breakdown),
            count_unit="visitors" if body.visitorData else "visits",
            conversion_type="all"
            if body.conversionType == "ALL_CONVERSION"
            else "converted_visits",
            reference_variant=body.referenceVariationId,
        )
    except ValueError as error:
        raise bad_request(f"Invalid request: {_first_line(error)}.") from error
    return ResultsPlan(
        definition=_with_overrides(definition, body),
        query=query,
        goals=_goals(definition, _goal_ids(body)),
        interval=interval,
    )


def periods(first: date, last: date, interval: Interval) -> list[tuple[date, date]]:
    """The days ``first``..``last`` split into days, weeks (Monday first) or calendar
    months, as (first day, last day) pairs, the outer two clipped to the range."""
    spans: list[tuple[date, date]] = []
    start = first
    while start <= last:
        if interval == "DAY":
            following = start + timedelta(days=1)
        elif interval == "WEEK":
            following = start + timedelta(days=7 - start.weekday())
        else:
            following = (start.replace(day=1) + timedelta(days=32)).replace(day=1)
        spans.append((start, min(following - timedelta(days=1), last)))
        start = following
    return spans


def _interval(breakdown: IntervalBreakdown | DimensionBreakdown | None) -> Interval | None:
    """The period of an INTERVAL breakdown."""
    return breakdown.interval if isinstance(breakdown, IntervalBreakdown) else None


def _goal_ids(body: ResultsRequest) -> list[str] | None:
    """``goalsIds``, or the tutorial's ``goalId``; both only when they agree."""
    if body.goalId is not None and body.goalsIds is not None and body.goalId != body.goalsIds:
        raise bad_request("goalId and goalsIds name different goals; give one of them.")
    return body.goalsIds if body.goalsIds is not None else body.goalId


def _dates(intervals: list[DateInterval]) -> tuple[date, date, int]:
    """Start date, end date and timezone (hours east of UTC) of the single interval: the
    start's offset, in which the end is read too (a timestamp without an offset is UTC)."""
    (interval,) = intervals
    offset = interval.start.utcoffset() or timedelta(0)
    end = interval.end if interval.end.tzinfo else interval.end.replace(tzinfo=UTC)
    try:
        end_date = (end.astimezone(UTC) + offset).date()
    except OverflowError as error:
        raise ValueError("the interval's end is outside the years 1 to 9999") from error
    return interval.start.date(), end_date, int(offset.total_seconds()) // SECONDS_PER_HOUR


def _breakdown(breakdown: Breakdown | None) -> Dimension | None:
    if breakdown is None:
        return None
    dimension = BREAKDOWNS.get(breakdown.type)
    if dimension is None:
        raise ValueError(f"breakdown type {breakdown.type} is not supported")
    return dimension


def _filter_groups(spec: Filter) -> list[tuple[Condition, ...]]:
    """``include``: one OR group of equalities; otherwise one group per excluded value."""
    field = CELL_FIELDS[spec.type]
    values = [_filter_value(spec.type, value) for value in spec.values]
    if spec.include:
        return [tuple(Condition(field=field, operator="==", value=value) for value in values)]
    return [(Condition(field=field, operator="!=", value=value),) for value in values]


def _filter_value(kind: str, value: str) -> str:
    """A NEW_VISITOR value (any case, the schema's pattern) as our visitor type."""
    return VISITOR_TYPES[value.lower()] if kind == "NEW_VISITOR" else value


def _goals(definition: ExperimentDefinition, goal_ids: list[str] | None) -> list[str]:
    known = [goal.key for goal in definition.goals]
    if goal_ids is None:
        return known
    unknown = [goal for goal in goal_ids if goal not in known]
    if unknown:
        raise ApiError(404, f"Experiment {definition.id!r} has no goal {unknown[0]!r}.")
    return list(dict.fromkeys(goal_ids))


SEQUENTIAL_BAYESIAN = (
    "sequentialTesting applies to the frequentist engine only: a Bayesian result has no "
    "sequential form; send bayesian false (or leave it out) for sequential results."
)


def _with_overrides(definition: ExperimentDefinition, body: ResultsRequest) -> ExperimentDefinition:
    """The definition with the request's engine, sequential and correction choices.

    ``sequentialTesting`` without ``bayesian`` asks for the frequentist engine (whose
    stopping rule it chooses); with ``bayesian: true`` it must be false.
    ``enabledMultipleTesting: true`` keeps a configured correction, else applies
    Bonferroni; ``false`` turns any correction off.
    """
    stats = definition.stats
    update: dict[str, object] = {}
    if body.bayesian and body.sequentialTesting:
        raise bad_request(SEQUENTIAL_BAYESIAN)
    if body.bayesian is not None:
        update["engine"] = Engine.BAYESIAN if body.bayesian else Engine.FREQUENTIST
    if body.sequentialTesting is not None:
        update["sequential"] = body.sequentialTesting
        if body.bayesian is None:
            update["engine"] = Engine.FREQUENTIST
    if body.enabledMultipleTesting is not None:
        configured = stats.correction if stats.correction is not Correction.NONE else None
        update["correction"] = (
            (configured or Correction.BONFERRONI)
            if body.enabledMultipleTesting
            else Correction.NONE
        )
    if not update:
        return definition
    return definition.model_copy(update={"stats": stats.model_copy(update=update)})


def _first_line(error: ValueError) -> str:
    """The message of a ValueError (or the first problem of a pydantic error)."""
    errors = getattr(error, "errors", None)
    if callable(errors):
        problems = errors()
        if problems:
            return str(problems[0].get("msg", error)).rstrip(".")
    return str(error).rstrip(".")
