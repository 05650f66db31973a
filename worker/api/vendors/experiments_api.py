"""The read shapes of the generic "Experiments API": paged experiments with their
variants' traffic split and assignment counts, per-variant results and computed
results (``sampleSize``, ``conversions``, ``conversionRate`` as a fraction).

Statuses are spelt as that API spells them: draft → DRAFT, live → RUNNING,
inactive → PAUSED, completed → COMPLETED.
"""

from __future__ import annotations

from datetime import UTC, datetime
from math import ceil
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from worker.api.auth import experiment_in_project, key_project
from worker.api.caching.results import DEFAULT_QUERY
from worker.api.context import ApiContext, api_context
from worker.api.errors import ERROR_RESPONSES, bad_request
from worker.events.experiment import ExperimentDefinition, ExperimentStatus
from worker.results.contract import GoalBlock
from worker.results.experiment_result import traffic_weights
from worker.store.definitions import load_definitions

router = APIRouter(prefix="/api/experiments", tags=["Experiments API"])

Context = Annotated[ApiContext, Depends(api_context)]
Project = Annotated[str, Depends(key_project)]
Status = Literal["DRAFT", "RUNNING", "PAUSED", "COMPLETED"]

STATUSES: dict[ExperimentStatus, Status] = {
    ExperimentStatus.DRAFT: "DRAFT",
    ExperimentStatus.LIVE: "RUNNING",
    ExperimentStatus.INACTIVE: "PAUSED",
    ExperimentStatus.COMPLETED: "COMPLETED",
}


class VariantOut(BaseModel):
    """One variant and its share of the traffic, in percent."""

    id: str
    name: str
    isControl: bool
    splitPercentage: float


class AssignmentCount(BaseModel):
    """Prisma-style relation counts: visitors assigned to the experiment."""

    assignments: int


class ExperimentOut(BaseModel):
    """One experiment as the Experiments API lists it."""

    id: str
    name: str
    status: Status
    type: str
    startedAt: datetime | None
    endedAt: datetime | None
    variants: list[VariantOut]
    goals: list[str]
    primaryGoal: str
    count: AssignmentCount = Field(alias="_count")


class PageMeta(BaseModel):
    """Where the page is in the whole list."""

    total: int
    page: int
    limit: int
    totalPages: int


class ExperimentPage(BaseModel):
    """One page of experiments."""

    data: list[ExperimentOut]
    meta: PageMeta


class VariantResult(BaseModel):
    """One variant's participants and conversions on the chosen goal."""

    variantId: str
    name: str
    isControl: bool
    participants: int
    conversions: int
    conversionRate: float | None = Field(description="Conversions per participant (a fraction).")


class ExperimentResults(BaseModel):
    """Participants per variant, and their conversions on one goal."""

    experimentId: str
    goal: str
    totalParticipants: int
    variants: list[VariantResult]


class ComputedVariant(BaseModel):
    """One variant's computed numbers on one goal."""

    variantId: str
    sampleSize: int
    conversions: int
    conversionRate: float | None = Field(description="Conversions per visitor (a fraction).")


class ComputedGoal(BaseModel):
    """The computed numbers of every variant on one goal."""

    goal: str
    primary: bool
    variants: list[ComputedVariant]


class ComputedResults(BaseModel):
    """The result of ``compute-results``: every goal, every variant."""

    experimentId: str
    computedAt: datetime
    results: list[ComputedGoal]


@router.get(
    "", response_model=ExperimentPage, responses=ERROR_RESPONSES, summary="List experiments"
)
async def list_experiments(
    project_key: Project,
    context: Context,
    page: Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1.")] = 1,
    limit: Annotated[int, Query(ge=1, le=100, description="Experiments per page.")] = 20,
    status: Annotated[
        str | None, Query(max_length=20, description="DRAFT, RUNNING, PAUSED or COMPLETED.")
    ] = None,
) -> ExperimentPage:
    """The key's project's experiments by id, optionally of one status, a page at a time."""
    wanted = _status_filter(status)
    mine = [
        definition
        for definition in await load_definitions(context.redis, context.prefix)
        if definition.project_key == project_key
        and (wanted is None or STATUSES[definition.status] == wanted)
    ]
    rows = mine[(page - 1) * limit : page * limit]
    return ExperimentPage(
        data=[await _experiment(context, definition) for definition in rows],
        meta=PageMeta(total=len(mine), page=page, limit=limit, totalPages=ceil(len(mine) / limit)),
    )


@router.get(
    "/{experiment_id}",
    response_model=ExperimentOut,
    responses=ERROR_RESPONSES,
    summary="Get an experiment",
)
async def get_experiment(
    experiment_id: str, project_key: Project, context: Context
) -> ExperimentOut:
    """One experiment of the key's project (404 for any other)."""
    definition = await experiment_in_project(context, project_key, experiment_id)
    return await _experiment(context, definition)


@router.get(
    "/{experiment_id}/results",
    response_model=ExperimentResults,
    responses=ERROR_RESPONSES,
    summary="Get an experiment's results",
)
async def get_results(
    experiment_id: str,
    project_key: Project,
    context: Context,
    goal: Annotated[
        str | None, Query(max_length=80, description="A goal key; the primary goal if absent.")
    ] = None,
) -> ExperimentResults:
    """Participants (visitors) per variant and their conversions on one goal."""
    definition = await experiment_in_project(context, project_key, experiment_id)
    goal_key = _goal(definition, goal)
    rows = (await _goals(context, definition))[goal_key].variants
    return ExperimentResults(
        experimentId=definition.id,
        goal=goal_key,
        totalParticipants=sum(row.visitors for row in rows),
        variants=[
            VariantResult(
                variantId=row.variant_id,
                name=row.name,
                isControl=row.is_control,
                participants=row.visitors,
                conversions=row.conversions,
                conversionRate=row.conversion_rate,
            )
            for row in rows
        ],
    )


@router.post(
    "/{experiment_id}/compute-results",
    response_model=ComputedResults,
    responses=ERROR_RESPONSES,
    summary="Compute an experiment's results",
)
async def compute_results(
    experiment_id: str, project_key: Project, context: Context
) -> ComputedResults:
    """Sample size, conversions and conversion rate of every variant on every goal."""
    definition = await experiment_in_project(context, project_key, experiment_id)
    goals = await _goals(context, definition)
    return ComputedResults(
        experimentId=definition.id,
        computedAt=datetime.now(UTC),
        results=[
            ComputedGoal(
                goal=goal.key,
                primary=goal.primary,
                variants=[
                    ComputedVariant(
                        variantId=row.variant_id,
                        sampleSize=row.visitors,
                        conversions=row.conversions,
                        conversionRate=row.conversion_rate,
                    )
                    for row in goals[goal.key].variants
                ],
            )
            for goal in definition.goals
        ],
    )


def _status_filter(status: str | None) -> Status | None:
    """The status asked for, in any case; 400 for an unknown one."""
    if status is None:
        return None
    for known in STATUSES.values():
        if known == status.upper():
            return known
    raise bad_request(f"Unknown status; use one of {', '.join(STATUSES.values())}.")


def _goal(definition: ExperimentDefinition, goal: str | None) -> str:
    """The goal asked for, else the primary one; 400 for a goal the experiment lacks."""
    if goal is None:
        return definition.primary_goal.key
    if all(known.key != goal for known in definition.goals):
        raise bad_request(f"The experiment has no goal {goal!r}.")
    return goal


async def _goals(context: ApiContext, definition: ExperimentDefinition) -> dict[str, GoalBlock]:
    """The goal blocks of the experiment's default result (whole run, visitors)."""
    return (await context.results.document(definition, DEFAULT_QUERY)).goals


async def _experiment(context: ApiContext, definition: ExperimentDefinition) -> ExperimentOut:
    """The listed shape of one experiment, with its visitors as ``_count.assignments``."""
    order = [variant.id for variant in definition.variants]
    weights = traffic_weights(definition, order)
    rows = (await _goals(context, definition))[definition.primary_goal.key].variants
    return ExperimentOut(
        id=definition.id,
        name=definition.name,
        status=STATUSES[definition.status],
        type=definition.type.value,
        startedAt=definition.started_at,
        endedAt=definition.ended_at,
        variants=[
            VariantOut(
                id=variant.id,
                name=variant.name,
                isControl=variant.is_control,
                splitPercentage=100 * weight,
            )
            for variant, weight in zip(definition.variants, weights, strict=True)
        ],
        goals=[goal.key for goal in definition.goals],
        primaryGoal=definition.primary_goal.key,
        _count=AssignmentCount(assignments=sum(row.visitors for row in rows)),
    )
