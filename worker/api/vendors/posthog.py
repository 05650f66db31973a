"""PostHog's experiment timeseries: per day, the cumulative numbers of every variant on
one goal (``metric_uuid`` is the goal key), in PostHog's ``ExperimentStatsBase`` terms:
``number_of_samples`` (visitors), ``sum`` and ``sum_squares`` of the per-visitor value.

The value is converted (0/1) for conversion goals, revenue for revenue goals and the
number of goal events for count goals. Days are UTC days of the visitors' entry; each
day adds that day's cohort to the days before, so the last day equals the whole run.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from worker.api.auth import experiment_in_project, key_project
from worker.api.context import ApiContext, api_context
from worker.api.errors import ERROR_RESPONSES, bad_request
from worker.events.experiment import ExperimentDefinition, GoalType
from worker.results.contract import VariantRow
from worker.results.query import ResultQuery

router = APIRouter(prefix="/api/projects", tags=["PostHog"])

Context = Annotated[ApiContext, Depends(api_context)]

SUMS: dict[GoalType, Callable[[VariantRow], tuple[float, float]]] = {
    GoalType.CONVERSION: lambda row: (row.conversions, row.conversions),
    GoalType.REVENUE: lambda row: (row.revenue, row.revenue_sum_squares),
    GoalType.COUNT: lambda row: (row.goal_events, row.goal_events_sum_squares),
}
"""Goal type → a row's ``sum`` and ``sum_squares`` of the per-visitor value (a 0/1 value
is its own square)."""


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
    """The daily cumulative series of one goal."""

    experiment_id: str
    metric_uuid: str
    status: Literal["completed"]
    timeseries: dict[str, DayResult]
    computed_at: datetime
    errors: dict[str, str]


@router.get(
    "/{project_id}/experiments/{experiment_id}/timeseries_results",
    response_model=TimeseriesResults,
    responses=ERROR_RESPONSES,
    summary="Daily cumulative results of one metric (PostHog)",
)
async def timeseries_results(
    project_id: str,
    experiment_id: str,
    project_key: Annotated[str, Depends(key_project)],
    context: Context,
    metric_uuid: Annotated[str, Query(max_length=80, description="The goal key.")],
) -> TimeseriesResults:
    """One entry per UTC day from the first to the last with visitors, cumulative."""
    definition = await experiment_in_project(
        context, project_id if project_id == project_key else None, experiment_id
    )
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
    )


def _goal_type(definition: ExperimentDefinition, goal_key: str) -> GoalType:
    """The type of the goal ``metric_uuid`` names; 400 when the experiment has none such."""
    goal = next((goal for goal in definition.goals if goal.key == goal_key), None)
    if goal is None:
        raise bad_request(f"The experiment has no metric {goal_key!r}.")
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
