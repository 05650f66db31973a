"""LaunchDarkly's experiment representation (``Experiment`` of its REST API v2): the
experiment, its current, draft and previous iterations and its analysis configuration,
in LaunchDarkly's field names and units (times in Unix milliseconds, ``allocationPercent``
and thresholds as decimal strings).

Iteration status: draft → not_started, live → running, inactive → stopped (a stopped
iteration's enrolled visitors keep converting, nobody new enrols), completed → stopped.
While an iteration runs its winner is the one the worker declared (decision state);
once stopped, the one ``stopIteration`` named.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from worker.api.context import ApiContext
from worker.api.experiment_state import ended_at
from worker.events.adapters import launchdarkly_significance_threshold
from worker.events.experiment import (
    Correction,
    ExperimentDefinition,
    ExperimentStatus,
    ExperimentType,
    Goal,
    GoalType,
    Iteration,
    IterationDesign,
    Variant,
)
from worker.results.decisions import DecisionState
from worker.store.snapshots import load_decision_state

IterationStatus = Literal["not_started", "running", "stopped"]

ITERATION_STATUS: dict[ExperimentStatus, IterationStatus] = {
    ExperimentStatus.DRAFT: "not_started",
    ExperimentStatus.LIVE: "running",
    ExperimentStatus.INACTIVE: "stopped",
    ExperimentStatus.COMPLETED: "stopped",
}
CORRECTION_METHODS = {
    Correction.NONE: None,
    Correction.BONFERRONI: "bonferroni",
    Correction.HOLM: "holm",
    Correction.BH: "benjamini-hochberg",
}


class Parameter(BaseModel):
    """The flag variation a treatment serves."""

    flagKey: str | None
    variationId: str


class Treatment(BaseModel):
    """One variant, its traffic share in percent and whether it is the baseline."""

    id: str = Field(serialization_alias="_id")
    name: str
    baseline: bool
    allocationPercent: str
    parameters: list[Parameter]


class Metric(BaseModel):
    """A goal as a LaunchDarkly metric."""

    key: str
    name: str
    kind: Literal["custom"]
    isNumeric: bool


class FlagRep(BaseModel):
    """The flag configuration an iteration was created with (kept, not applied)."""

    targetingRule: str
    flagConfigVersion: int
    notInExperimentVariationId: str | None


class IterationRep(BaseModel):
    """One iteration: its design, when it ran and how it ended."""

    id: str = Field(serialization_alias="_id")
    hypothesis: str | None
    status: IterationStatus
    createdAt: int | None
    startedAt: int | None
    endedAt: int | None
    winningTreatmentId: str | None = None
    winningReason: str | None = None
    canReshuffleTraffic: bool
    flags: dict[str, FlagRep]
    reallocationFrequencyMillis: int | None = Field(description="mab only.")
    treatments: list[Treatment]
    primaryMetric: Metric
    secondaryMetrics: list[Metric]


class AnalysisConfig(BaseModel):
    """The statistics settings of the experiment."""

    bayesianThreshold: str
    significanceThreshold: str
    testDirection: str
    multipleComparisonCorrectionMethod: str | None
    sequentialTestingEnabled: bool


class Link(BaseModel):
    """Where a related resource is."""

    href: str
    type: str


class Experiment(BaseModel):
    """LaunchDarkly's experiment representation."""

    id: str = Field(serialization_alias="_id", description="The experiment key (our ids are keys).")
    key: str
    name: str
    description: str | None
    maintainerId: str | None = Field(serialization_alias="_maintainerId")
    creationDate: int | None = Field(serialization_alias="_creationDate")
    environmentKey: str
    type: str
    methodology: str
    archivedDate: int | None
    tags: list[str]
    links: dict[str, Link] = Field(serialization_alias="_links")
    holdoutId: str | None
    currentIteration: IterationRep
    draftIteration: IterationRep | None
    previousIterations: list[IterationRep]
    analysisConfig: AnalysisConfig


def current_iteration(definition: ExperimentDefinition) -> Iteration:
    """The current iteration's record; a definition published without one (native or
    "Experiments API" shape) has one iteration, "1", the whole run."""
    if definition.iteration is not None:
        return definition.iteration
    return Iteration(
        id="1",
        created_at=definition.created_at,
        started_at=definition.started_at,
        ended_at=definition.ended_at,
    )


def current_design(definition: ExperimentDefinition) -> IterationDesign:
    """The design the definition runs with now."""
    return IterationDesign(
        variants=definition.variants,
        goals=definition.goals,
        reallocation_seconds=definition.reallocation_seconds,
    )


async def experiment_rep(
    context: ApiContext, definition: ExperimentDefinition, project_key: str, environment_key: str
) -> Experiment:
    """The whole representation of ``definition`` (every expandable field included)."""
    state = DecisionState.model_validate(
        await load_decision_state(context.redis, context.prefix, definition.id)
    )
    record = current_iteration(definition)
    end = record.ended_at or await ended_at(context.redis, context.prefix, definition)
    winner, reason = record.winning_variant_id, record.winning_reason
    if winner is None and state.winner is not None:
        winner, reason = state.winner, _declared_reason(definition, state.winner)
    # A bandit's traffic follows its latest weights, not the configured split.
    weights = state.weights if definition.type is ExperimentType.MAB else None
    current = iteration_rep(
        definition,
        record.model_copy(
            update={
                "started_at": record.started_at or definition.started_at,
                "ended_at": end,
                "winning_variant_id": winner,
                "winning_reason": reason,
            }
        ),
        ITERATION_STATUS[definition.status],
        weights,
    )
    draft = definition.draft_iteration
    stats = definition.stats
    path = f"/api/v2/projects/{project_key}/environments/{environment_key}/experiments"
    return Experiment(
        id=definition.id,
        key=definition.id,
        name=definition.name,
        description=definition.description,
        maintainerId=definition.maintainer_id,
        creationDate=millis(definition.created_at),
        environmentKey=environment_key,
        type=definition.type.value,
        methodology=stats.engine.value,
        archivedDate=millis(end) if definition.status is ExperimentStatus.COMPLETED else None,
        tags=definition.tags,
        links={
            "self": Link(href=f"{path}/{definition.id}", type="application/json"),
            "parent": Link(href=path, type="application/json"),
        },
        holdoutId=definition.holdout_id,
        currentIteration=current,
        draftIteration=None if draft is None else iteration_rep(definition, draft, "not_started"),
        previousIterations=[
            iteration_rep(definition, iteration, "stopped")
            for iteration in definition.previous_iterations
        ],
        analysisConfig=AnalysisConfig(
            bayesianThreshold=decimal(stats.confidence_threshold_percent),
            significanceThreshold=launchdarkly_significance_threshold(
                stats.confidence_threshold_percent
            ),
            testDirection=stats.test_direction.value,
            multipleComparisonCorrectionMethod=CORRECTION_METHODS[stats.correction],
            sequentialTestingEnabled=stats.sequential,
        ),
    )


def iteration_rep(
    definition: ExperimentDefinition,
    iteration: Iteration,
    status: IterationStatus,
    weights: Mapping[str, float] | None = None,
) -> IterationRep:
    """One iteration in LaunchDarkly's shape; its design is its own, or the definition's
    for the current iteration (with a bandit's current ``weights``, when it has some)."""
    design = iteration.design or current_design(definition)
    primary = next(goal for goal in design.goals if goal.primary)
    period = design.reallocation_seconds
    return IterationRep(
        id=iteration.id,
        hypothesis=iteration.hypothesis,
        status=status,
        createdAt=millis(iteration.created_at),
        startedAt=millis(iteration.started_at),
        endedAt=millis(iteration.ended_at),
        winningTreatmentId=iteration.winning_variant_id,
        winningReason=iteration.winning_reason,
        canReshuffleTraffic=iteration.can_reshuffle_traffic,
        flags={
            key: FlagRep(
                targetingRule=flag.rule_id,
                flagConfigVersion=flag.flag_config_version,
                notInExperimentVariationId=flag.not_in_experiment_variation_id,
            )
            for key, flag in iteration.flags.items()
        },
        reallocationFrequencyMillis=None if period is None else round(period * 1000),
        treatments=treatments(design.variants, weights),
        primaryMetric=metric(primary),
        secondaryMetrics=[metric(goal) for goal in design.goals if not goal.primary],
    )


def treatments(
    variants: Sequence[Variant], weights: Mapping[str, float] | None = None
) -> list[Treatment]:
    """Every variant with its share of the traffic in percent: ``weights`` when given
    (a bandit's), else the configured weights, normalised."""
    shares = (
        [weights.get(variant.id, 0.0) for variant in variants]
        if weights
        else [variant.traffic_weight for variant in variants]
    )
    total = sum(shares) or 1.0
    return [
        Treatment(
            id=variant.id,
            name=variant.name,
            baseline=variant.is_control,
            allocationPercent=decimal(100 * share / total),
            parameters=[Parameter(flagKey=variant.flag_key, variationId=variant.id)],
        )
        for variant, share in zip(variants, shares, strict=True)
    ]


def metric(goal: Goal) -> Metric:
    """A goal as a custom metric; conversion goals are binary, the others numeric."""
    return Metric(
        key=goal.key, name=goal.name, kind="custom", isNumeric=goal.type is not GoalType.CONVERSION
    )


def _declared_reason(definition: ExperimentDefinition, winner: str) -> str:
    """One sentence naming the rule that declared ``winner``."""
    stats = definition.stats
    variant = definition.variant(winner)
    rule = "sequential" if stats.sequential else "fixed-horizon"
    return (
        f"{variant.name if variant else winner} met the {rule} {stats.engine.value} rule at "
        f"{decimal(stats.confidence_threshold_percent)}% on {definition.primary_goal.key}."
    )


def millis(moment: datetime | None) -> int | None:
    """Unix milliseconds, as LaunchDarkly gives times."""
    return None if moment is None else round(moment.timestamp() * 1000)


def decimal(value: float) -> str:
    """A number as LaunchDarkly's decimal strings: no trailing zeros."""
    return f"{value:.6f}".rstrip("0").rstrip(".")
