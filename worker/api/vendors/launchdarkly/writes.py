"""LaunchDarkly's experiment writes: create an experiment, create an iteration, and the
``startIteration`` / ``stopIteration`` instructions of its semantic patch.

Each write publishes the whole definition to `ab.experiments` (``publishing``) and
answers the experiment (or iteration) the registry stored, or 202 with the one published
when the registry has not stored it within ``AB_API_WRITE_WAIT_SECONDS``.

Lifecycle: starting an iteration makes the experiment live; stopping it makes it
inactive (enrolled visitors keep converting, nobody new enrols) and records the end,
the winning treatment and the reason. Starting the next iteration (a draft created by
``POST .../iterations``) moves the current one to ``previous_iterations``. Our counts
span the experiment's whole run, not one iteration, so once an experiment has run a new
iteration keeps its treatments, their allocation and its primary metric (a change would
mix two designs in one result and raise a false SRM alarm): create a new experiment.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Response
from pydantic import BaseModel, ValidationError

from worker.api.auth import experiment_in_project
from worker.api.context import ApiContext, api_context
from worker.api.errors import ApiError
from worker.api.vendors.launchdarkly.inputs import (
    ExperimentPatchInput,
    ExperimentPost,
    IterationInput,
    StartIteration,
    StopIteration,
)
from worker.api.vendors.launchdarkly.routing import RESPONSES, ld_error, ld_project, router
from worker.api.vendors.launchdarkly.shapes import (
    Experiment,
    IterationRep,
    current_design,
    current_iteration,
    experiment_rep,
    iteration_rep,
)
from worker.errors import InvalidInput
from worker.events.adapters import (
    DefinitionError,
    launchdarkly_design,
    launchdarkly_iteration,
    parse_definition,
)
from worker.events.experiment import (
    ExperimentDefinition,
    ExperimentStatus,
    ExperimentType,
    Goal,
    Iteration,
    IterationDesign,
)
from worker.results.capping import keep_fixed_caps, needs_resolving, resolve_percentile_caps
from worker.store.api_keys import EXPERIMENT_WRITE
from worker.store.definitions import load_definition

Context = Annotated[ApiContext, Depends(api_context)]
Writer = Annotated[str, Depends(ld_project(EXPERIMENT_WRITE))]
EXPERIMENTS = "/{projectKey}/environments/{environmentKey}/experiments"


WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **RESPONSES,
    409: {"model": RESPONSES[400]["model"], "description": "Not allowed in the experiment's state"},
}


@router.post(
    EXPERIMENTS,
    response_model=Experiment,
    status_code=201,
    responses={
        **WRITE_RESPONSES,
        202: {"model": Experiment, "description": "Published, not yet applied"},
    },
    summary="Create experiment (LaunchDarkly)",
)
async def create_experiment(
    projectKey: str,
    environmentKey: str,
    body: ExperimentPost,
    project_key: Writer,
    context: Context,
) -> Response:
    """A new experiment whose first iteration is not started; 409 when the key is taken
    (by any project: keys are global), 400 for a ``holdoutId`` that names no holdout of
    the project."""
    if projectKey != project_key:
        raise ld_error(404, "Project not found for this API key.")
    if await load_definition(context.redis, context.prefix, body.key) is not None:
        raise ld_error(409, f"An experiment with key {body.key!r} already exists.")
    if body.holdoutId is not None:
        await _holdout(context, project_key, body)
    now = datetime.now(UTC)
    try:
        definition = parse_definition(body.model_dump(mode="json", exclude_none=True), project_key)
    except DefinitionError as error:
        raise ld_error(400, _sentence(str(error))) from error
    assert definition.iteration is not None  # the LaunchDarkly shape always has one
    definition = definition.model_copy(
        update={
            "created_at": now,
            "updated_at": now,
            "iteration": definition.iteration.model_copy(update={"created_at": now}),
        }
    )
    return await _publish(context, definition, projectKey, environmentKey, 201)


@router.post(
    EXPERIMENTS + "/{experimentKey}/iterations",
    response_model=IterationRep,
    responses={
        **WRITE_RESPONSES,
        202: {"model": IterationRep, "description": "Published, not yet applied"},
    },
    summary="Create iteration (LaunchDarkly)",
)
async def create_iteration(
    projectKey: str,
    environmentKey: str,
    experimentKey: str,
    body: IterationInput,
    project_key: Writer,
    context: Context,
) -> Response:
    """A draft iteration (``not_started``, the experiment's ``draftIteration``), started by
    the ``startIteration`` instruction; a draft created earlier is replaced."""
    current = await _experiment(context, projectKey, project_key, experimentKey)
    if current.status is ExperimentStatus.COMPLETED:
        raise ld_error(409, f"Experiment {current.id!r} is archived: it runs no new iteration.")
    fields = body.model_dump(mode="json", exclude_none=True)
    now = datetime.now(UTC)
    try:
        design = IterationDesign.model_validate(launchdarkly_design(fields, current.type.value))
    except DefinitionError as error:
        raise ld_error(400, _sentence(str(error))) from error
    except ValidationError as error:
        raise _invalid("The iteration", error) from error
    record = launchdarkly_iteration(fields, _next_id(current))
    design = design.model_copy(update={"goals": _keep_goal_rules(design.goals, current.goals)})
    _check_design(current, design)
    try:
        draft = Iteration.model_validate(record | {"created_at": now, "design": design})
    except ValidationError as error:
        raise _invalid("The iteration", error) from error
    updated = current.model_copy(update={"draft_iteration": draft, "updated_at": now})
    if not await context.publisher.publish(updated):
        return _json(iteration_rep(updated, draft, "not_started"), 202)
    return _json(iteration_rep(updated, draft, "not_started"), 200)


@router.patch(
    EXPERIMENTS + "/{experimentKey}",
    response_model=Experiment,
    responses={
        **WRITE_RESPONSES,
        202: {"model": Experiment, "description": "Published, not yet applied"},
    },
    summary="Patch experiment (LaunchDarkly semantic patch)",
)
async def patch_experiment(
    projectKey: str,
    environmentKey: str,
    experimentKey: str,
    body: ExperimentPatchInput,
    project_key: Writer,
    context: Context,
) -> Response:
    """``startIteration`` and ``stopIteration``, in order; the experiment is published
    once, after the last, and nothing when one is refused."""
    definition = await _experiment(context, projectKey, project_key, experimentKey)
    now = datetime.now(UTC)
    for instruction in body.instructions:
        if isinstance(instruction, StartIteration):
            definition = await _started(context, definition, instruction, now)
        else:
            definition = _stopped(definition, instruction, now)
    return await _publish(context, definition, projectKey, environmentKey, 200)


async def _started(
    context: ApiContext, current: ExperimentDefinition, instruction: StartIteration, now: datetime
) -> ExperimentDefinition:
    """The experiment live with its draft iteration (or, never started, its first one)."""
    status = current.status
    draft = current.draft_iteration
    if status is ExperimentStatus.COMPLETED:
        raise ld_error(409, f"Experiment {current.id!r} is archived: it runs no new iteration.")
    if status is not ExperimentStatus.DRAFT and draft is None:
        raise ld_error(
            409,
            f"Experiment {current.id!r} has no draft iteration to start: create one "
            "(POST .../iterations) first.",
        )
    if status is ExperimentStatus.LIVE and not instruction.changeJustification:
        raise ld_error(
            409, "changeJustification is required to start an iteration while one is running."
        )
    previous = list(current.previous_iterations)
    if status is not ExperimentStatus.DRAFT:
        ended = current_iteration(current)
        previous.append(
            ended.model_copy(
                update={"ended_at": ended.ended_at or now, "design": current_design(current)}
            )
        )
    update: dict[str, Any] = {}
    starting = current_iteration(current)
    if draft is not None and draft.design is not None:
        _check_design(current, draft.design)
        update = {
            "variants": draft.design.variants,
            "goals": draft.design.goals,
            "reallocation_seconds": draft.design.reallocation_seconds,
        }
        starting = draft.model_copy(update={"design": None})
    iteration = starting.model_copy(
        update={"started_at": now, "change_justification": instruction.changeJustification}
    )
    candidate = current.model_copy(
        update=update
        | {
            "status": ExperimentStatus.LIVE,
            "started_at": current.started_at or now,
            "updated_at": now,
            "iteration": iteration,
            "draft_iteration": None,
            "previous_iterations": previous,
        }
    )
    live = _validated(candidate.model_dump(mode="json"))
    live = keep_fixed_caps(live, current)
    if needs_resolving(live):
        try:
            live, _ = await resolve_percentile_caps(context.redis, context.prefix, live, now)
        except InvalidInput as error:
            raise ld_error(409, str(error)) from error
    return live


def _stopped(
    current: ExperimentDefinition, instruction: StopIteration, now: datetime
) -> ExperimentDefinition:
    """The experiment inactive, its iteration ended with the winner named."""
    if current.status is not ExperimentStatus.LIVE:
        raise ld_error(409, f"Experiment {current.id!r} has no running iteration to stop.")
    winner = instruction.winningTreatmentId
    if winner is not None and current.variant(winner) is None:
        known = ", ".join(variant.id for variant in current.variants)
        raise ld_error(404, f"winningTreatmentId {winner!r} is not a treatment _id ({known}).")
    record = current_iteration(current)
    iteration = record.model_copy(
        update={
            "started_at": record.started_at or current.started_at,
            "ended_at": now,
            "winning_variant_id": winner,
            "winning_reason": instruction.winningReason,
        }
    )
    return current.model_copy(
        update={"status": ExperimentStatus.INACTIVE, "updated_at": now, "iteration": iteration}
    )


def _check_design(current: ExperimentDefinition, design: IterationDesign) -> None:
    """400 unless ``design`` may follow the run ``current`` has had (see the module)."""
    if current.status is ExperimentStatus.DRAFT:
        return
    before, after = _split(current.variants), _split(design.variants)
    # A bandit's split moves by design: only its arms must stay.
    same = set(before) == set(after) if current.type is ExperimentType.MAB else before == after
    if not same:
        raise ld_error(
            409,
            f"Experiment {current.id!r} has run: a new iteration keeps its treatments and "
            "their allocationPercent (its results span every iteration); create a new experiment.",
        )
    primary = next(goal.key for goal in design.goals if goal.primary)
    if primary != current.primary_goal.key:
        raise ld_error(
            409,
            f"Experiment {current.id!r} has run: a new iteration keeps its primary metric "
            f"{current.primary_goal.key!r}; create a new experiment to change it.",
        )


def _split(variants: Sequence[Any]) -> dict[str, float]:
    total = sum(variant.traffic_weight for variant in variants)
    return {variant.id: round(variant.traffic_weight / total, 9) for variant in variants}


def _keep_goal_rules(goals: Sequence[Goal], known: Sequence[Goal]) -> list[Goal]:
    """Metrics the experiment already counts keep their goal's type and cap."""
    rules = {goal.key: goal for goal in known}
    return [
        goal.model_copy(
            update={
                "name": rules[goal.key].name,
                "type": rules[goal.key].type,
                "cap": rules[goal.key].cap,
                "cap_percentile": rules[goal.key].cap_percentile,
            }
        )
        if goal.key in rules
        else goal
        for goal in goals
    ]


def _next_id(definition: ExperimentDefinition) -> str:
    """The next iteration id: one more than the highest so far ("1" is the first)."""
    iterations = [current_iteration(definition), *definition.previous_iterations]
    if definition.draft_iteration is not None:
        iterations.append(definition.draft_iteration)
    numbers = [int(item.id) for item in iterations if item.id.isdigit()]
    return str(max(numbers, default=0) + 1)


async def _holdout(context: ApiContext, project_key: str, body: ExperimentPost) -> None:
    """400 unless ``holdoutId`` names a holdout experiment of the project."""
    holdout = await load_definition(context.redis, context.prefix, body.holdoutId or "")
    if holdout is None or holdout.project_key != project_key:
        raise ld_error(404, f"holdoutId {body.holdoutId!r} names no experiment of this project.")
    if holdout.type is not ExperimentType.HOLDOUT:
        raise ld_error(
            409, f"holdoutId {body.holdoutId!r} is a {holdout.type.value}, not a holdout."
        )
    if body.type == "holdout":
        raise ld_error(400, "A holdout is not held out itself: drop holdoutId.")


async def _experiment(
    context: ApiContext, path_project: str, project_key: str, experiment_key: str
) -> ExperimentDefinition:
    return await experiment_in_project(
        context, path_project if path_project == project_key else None, experiment_key
    )


def _validated(fields: dict[str, Any]) -> ExperimentDefinition:
    """The changed definition, or a 400 naming its first problem."""
    try:
        return ExperimentDefinition.model_validate(fields)
    except ValidationError as error:
        raise _invalid("The experiment", error) from error


def _invalid(what: str, error: ValidationError) -> ApiError:
    """A 400 naming the first problem of ``what``."""
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "its root"
    return ld_error(400, f"{what} would be invalid at {where}: {first['msg']}.")


async def _publish(
    context: ApiContext,
    definition: ExperimentDefinition,
    project_key: str,
    environment_key: str,
    status_code: int,
) -> Response:
    """Publish, then answer what the registry stored, or 202 with what was published."""
    stored = await context.publisher.publish(definition)
    rep = await experiment_rep(context, definition, project_key, environment_key)
    return _json(rep, status_code if stored else 202)


def _json(model: BaseModel, status_code: int) -> Response:
    return Response(
        model.model_dump_json(by_alias=True), status_code, media_type="application/json"
    )


def _sentence(message: str) -> str:
    message = message.strip().splitlines()[0] if message.strip() else "The request is invalid"
    return message[:1].upper() + message[1:].rstrip(".") + "."
