"""LaunchDarkly's "Get experiment": the experiment with its current iteration and its
analysis configuration, in LaunchDarkly's field names and units (times in Unix
milliseconds, ``allocationPercent`` and thresholds as decimal strings).

Iteration status: draft → not_started, live and inactive → running (an inactive
experiment still counts its enrolled visitors), completed → stopped. The winner is the
one the worker declared (decision state); the environment key is accepted as given.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from worker.api.auth import experiment_in_project, scoped_project
from worker.api.context import ApiContext, api_context
from worker.api.errors import ERROR_RESPONSES
from worker.api.experiment_state import ended_at
from worker.events.adapters import launchdarkly_significance_threshold
from worker.events.experiment import (
    Correction,
    ExperimentDefinition,
    ExperimentStatus,
    Goal,
    GoalType,
)
from worker.results.decisions import DecisionState
from worker.results.experiment_result import traffic_weights
from worker.store.api_keys import EXPERIMENT_READ
from worker.store.snapshots import load_decision_state

router = APIRouter(prefix="/api/v2/projects", tags=["LaunchDarkly"])

Context = Annotated[ApiContext, Depends(api_context)]
IterationStatus = Literal["not_started", "running", "stopped"]

ITERATION_STATUS: dict[ExperimentStatus, IterationStatus] = {
    ExperimentStatus.DRAFT: "not_started",
    ExperimentStatus.LIVE: "running",
    ExperimentStatus.INACTIVE: "running",
    ExperimentStatus.COMPLETED: "stopped",
}
CORRECTION_METHODS = {
    Correction.NONE: None,
    Correction.BONFERRONI: "bonferroni",
    Correction.HOLM: "holm",
    Correction.BH: "benjamini-hochberg",
}


def forbidden(message: str, _: str) -> Mapping[str, object]:
    """LaunchDarkly's 403 body (``ForbiddenErrorRep``: ``code`` and ``message``)."""
    return {"code": "forbidden", "message": message}


class Forbidden(BaseModel):
    """LaunchDarkly's 403 body."""

    code: Literal["forbidden"]
    message: str


RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    403: {"model": Forbidden, "description": "The API key lacks the route's scope"},
}
"""The documented errors of LaunchDarkly's route: its own 403 body."""


class Treatment(BaseModel):
    """One variant, its traffic share in percent and whether it is the baseline."""

    id: str = Field(alias="_id")
    name: str
    baseline: bool
    allocationPercent: str


class Metric(BaseModel):
    """A goal as a LaunchDarkly metric."""

    key: str
    name: str
    kind: Literal["custom"]
    isNumeric: bool


class Iteration(BaseModel):
    """The current iteration: the whole run of the experiment."""

    status: IterationStatus
    startedAt: int | None
    endedAt: int | None
    treatments: list[Treatment]
    primaryMetric: Metric
    secondaryMetrics: list[Metric]
    winningTreatmentId: str | None = None
    winningReason: str | None = None


class AnalysisConfig(BaseModel):
    """The statistics settings of the experiment."""

    bayesianThreshold: str
    significanceThreshold: str
    testDirection: str
    multipleComparisonCorrectionMethod: str | None
    sequentialTestingEnabled: bool


class Experiment(BaseModel):
    """LaunchDarkly's experiment representation."""

    key: str
    name: str
    environmentKey: str
    type: str
    methodology: str
    currentIteration: Iteration
    analysisConfig: AnalysisConfig


@router.get(
    "/{projectKey}/environments/{environmentKey}/experiments/{experimentKey}",
    response_model=Experiment,
    responses=RESPONSES,
    summary="Get experiment (LaunchDarkly)",
)
async def get_experiment(
    projectKey: str,
    environmentKey: str,
    experimentKey: str,
    project_key: Annotated[str, Depends(scoped_project(EXPERIMENT_READ, forbidden))],
    context: Context,
) -> Experiment:
    """The experiment, its current iteration and its analysis configuration."""
    definition = await experiment_in_project(
        context, projectKey if projectKey == project_key else None, experimentKey
    )
    stored = await load_decision_state(context.redis, context.prefix, definition.id)
    winner = DecisionState.model_validate(stored).winner
    stats = definition.stats
    return Experiment(
        key=definition.id,
        name=definition.name,
        environmentKey=environmentKey,
        type=definition.type.value,
        methodology=stats.engine.value,
        currentIteration=Iteration(
            status=ITERATION_STATUS[definition.status],
            startedAt=_millis(definition.started_at),
            endedAt=_millis(await ended_at(context.redis, context.prefix, definition)),
            treatments=_treatments(definition),
            primaryMetric=_metric(definition.primary_goal),
            secondaryMetrics=[_metric(goal) for goal in definition.goals if not goal.primary],
            winningTreatmentId=winner,
            winningReason=None if winner is None else _winning_reason(definition, winner),
        ),
        analysisConfig=AnalysisConfig(
            bayesianThreshold=_decimal(stats.confidence_threshold_percent),
            significanceThreshold=launchdarkly_significance_threshold(
                stats.confidence_threshold_percent
            ),
            testDirection=stats.test_direction.value,
            multipleComparisonCorrectionMethod=CORRECTION_METHODS[stats.correction],
            sequentialTestingEnabled=stats.sequential,
        ),
    )


def _treatments(definition: ExperimentDefinition) -> list[Treatment]:
    """Every variant with its normalised traffic weight in percent."""
    weights = traffic_weights(definition, [variant.id for variant in definition.variants])
    return [
        Treatment.model_validate(
            {
                "_id": variant.id,
                "name": variant.name,
                "baseline": variant.is_control,
                "allocationPercent": _decimal(100 * weight),
            }
        )
        for variant, weight in zip(definition.variants, weights, strict=True)
    ]


def _metric(goal: Goal) -> Metric:
    """A goal as a custom metric; conversion goals are binary, the others numeric."""
    return Metric(
        key=goal.key, name=goal.name, kind="custom", isNumeric=goal.type is not GoalType.CONVERSION
    )


def _winning_reason(definition: ExperimentDefinition, winner: str) -> str:
    """One sentence naming the rule that declared ``winner``."""
    stats = definition.stats
    variant = definition.variant(winner)
    rule = "sequential" if stats.sequential else "fixed-horizon"
    return (
        f"{variant.name if variant else winner} met the {rule} {stats.engine.value} rule at "
        f"{_decimal(stats.confidence_threshold_percent)}% on {definition.primary_goal.key}."
    )


def _millis(moment: datetime | None) -> int | None:
    """Unix milliseconds, as LaunchDarkly gives times."""
    return None if moment is None else round(moment.timestamp() * 1000)


def _decimal(value: float) -> str:
    """A number as LaunchDarkly's decimal strings: no trailing zeros."""
    return f"{value:.6f}".rstrip("0").rstrip(".")
