"""PostHog's experiment timeseries: per day, the cumulative numbers of every variant on
one goal (``metric_uuid`` is the goal key), in PostHog's ``ExperimentStatsBase`` terms:
``number_of_samples`` (visitors), ``sum`` and ``sum_squares`` of the per-visitor value.

The value is converted (0/1) for conversion goals, revenue for revenue goals and the
number of goal events for count goals. Days are UTC days of the visitors' entry; each
day adds that day's cohort to the days before, so the last day equals the whole run.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from worker.api.auth import PROJECT_NOT_FOUND, experiment_in_project, scoped_project
from worker.api.caching.results import DEFAULT_QUERY
from worker.api.context import ApiContext, api_context
from worker.api.errors import ERROR_RESPONSES, ApiError
from worker.api.experiment_state import ended_at
from worker.events.experiment import ExperimentDefinition, ExperimentStatus, GoalType
from worker.results.contract import VariantRow
from worker.results.decisions import DecisionState
from worker.results.experiment_result import traffic_weights
from worker.results.query import ResultQuery
from worker.store.api_keys import EXPERIMENT_READ, EXPERIMENT_WRITE, FEATURE_FLAG_READ
from worker.store.definitions import load_definitions
from worker.store.snapshots import load_decision_state
from worker.store.timeseries import load_timeseries, save_timeseries

router = APIRouter(prefix="/api/projects", tags=["PostHog"])

Context = Annotated[ApiContext, Depends(api_context)]

SUMS: dict[GoalType, Callable[[VariantRow], tuple[float, float]]] = {
    GoalType.CONVERSION: lambda row: (row.conversions, row.conversions),
    GoalType.REVENUE: lambda row: (row.revenue, row.revenue_sum_squares),
    GoalType.COUNT: lambda row: (row.goal_events, row.goal_events_sum_squares),
}
"""Goal type → a row's ``sum`` and ``sum_squares`` of the per-visitor value (a 0/1 value
is its own square)."""


def forbidden(_: str, scope: str) -> Mapping[str, object]:
    """PostHog's 403 for a personal API key without the scope (a DRF error body)."""
    return {
        "type": "authentication_error",
        "code": "permission_denied",
        "detail": f"API key missing required scope '{scope}'",
        "attr": None,
    }


class Forbidden(BaseModel):
    """PostHog's 403 body."""

    type: Literal["authentication_error"]
    code: Literal["permission_denied"]
    detail: str
    attr: None


RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    403: {"model": Forbidden, "description": "The API key lacks the route's scope"},
}
"""The documented errors of PostHog's routes: its own 403 body."""


class VariantStats(BaseModel):
    """One variant's cumulative numbers up to the end of a day."""

    key: str
    number_of_samples: int
    sum: float
    sum_squares: float


class DayResult(BaseModel):
    """The control (``baseline``) and the other variants on one day."""

    baseline: VariantStats
    variant_results: list[VariantStats]


class TimeseriesResults(BaseModel):
    """The daily cumulative series of one goal, and the fingerprint of the configuration
    it was computed under."""

    experiment_id: str
    metric_uuid: str
    status: Literal["completed"]
    timeseries: dict[str, DayResult]
    computed_at: datetime
    errors: dict[str, str]
    fingerprint: str


class Recalculation(BaseModel):
    """What ``recalculate_timeseries`` recomputes: one metric."""

    model_config = ConfigDict(extra="forbid")

    metric_uuid: Annotated[str, Field(max_length=80, description="The goal key.")]


@router.get(
    "/{project_id}/experiments/{experiment_id}/timeseries_results",
    response_model=TimeseriesResults,
    responses=RESPONSES,
    summary="Daily cumulative results of one metric (PostHog)",
)
async def timeseries_results(
    project_id: str,
    experiment_id: str,
    project_key: Annotated[str, Depends(scoped_project(EXPERIMENT_READ, forbidden))],
    context: Context,
    metric_uuid: Annotated[str, Query(max_length=80, description="The goal key.")],
    fingerprint: Annotated[
        str | None, Query(max_length=64, description="The configuration of a stored series.")
    ] = None,
) -> TimeseriesResults:
    """The series ``recalculate_timeseries`` stored, while it is the one of the current
    configuration (or of ``fingerprint``); else one computed now: one entry per UTC day
    from the first to the last with visitors, cumulative. 404 for a ``fingerprint`` with
    no stored series."""
    definition = await experiment_in_project(
        context, project_id if project_id == project_key else None, experiment_id
    )
    _goal_type(definition, metric_uuid)
    current = _fingerprint(definition, metric_uuid)
    raw = await load_timeseries(context.redis, context.prefix, definition.id, metric_uuid)
    stored = None if raw is None else TimeseriesResults.model_validate_json(raw)
    if stored is not None and stored.fingerprint == (fingerprint or current):
        return stored
    if fingerprint is not None and fingerprint != current:
        raise ApiError(
            404,
            "No timeseries is stored for this fingerprint: POST recalculate_timeseries "
            "to store one of the current configuration.",
        )
    return await _series(context, definition, metric_uuid)


@router.post(
    "/{project_id}/experiments/{experiment_id}/recalculate_timeseries",
    response_model=TimeseriesResults,
    responses=RESPONSES,
    summary="Recompute and store one metric's daily results (PostHog)",
)
async def recalculate_timeseries(
    project_id: str,
    experiment_id: str,
    body: Recalculation,
    project_key: Annotated[str, Depends(scoped_project(EXPERIMENT_WRITE, forbidden))],
    context: Context,
) -> TimeseriesResults:
    """Compute the metric's series now and store it: ``timeseries_results`` serves it
    until the next recalculation or a change of configuration (its fingerprint)."""
    definition = await experiment_in_project(
        context, project_id if project_id == project_key else None, experiment_id
    )
    series = await _series(context, definition, body.metric_uuid)
    await save_timeseries(
        context.redis,
        context.prefix,
        definition.id,
        body.metric_uuid,
        series.model_dump_json().encode(),
    )
    return series


async def _series(
    context: ApiContext, definition: ExperimentDefinition, metric_uuid: str
) -> TimeseriesResults:
    """The metric's cumulative daily series, computed from the counters now."""
    goal = _goal_type(definition, metric_uuid)
    days = await context.results.daily(definition, ResultQuery(goal=metric_uuid))
    totals: dict[str, VariantStats] = {}
    series: dict[str, DayResult] = {}
    for day, document in days:
        for row in document.goals[metric_uuid].variants:
            totals[row.variant_id] = _added(totals.get(row.variant_id), row, goal)
        series[day.isoformat()] = _day(definition, totals)
    return TimeseriesResults(
        experiment_id=definition.id,
        metric_uuid=metric_uuid,
        status="completed",
        timeseries=series,
        computed_at=datetime.now(UTC),
        errors={},
        fingerprint=_fingerprint(definition, metric_uuid),
    )


def _fingerprint(definition: ExperimentDefinition, metric_uuid: str) -> str:
    """What a metric's series depends on: the goal (type, cap), the variants and the
    experiment's start and end; a change of any of them makes a stored series stale."""
    goal = next(goal for goal in definition.goals if goal.key == metric_uuid)
    configuration = {
        "goal": goal.model_dump(mode="json"),
        "variants": [(variant.id, variant.is_control) for variant in definition.variants],
        "started_at": None if definition.started_at is None else definition.started_at.isoformat(),
        "ended_at": None if definition.ended_at is None else definition.ended_at.isoformat(),
    }
    return hashlib.sha256(orjson.dumps(configuration)).hexdigest()[:16]


def _goal_type(definition: ExperimentDefinition, goal_key: str) -> GoalType:
    """The type of the goal ``metric_uuid`` names; 404 when the experiment has none such."""
    goal = next((goal for goal in definition.goals if goal.key == goal_key), None)
    if goal is None:
        raise ApiError(404, f"The experiment has no metric {goal_key!r}.")
    return goal.type


def _added(total: VariantStats | None, row: VariantRow, goal: GoalType) -> VariantStats:
    """``total`` (None: nothing yet) plus one day's row of the variant."""
    value_sum, squares_sum = SUMS[goal](row)
    before = total or VariantStats(key=row.variant_id, number_of_samples=0, sum=0, sum_squares=0)
    return VariantStats(
        key=before.key,
        number_of_samples=before.number_of_samples + row.visitors,
        sum=before.sum + value_sum,
        sum_squares=before.sum_squares + squares_sum,
    )


def _day(definition: ExperimentDefinition, totals: dict[str, VariantStats]) -> DayResult:
    """The day's entry: the control as baseline, the others in definition order."""
    control = definition.control.id
    return DayResult(
        baseline=totals[control],
        variant_results=[
            totals[variant.id] for variant in definition.variants if variant.id != control
        ],
    )


# --- experiments, duplicates and flags ------------------------------------------------


class FlagVariant(BaseModel):
    """One variant of a multivariate flag."""

    key: str
    name: str
    rollout_percentage: float


class PostHogExperiment(BaseModel):
    """An experiment in PostHog's field names (ids are strings here)."""

    id: str
    name: str
    description: str | None
    feature_flag_key: str
    start_date: datetime | None
    end_date: datetime | None
    created_at: datetime | None
    updated_at: datetime | None
    archived: bool
    parameters: dict[str, list[FlagVariant]]
    exposures: int


class Duplicated(PostHogExperiment):
    """A duplicate's answer; ``message`` says why a 202 shows it as published."""

    message: str | None = None


class ExperimentList(BaseModel):
    """PostHog's paginated list."""

    count: int
    next: str | None
    previous: str | None
    results: list[PostHogExperiment]


class MultivariateFilters(BaseModel):
    """The flag's variants."""

    variants: list[FlagVariant]


class FlagFilters(BaseModel):
    """The flag's ``filters``: its variants only (no release conditions)."""

    multivariate: MultivariateFilters


class FeatureFlag(BaseModel):
    """An experiment seen as a PostHog feature flag."""

    id: str
    key: str
    name: str
    active: bool
    created_at: datetime | None
    filters: FlagFilters


class FlagList(BaseModel):
    """PostHog's paginated list of flags."""

    count: int
    next: str | None
    previous: str | None
    results: list[FeatureFlag]


FlagOrder = Literal["key", "-key", "name", "-name", "created_at", "-created_at"]
Limit = Annotated[int, Query(ge=1, le=1000, description="Rows per page.")]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000, description="Rows to skip.")]


@router.post(
    "/{project_id}/experiments/{experiment_id}/duplicate",
    response_model=Duplicated,
    status_code=201,
    responses={**RESPONSES, 202: {"model": Duplicated}},
    summary="Duplicate an experiment as a draft (PostHog)",
)
async def duplicate(
    project_id: str,
    experiment_id: str,
    project_key: Annotated[str, Depends(scoped_project(EXPERIMENT_WRITE, forbidden))],
    context: Context,
    response: Response,
) -> Duplicated:
    """A copy of the definition under a new id, as a draft that has never run."""
    source = await experiment_in_project(
        context, project_id if project_id == project_key else None, experiment_id
    )
    now = datetime.now(UTC)
    copy = source.model_copy(
        update={
            "id": f"{source.id[:67]}-copy-{secrets.token_hex(3)}",
            "name": f"{source.name[:193]} (Copy)",
            "status": ExperimentStatus.DRAFT,
            "started_at": None,
            "ended_at": None,
            "created_at": now,
            "updated_at": now,
            # A percentile cap is taken again when the copy launches.
            "goals": [
                goal.model_copy(update={"cap": None}) if goal.cap_percentile else goal
                for goal in source.goals
            ],
        }
    )
    stored = await context.publisher.publish(copy)
    body = Duplicated(**(await _experiment(context, copy)).model_dump())
    if not stored:
        response.status_code = 202
        body.message = (
            "Published, but no worker stored it within "
            f"{context.settings.api_write_wait_seconds:g} s; read it again later."
        )
    return body


@router.get(
    "/{project_id}/experiments/eligible_feature_flags",
    response_model=FlagList,
    responses=RESPONSES,
    summary="Experiments usable as multivariate feature flags (PostHog)",
)
async def eligible_feature_flags(
    request: Request,
    project_id: str,
    project_key: Annotated[str, Depends(scoped_project(FEATURE_FLAG_READ, forbidden))],
    context: Context,
    search: Annotated[str | None, Query(max_length=200, description="In key or name.")] = None,
    active: Annotated[bool | None, Query(description="Only (in)active flags.")] = None,
    order: Annotated[FlagOrder, Query(description="Sort field; '-' for descending.")] = "key",
    limit: Limit = 100,
    offset: Offset = 0,
) -> FlagList:
    """Flags with at least 2 variants whose first variant key is "control"."""
    flags = [
        _flag(definition)
        for definition in await _mine(context, project_id, project_key)
        if len(definition.variants) >= 2 and definition.variants[0].id == "control"
    ]
    if search:
        needle = search.lower()
        flags = [f for f in flags if needle in f.key.lower() or needle in f.name.lower()]
    if active is not None:
        flags = [flag for flag in flags if flag.active is active]
    field = order.lstrip("-")
    flags.sort(key=lambda flag: (_sort_value(flag, field), flag.key), reverse=order[0] == "-")
    page = flags[offset : offset + limit]
    return FlagList(results=page, **_pages(request, len(flags), limit, offset))


@router.get(
    "/{project_id}/experiments/requires_flag_implementation",
    response_model=ExperimentList,
    responses=RESPONSES,
    summary="Experiments whose flag has seen no exposure yet (PostHog)",
)
async def requires_flag_implementation(
    request: Request,
    project_id: str,
    project_key: Annotated[str, Depends(scoped_project(EXPERIMENT_READ, forbidden))],
    context: Context,
    limit: Limit = 100,
    offset: Offset = 0,
) -> ExperimentList:
    """Experiments not yet completed with no visitor assigned, by id."""
    waiting = []
    for definition in await _mine(context, project_id, project_key):
        if definition.status is ExperimentStatus.COMPLETED:
            continue
        experiment = await _experiment(context, definition)
        if experiment.exposures == 0:
            waiting.append(experiment)
    page = waiting[offset : offset + limit]
    return ExperimentList(results=page, **_pages(request, len(waiting), limit, offset))


async def _mine(
    context: ApiContext, project_id: str, project_key: str
) -> list[ExperimentDefinition]:
    """The project's experiments by id; 404 for a path naming another project."""
    if project_id != project_key:
        raise ApiError(404, PROJECT_NOT_FOUND)
    return [
        definition
        for definition in await load_definitions(context.redis, context.prefix)
        if definition.project_key == project_key
    ]


def _variants(definition: ExperimentDefinition) -> list[FlagVariant]:
    weights = traffic_weights(definition, [variant.id for variant in definition.variants])
    return [
        FlagVariant(key=variant.id, name=variant.name, rollout_percentage=100 * weight)
        for variant, weight in zip(definition.variants, weights, strict=True)
    ]


def _flag(definition: ExperimentDefinition) -> FeatureFlag:
    return FeatureFlag(
        id=definition.id,
        key=definition.id,
        name=definition.name,
        active=definition.status is ExperimentStatus.LIVE,
        created_at=definition.created_at,
        filters=FlagFilters(multivariate=MultivariateFilters(variants=_variants(definition))),
    )


def _sort_value(flag: FeatureFlag, field: str) -> str:
    if field == "created_at":
        # Flags without a creation time (published by the CLI) sort first.
        return "" if flag.created_at is None else flag.created_at.isoformat()
    return str(getattr(flag, field)).lower()


async def _experiment(context: ApiContext, definition: ExperimentDefinition) -> PostHogExperiment:
    document = await context.results.document(definition, DEFAULT_QUERY)
    rows = document.goals[definition.primary_goal.key].variants
    return PostHogExperiment(
        id=definition.id,
        name=definition.name,
        description=definition.description,
        feature_flag_key=definition.id,
        start_date=definition.started_at,
        end_date=await ended_at(context.redis, context.prefix, definition),
        created_at=definition.created_at,
        updated_at=definition.updated_at,
        archived=definition.status is ExperimentStatus.COMPLETED,
        parameters={"feature_flag_variants": _variants(definition)},
        exposures=sum(row.visitors for row in rows),
    )


def _pages(request: Request, count: int, limit: int, offset: int) -> dict[str, Any]:
    """``count``, ``next`` and ``previous`` (absolute URLs, None at either end)."""
    url = request.url

    def at(start: int) -> str:
        return str(url.include_query_params(limit=limit, offset=start))

    return {
        "count": count,
        "next": at(offset + limit) if offset + limit < count else None,
        "previous": at(max(offset - limit, 0)) if offset > 0 else None,
    }


# --- experimentation velocity ---------------------------------------------------------


class Velocity(BaseModel):
    """Experiments launched and concluded, running at the end, and the share of those
    concluded whose winner is not the control."""

    launched: int
    concluded: int
    running: int
    won: int
    win_rate: float | None


class PeriodStats(Velocity):
    """One period's velocity."""

    period_start: date


class VelocityStats(BaseModel):
    """Experimentation velocity per period, oldest first, and over the whole project."""

    period: Literal["week", "month"]
    periods: list[PeriodStats]
    totals: Velocity = Field(description="Every experiment; running: now.")


@dataclass(frozen=True)
class _Run:
    start: datetime
    end: datetime | None
    won: bool


@router.get(
    "/{project_id}/experiments/stats",
    response_model=VelocityStats,
    responses=RESPONSES,
    summary="Experimentation velocity: launched, concluded, running, win rate (PostHog)",
)
async def stats(
    project_id: str,
    project_key: Annotated[str, Depends(scoped_project(EXPERIMENT_READ, forbidden))],
    context: Context,
    period: Annotated[
        Literal["week", "month"], Query(description="UTC calendar months or ISO weeks.")
    ] = "month",
    periods: Annotated[int, Query(ge=1, le=520, description="The last this many.")] = 12,
) -> VelocityStats:
    """Per period: launched (started in it), concluded (completed in it), running at
    its end, and won among those concluded (a winner other than the control)."""
    runs = []
    for definition in await _mine(context, project_id, project_key):
        if definition.started_at is None or definition.status is ExperimentStatus.DRAFT:
            continue
        end = None
        if definition.status is ExperimentStatus.COMPLETED:
            end = await ended_at(context.redis, context.prefix, definition)
        state = await load_decision_state(context.redis, context.prefix, definition.id)
        winner = DecisionState.model_validate(state).winner
        won = winner is not None and winner != definition.control.id
        runs.append(_Run(_utc(definition.started_at), None if end is None else _utc(end), won))
    now = datetime.now(UTC)
    starts: list[datetime] = []
    if runs:
        start = _period_start(min(run.start for run in runs), period)
        while start <= now:
            starts.append(start)
            start = _next_period(start, period)
    rows = [
        PeriodStats(
            period_start=start.date(),
            **_velocity(runs, start, _next_period(start, period)).model_dump(),
        )
        for start in starts[-periods:]
    ]
    totals = _velocity(runs, datetime.min.replace(tzinfo=UTC), now)
    return VelocityStats(period=period, periods=rows, totals=totals)


def _velocity(runs: list[_Run], start: datetime, end: datetime) -> Velocity:
    launched = [run for run in runs if start <= run.start < end]
    concluded = [run for run in runs if run.end is not None and start <= run.end < end]
    running = [run for run in runs if run.start < end and (run.end is None or run.end >= end)]
    won = sum(run.won for run in concluded)
    return Velocity(
        launched=len(launched),
        concluded=len(concluded),
        running=len(running),
        won=won,
        win_rate=won / len(concluded) if concluded else None,
    )


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _period_start(moment: datetime, period: str) -> datetime:
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return day.replace(day=1)
    return day - timedelta(days=day.weekday())


def _next_period(start: datetime, period: str) -> datetime:
    if period == "week":
        return start + timedelta(days=7)
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
