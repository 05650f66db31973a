"""The generic "Experiments API" (seed 004): paged experiments, create, update while a
draft, archive, start and stop, per-variant results and computed results.

Statuses are spelt as that API spells them: draft → draft, live → running, inactive →
stopped (enrolled visitors keep converting, nobody new enrols), completed → completed.
Writes publish the whole definition to `ab.experiments` (``publishing``); the answer
is the definition the registry stored, or 202 with the one published when the registry
has not stored it within ``AB_API_WRITE_WAIT_SECONDS``.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from math import ceil
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from worker.api.auth import experiment_in_project, key_project, scoped_project
from worker.api.caching.results import DEFAULT_QUERY
from worker.api.context import ApiContext, api_context
from worker.api.errors import ERROR_RESPONSES, ApiError, ErrorBody, bad_request
from worker.api.experiment_state import ended_at
from worker.errors import InvalidInput
from worker.events.adapters import DefinitionError, api_goals, parse_definition, split_variants
from worker.events.experiment import ExperimentDefinition, ExperimentStatus, ExperimentType
from worker.events.fields import Identifier, LongText, ShortText
from worker.results.capping import keep_fixed_caps, needs_resolving, resolve_percentile_caps
from worker.results.contract import GoalBlock
from worker.results.experiment_result import traffic_weights
from worker.store.api_keys import EXPERIMENT_WRITE
from worker.store.definitions import load_definition, load_definitions

router = APIRouter(prefix="/api/experiments", tags=["Experiments API"])

Context = Annotated[ApiContext, Depends(api_context)]
Reader = Annotated[str, Depends(key_project)]
Writer = Annotated[str, Depends(scoped_project(EXPERIMENT_WRITE))]
Status = Literal["draft", "running", "stopped", "completed"]
GoalParam = Annotated[
    str | None, Query(max_length=80, description="A goal key; the primary goal if absent.")
]

STATUSES: dict[ExperimentStatus, Status] = {
    ExperimentStatus.DRAFT: "draft",
    ExperimentStatus.LIVE: "running",
    ExperimentStatus.INACTIVE: "stopped",
    ExperimentStatus.COMPLETED: "completed",
}
WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    409: {"model": ErrorBody, "description": "Not allowed in the experiment's status"},
}


class VariantOut(BaseModel):
    """One variant, its share of the traffic in percent and the flow it serves."""

    id: str
    name: str
    splitPercentage: float
    flowId: str | None


class AssignmentCount(BaseModel):
    """Prisma-style relation counts: visitors assigned to the experiment."""

    assignments: int


class ExperimentOut(BaseModel):
    """One experiment as the Experiments API gives it."""

    id: str
    name: str
    description: str | None
    type: str = Field(description="ab_test; mab and holdout for our other types.")
    status: Status
    audienceId: str | None
    startDate: datetime | None
    endDate: datetime | None
    createdAt: datetime | None
    updatedAt: datetime | None
    variants: list[VariantOut]
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


class ExperimentEnvelope(BaseModel):
    """One experiment."""

    data: ExperimentOut


class AcceptedEnvelope(ExperimentEnvelope):
    """A write's 202: the experiment as published, and why it is not shown as stored."""

    message: str


class VariantIn(BaseModel):
    """A variant to create: ``id`` defaults to its position, the control to the first."""

    model_config = ConfigDict(extra="forbid")

    id: Identifier | None = None
    name: ShortText
    splitPercentage: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
    flowId: Identifier | None = None
    isControl: bool | None = None


class GoalIn(BaseModel):
    """A goal; the first is primary unless one says so. One conversion goal if none."""

    model_config = ConfigDict(extra="forbid")

    key: Identifier
    name: ShortText | None = None
    type: Literal["conversion", "revenue", "count"] = "conversion"
    primary: bool = False


class ExperimentCreate(BaseModel):
    """A new experiment, created as a draft; ``id`` is generated when absent."""

    model_config = ConfigDict(extra="forbid")

    id: Identifier | None = None
    name: ShortText
    description: LongText | None = None
    type: Literal["ab_test"] = "ab_test"
    audienceId: Identifier | None = None
    startDate: AwareDatetime | None = None
    endDate: AwareDatetime | None = None
    variants: Annotated[list[VariantIn], Field(min_length=1, max_length=50)]
    goals: Annotated[list[GoalIn], Field(min_length=1, max_length=50)] | None = None


class ExperimentPatch(BaseModel):
    """Fields to change on a draft; the others stay."""

    model_config = ConfigDict(extra="forbid")

    name: ShortText | None = None
    description: LongText | None = None
    audienceId: Identifier | None = None
    startDate: AwareDatetime | None = None
    endDate: AwareDatetime | None = None
    variants: Annotated[list[VariantIn], Field(min_length=1, max_length=50)] | None = None
    goals: Annotated[list[GoalIn], Field(min_length=1, max_length=50)] | None = None


class GoalResult(BaseModel):
    """One variant's numbers on one goal."""

    goal: str
    primary: bool
    conversions: int
    conversionRate: float | None = Field(description="Conversions per participant (a fraction).")
    revenue: float


class VariantResults(BaseModel):
    """One variant's participants and its numbers on each goal."""

    variantId: str
    variantName: str
    splitPercentage: float
    participants: int
    results: list[GoalResult]


class ResultsData(BaseModel):
    """The experiment and its variants' results."""

    experimentId: str
    name: str
    status: Status
    startDate: datetime | None
    endDate: datetime | None
    variants: list[VariantResults]


class ResultsEnvelope(BaseModel):
    """``GET /results``."""

    data: ResultsData


class ComputedVariant(BaseModel):
    """One variant's computed numbers on one goal."""

    variantId: str
    variantName: str
    sampleSize: int
    conversions: int
    conversionRate: float | None = Field(description="Conversions per visitor (a fraction).")


class ComputedData(BaseModel):
    """Every variant on one goal (the primary unless ``goal`` names another)."""

    experimentId: str
    variants: list[ComputedVariant]


class ComputedEnvelope(BaseModel):
    """``POST /compute-results``."""

    data: ComputedData


# --- reads ----------------------------------------------------------------------------


@router.get(
    "", response_model=ExperimentPage, responses=ERROR_RESPONSES, summary="List experiments"
)
async def list_experiments(
    project_key: Reader,
    context: Context,
    page: Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1.")] = 1,
    limit: Annotated[int, Query(ge=1, le=100, description="Experiments per page.")] = 20,
    status: Annotated[Status | None, Query(description="Only experiments of this status.")] = None,
) -> ExperimentPage:
    """The key's project's experiments by id, optionally of one status, a page at a time."""
    mine = [
        definition
        for definition in await load_definitions(context.redis, context.prefix)
        if definition.project_key == project_key
        and (status is None or STATUSES[definition.status] == status)
    ]
    rows = mine[(page - 1) * limit : page * limit]
    return ExperimentPage(
        data=[await _experiment(context, definition) for definition in rows],
        meta=PageMeta(total=len(mine), page=page, limit=limit, totalPages=ceil(len(mine) / limit)),
    )


@router.get(
    "/{experiment_id}",
    response_model=ExperimentEnvelope,
    responses=ERROR_RESPONSES,
    summary="Get an experiment",
)
async def get_experiment(
    experiment_id: str, project_key: Reader, context: Context
) -> ExperimentEnvelope:
    """One experiment of the key's project (404 for any other)."""
    definition = await experiment_in_project(context, project_key, experiment_id)
    return ExperimentEnvelope(data=await _experiment(context, definition))


@router.get(
    "/{experiment_id}/results",
    response_model=ResultsEnvelope,
    responses=ERROR_RESPONSES,
    summary="Get an experiment's results",
)
async def get_results(
    experiment_id: str, project_key: Reader, context: Context, goal: GoalParam = None
) -> ResultsEnvelope:
    """Participants (visitors) per variant and their numbers on every goal (or ``goal``)."""
    definition = await experiment_in_project(context, project_key, experiment_id)
    wanted = [_goal(definition, goal)] if goal is not None else [g.key for g in definition.goals]
    goals = await _goals(context, definition)
    by_variant = {key: {row.variant_id: row for row in goals[key].variants} for key in wanted}
    splits = _splits(definition)
    primary = definition.primary_goal.key
    variants = []
    for row in goals[primary].variants:
        results = [
            GoalResult(
                goal=key,
                primary=key == primary,
                conversions=by_variant[key][row.variant_id].conversions,
                conversionRate=by_variant[key][row.variant_id].conversion_rate,
                revenue=by_variant[key][row.variant_id].revenue,
            )
            for key in wanted
        ]
        variants.append(
            VariantResults(
                variantId=row.variant_id,
                variantName=row.name,
                splitPercentage=splits[row.variant_id],
                participants=row.visitors,
                results=results,
            )
        )
    return ResultsEnvelope(
        data=ResultsData(
            experimentId=definition.id,
            name=definition.name,
            status=STATUSES[definition.status],
            startDate=definition.started_at,
            endDate=await ended_at(context.redis, context.prefix, definition),
            variants=variants,
        )
    )


@router.post(
    "/{experiment_id}/compute-results",
    response_model=ComputedEnvelope,
    responses=ERROR_RESPONSES,
    summary="Compute an experiment's results",
)
async def compute_results(
    experiment_id: str, project_key: Reader, context: Context, goal: GoalParam = None
) -> ComputedEnvelope:
    """Sample size, conversions and conversion rate of every variant on one goal (a
    computation over the stored counters: it needs only ``experiment:read``)."""
    definition = await experiment_in_project(context, project_key, experiment_id)
    rows = (await _goals(context, definition))[_goal(definition, goal)].variants
    return ComputedEnvelope(
        data=ComputedData(
            experimentId=definition.id,
            variants=[
                ComputedVariant(
                    variantId=row.variant_id,
                    variantName=row.name,
                    sampleSize=row.visitors,
                    conversions=row.conversions,
                    conversionRate=row.conversion_rate,
                )
                for row in rows
            ],
        )
    )


# --- writes ---------------------------------------------------------------------------


@router.post(
    "",
    response_model=ExperimentEnvelope,
    status_code=201,
    responses={**WRITE_RESPONSES, 202: {"model": AcceptedEnvelope}},
    summary="Create an experiment (a draft)",
)
async def create_experiment(
    body: ExperimentCreate, project_key: Writer, context: Context
) -> ExperimentEnvelope | Response:
    """A new draft; 400 unless the variants' ``splitPercentage`` sum to 100, 409 when
    the id is taken (by any project: ids are global)."""
    experiment_id = body.id or f"exp-{secrets.token_hex(6)}"
    if await load_definition(context.redis, context.prefix, experiment_id) is not None:
        raise ApiError(409, f"An experiment {experiment_id!r} already exists.")
    now = datetime.now(UTC)
    payload = body.model_dump(mode="json", exclude_none=True) | {"id": experiment_id}
    try:
        definition = parse_definition(payload, project_key).model_copy(
            update={"created_at": now, "updated_at": now}
        )
    except DefinitionError as error:
        raise bad_request(_sentence(error)) from error
    return await _publish(context, definition)


@router.patch(
    "/{experiment_id}",
    response_model=ExperimentEnvelope,
    responses={**WRITE_RESPONSES, 202: {"model": AcceptedEnvelope}},
    summary="Update a draft experiment",
)
async def update_experiment(
    experiment_id: str,
    body: ExperimentPatch,
    project_key: Writer,
    context: Context,
) -> ExperimentEnvelope | Response:
    """Change a draft's fields (409 once it has started: create a new experiment)."""
    current = await experiment_in_project(context, project_key, experiment_id)
    if current.status is not ExperimentStatus.DRAFT:
        raise _conflict(current, "only a draft can be changed")
    fields = body.model_dump(mode="json", exclude_unset=True)
    update: dict[str, Any] = {
        native: fields[name]
        for name, native in (
            ("name", "name"),
            ("description", "description"),
            ("audienceId", "audience_id"),
            ("startDate", "started_at"),
            ("endDate", "ended_at"),
        )
        if name in fields
    }
    try:
        if fields.get("variants") is not None:
            update["variants"] = split_variants(fields["variants"])
        if fields.get("goals") is not None:
            update["goals"] = api_goals(fields["goals"])
    except DefinitionError as error:
        raise bad_request(_sentence(error)) from error
    changed = _validated(
        current.model_dump(mode="json") | update | {"updated_at": datetime.now(UTC)}
    )
    return await _publish(context, changed)


@router.delete(
    "/{experiment_id}",
    response_model=ExperimentEnvelope,
    responses={**WRITE_RESPONSES, 202: {"model": AcceptedEnvelope}},
    summary="Archive an experiment",
)
async def archive_experiment(
    experiment_id: str, project_key: Writer, context: Context
) -> ExperimentEnvelope | Response:
    """Archive: the experiment becomes completed (its counts freeze, its results stay
    readable); archiving a completed one changes nothing."""
    current = await experiment_in_project(context, project_key, experiment_id)
    if current.status is ExperimentStatus.COMPLETED:
        return ExperimentEnvelope(data=await _experiment(context, current))
    now = datetime.now(UTC)
    archived = current.model_copy(
        update={
            "status": ExperimentStatus.COMPLETED,
            "ended_at": current.ended_at or now,
            "updated_at": now,
        }
    )
    return await _publish(context, archived)


@router.post(
    "/{experiment_id}/start",
    response_model=ExperimentEnvelope,
    responses={**WRITE_RESPONSES, 202: {"model": AcceptedEnvelope}},
    summary="Start an experiment (running)",
)
async def start_experiment(
    experiment_id: str, project_key: Writer, context: Context
) -> ExperimentEnvelope | Response:
    """A draft or stopped experiment goes live; a goal's ``cap_percentile`` is fixed
    now, as ``experiments apply`` fixes it (409 when there is no data to take it from)."""
    current = await experiment_in_project(context, project_key, experiment_id)
    if current.status not in (ExperimentStatus.DRAFT, ExperimentStatus.INACTIVE):
        raise _conflict(current, "only a draft or stopped experiment can be started")
    now = datetime.now(UTC)
    live = keep_fixed_caps(
        current.model_copy(
            update={
                "status": ExperimentStatus.LIVE,
                "started_at": current.started_at or now,
                "updated_at": now,
            }
        ),
        current,
    )
    if needs_resolving(live):
        try:
            live, _ = await resolve_percentile_caps(context.redis, context.prefix, live, now)
        except InvalidInput as error:
            raise ApiError(409, str(error)) from error
    return await _publish(context, live)


@router.post(
    "/{experiment_id}/stop",
    response_model=ExperimentEnvelope,
    responses={**WRITE_RESPONSES, 202: {"model": AcceptedEnvelope}},
    summary="Stop a running experiment",
)
async def stop_experiment(
    experiment_id: str, project_key: Writer, context: Context
) -> ExperimentEnvelope | Response:
    """A running experiment stops enrolling (inactive); its visitors keep converting."""
    current = await experiment_in_project(context, project_key, experiment_id)
    if current.status is not ExperimentStatus.LIVE:
        raise _conflict(current, "only a running experiment can be stopped")
    stopped = current.model_copy(
        update={"status": ExperimentStatus.INACTIVE, "updated_at": datetime.now(UTC)}
    )
    return await _publish(context, stopped)


# --- helpers --------------------------------------------------------------------------


async def _publish(
    context: ApiContext, definition: ExperimentDefinition
) -> ExperimentEnvelope | Response:
    """Publish, then answer what the registry stored, or 202 with what was published."""
    if await context.publisher.publish(definition):
        return ExperimentEnvelope(data=await _experiment(context, definition))
    accepted = AcceptedEnvelope(
        data=await _experiment(context, definition),
        message=(
            f"Published to {context.settings.topic_experiments}, but no worker stored it "
            f"within {context.settings.api_write_wait_seconds:g} s (is one running?); "
            "read the experiment again to see it applied."
        ),
    )
    return Response(accepted.model_dump_json(by_alias=True), 202, media_type="application/json")


def _validated(fields: dict[str, Any]) -> ExperimentDefinition:
    """The changed definition, or a 400 naming its first problem."""
    try:
        return ExperimentDefinition.model_validate(fields)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "definition"
        raise bad_request(f"The experiment would be invalid at {where}: {first['msg']}.") from error


def _conflict(definition: ExperimentDefinition, rule: str) -> ApiError:
    return ApiError(409, f"Experiment {definition.id!r} is {STATUSES[definition.status]}: {rule}.")


def _sentence(error: DefinitionError) -> str:
    message = str(error)
    return message[:1].upper() + message[1:].rstrip(".") + "."


def _goal(definition: ExperimentDefinition, goal: str | None) -> str:
    """The goal asked for, else the primary one; 404 for a goal the experiment lacks
    (a well-formed name of nothing, as an unknown experiment id is)."""
    if goal is None:
        return definition.primary_goal.key
    if all(known.key != goal for known in definition.goals):
        raise ApiError(404, f"The experiment has no goal {goal!r}.")
    return goal


def _splits(definition: ExperimentDefinition) -> dict[str, float]:
    """Each variant's normalised share of the traffic, in percent."""
    weights = traffic_weights(definition, [variant.id for variant in definition.variants])
    return {
        variant.id: 100 * weight
        for variant, weight in zip(definition.variants, weights, strict=True)
    }


async def _goals(context: ApiContext, definition: ExperimentDefinition) -> dict[str, GoalBlock]:
    """The goal blocks of the experiment's default result (whole run, visitors)."""
    return (await context.results.document(definition, DEFAULT_QUERY)).goals


async def _experiment(context: ApiContext, definition: ExperimentDefinition) -> ExperimentOut:
    """The shape of one experiment, with its visitors as ``_count.assignments``."""
    rows = (await _goals(context, definition))[definition.primary_goal.key].variants
    splits = _splits(definition)
    kind = "ab_test" if definition.type is ExperimentType.EXPERIMENT else definition.type.value
    return ExperimentOut(
        id=definition.id,
        name=definition.name,
        description=definition.description,
        type=kind,
        status=STATUSES[definition.status],
        audienceId=definition.audience_id,
        startDate=definition.started_at,
        endDate=await ended_at(context.redis, context.prefix, definition),
        createdAt=definition.created_at,
        updatedAt=definition.updated_at,
        variants=[
            VariantOut(
                id=variant.id,
                name=variant.name,
                splitPercentage=splits[variant.id],
                flowId=variant.flow_id,
            )
            for variant in definition.variants
        ],
        _count=AssignmentCount(assignments=sum(row.visitors for row in rows)),
    )
