"""Experiment definitions: topic `ab.experiments`, key = experiment id, compacted."""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from worker.events.fields import Identifier, LongText, ShortText


class ExperimentStatus(StrEnum):
    DRAFT = "draft"
    LIVE = "live"
    INACTIVE = "inactive"
    COMPLETED = "completed"


class ExperimentType(StrEnum):
    EXPERIMENT = "experiment"
    MAB = "mab"
    HOLDOUT = "holdout"


class GoalType(StrEnum):
    CONVERSION = "conversion"
    REVENUE = "revenue"
    COUNT = "count"


class Engine(StrEnum):
    BAYESIAN = "bayesian"
    FREQUENTIST = "frequentist"


class TestDirection(StrEnum):
    TWO_SIDED = "two_sided"
    GREATER = "greater"
    LESS = "less"


class Correction(StrEnum):
    NONE = "none"
    BONFERRONI = "bonferroni"
    HOLM = "holm"
    BH = "bh"


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Identifier
    name: ShortText
    is_control: bool = False
    traffic_weight: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0
    flow_id: Identifier | None = Field(
        default=None, description='The "Experiments API" flowId the variant serves.'
    )
    flag_key: Identifier | None = Field(
        default=None,
        description="LaunchDarkly: the flag whose variation (the variant id) the treatment "
        "serves (kept, not applied).",
    )


class Goal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: Identifier
    name: ShortText
    type: GoalType = GoalType.CONVERSION
    primary: bool = False
    cap: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        default=None,
        description=(
            "Revenue and count goals: each visitor's value counts as at most this much "
            "(capping, applied as events are counted). Fixed once the experiment is live."
        ),
    )
    cap_percentile: Annotated[float, Field(gt=50, lt=100, allow_inf_nan=False)] | None = Field(
        default=None,
        description=(
            "Revenue and count goals: cap at this percentile of the per-visitor values of the "
            "goal before launch. `python -m worker experiments apply` resolves it into `cap` "
            "when it publishes the experiment live."
        ),
    )

    @model_validator(mode="after")
    def _cap_needs_a_value(self) -> Goal:
        # A conversion goal counts 0 or 1 per visitor: a cap would mean nothing.
        capped = self.cap is not None or self.cap_percentile is not None
        if capped and self.type is GoalType.CONVERSION:
            raise ValueError(f"goal {self.key!r}: cap applies to revenue and count goals only")
        return self


class Prior(BaseModel):
    """A proper Gaussian prior on the relative lift, as ``python -m worker stats`` takes it.

    ``mean`` is a fraction (0.02 is +2 %) above -1, since no lift reaches -100 %;
    ``variance`` is on the same scale (0.09 is a standard deviation of 30 %).
    """

    model_config = ConfigDict(extra="forbid")

    mean: Annotated[float, Field(gt=-1, allow_inf_nan=False)] = 0.0
    variance: Annotated[float, Field(gt=0, allow_inf_nan=False)]


class StatsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engine: Engine = Engine.BAYESIAN
    confidence_threshold_percent: Annotated[float, Field(gt=50, lt=100)] = 95.0
    test_direction: TestDirection = TestDirection.TWO_SIDED
    correction: Correction = Correction.NONE
    sequential: bool = True
    # Unset: derived from planned_sample_size when there is one (see the results).
    sequential_tuning: Annotated[int, Field(ge=1)] | None = None
    planned_sample_size: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Units per arm."
    )
    prior: Prior | None = Field(default=None, description="Bayesian engine only; flat if unset.")
    minimum_detectable_effect: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        default=0.05, description="Relative lift the power numbers plan for (0.05 is +5 %)."
    )
    cuped_days: Annotated[int, Field(ge=0, le=90)] = Field(
        default=14,
        description=(
            "CUPED: a visitor's value of the same goal in this many days before entry is "
            "the covariate (0 turns variance reduction off). Fixed once the experiment is live."
        ),
    )

    @model_validator(mode="after")
    def _prior_needs_posterior(self) -> StatsSettings:
        # A frequentist test has no prior: accepting one would silently ignore it.
        if self.prior is not None and self.engine is not Engine.BAYESIAN:
            raise ValueError("stats.prior applies to the bayesian engine only")
        return self


class IterationFlag(BaseModel):
    """LaunchDarkly's flag configuration of an iteration (``FlagInput``), kept, not applied."""

    model_config = ConfigDict(extra="forbid")

    rule_id: ShortText
    flag_config_version: int
    not_in_experiment_variation_id: ShortText | None = None


class IterationDesign(BaseModel):
    """What an iteration other than the current one runs with (the current iteration's
    design is the definition's own variants, goals and reallocation period)."""

    model_config = ConfigDict(extra="forbid")

    variants: Annotated[list[Variant], Field(min_length=1, max_length=50)]
    goals: Annotated[list[Goal], Field(min_length=1, max_length=50)]
    reallocation_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None


class Iteration(BaseModel):
    """One run of the experiment in LaunchDarkly's terms: an iteration is started, stopped
    (with the winner chosen, if any) and followed by the next one."""

    model_config = ConfigDict(extra="forbid")

    id: Identifier
    hypothesis: LongText | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    winning_variant_id: Identifier | None = None
    winning_reason: LongText | None = None
    change_justification: LongText | None = None
    can_reshuffle_traffic: bool = True
    flags: Annotated[dict[ShortText, IterationFlag], Field(max_length=20)] = Field(
        default_factory=dict
    )
    design: IterationDesign | None = Field(
        default=None,
        description="Set on draft and previous iterations; null on the current one, whose "
        "design is the definition's.",
    )


def holdout_bucket(holdout_id: str, visitor_id: str) -> float:
    """The visitor's place in [0, 1) for the holdout ``holdout_id``: the first 15 hex digits
    of SHA-1("{holdout_id}.{visitor_id}") over 0xFFFFFFFFFFFFFFF (LaunchDarkly's bucketing
    rule, with the holdout id as the seed), so every producer can compute it."""
    digest = hashlib.sha1(f"{holdout_id}.{visitor_id}".encode(), usedforsecurity=False)
    return int(digest.hexdigest()[:15], 16) / 0xFFFFFFFFFFFFFFF


class ExperimentDefinition(BaseModel):
    """The native definition; LaunchDarkly and "Experiments API" shapes are adapted to it."""

    model_config = ConfigDict(extra="forbid")

    id: Identifier
    project_key: Identifier
    name: ShortText
    status: ExperimentStatus = ExperimentStatus.DRAFT
    type: ExperimentType = ExperimentType.EXPERIMENT
    variants: Annotated[list[Variant], Field(min_length=1, max_length=50)]
    goals: Annotated[list[Goal], Field(min_length=1, max_length=50)]
    stats: StatsSettings = Field(default_factory=StatsSettings)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    description: LongText | None = None
    audience_id: Identifier | None = Field(
        default=None, description='The "Experiments API" audienceId (kept, not applied).'
    )
    created_at: datetime | None = Field(
        default=None, description="Set by the HTTP API when it creates the experiment."
    )
    updated_at: datetime | None = Field(
        default=None, description="Set by the HTTP API at each change it publishes."
    )
    maintainer_id: ShortText | None = Field(
        default=None, description="LaunchDarkly's maintainerId (kept, not applied)."
    )
    tags: Annotated[list[ShortText], Field(max_length=50)] = Field(default_factory=list)
    holdout_id: Identifier | None = Field(
        default=None,
        description="The holdout experiment (type holdout) whose held-out visitors this "
        "experiment does not enrol.",
    )
    reallocation_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        default=None,
        description="mab only: a bandit's weights are looked at, and reallocated when they "
        "moved, at most once per this many seconds (unset: at every results interval).",
    )
    iteration: Iteration | None = Field(
        default=None, description="The current iteration (LaunchDarkly); null for others."
    )
    draft_iteration: Iteration | None = Field(
        default=None, description="An iteration created and not started yet."
    )
    previous_iterations: Annotated[list[Iteration], Field(max_length=200)] = Field(
        default_factory=list, description="The iterations before the current one, oldest first."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentDefinition:
        variant_ids = [variant.id for variant in self.variants]
        if len(set(variant_ids)) != len(variant_ids):
            raise ValueError("variant ids must be unique")
        if sum(variant.is_control for variant in self.variants) != 1:
            raise ValueError("exactly one variant must have is_control: true")
        if sum(variant.traffic_weight for variant in self.variants) <= 0:
            raise ValueError("traffic weights must not all be zero")
        goal_keys = [goal.key for goal in self.goals]
        if len(set(goal_keys)) != len(goal_keys):
            raise ValueError("goal keys must be unique")
        if sum(goal.primary for goal in self.goals) != 1:
            raise ValueError("exactly one goal must have primary: true")
        if self.reallocation_seconds is not None and self.type is not ExperimentType.MAB:
            raise ValueError("reallocation_seconds applies to mab experiments only")
        if self.holdout_id is not None and (
            self.holdout_id == self.id or self.type is ExperimentType.HOLDOUT
        ):
            raise ValueError("a holdout is not held out itself: holdout_id must name another")
        if self.iteration is not None and self.iteration.design is not None:
            raise ValueError("the current iteration's design is the definition's own")
        return self

    @property
    def control(self) -> Variant:
        return next(variant for variant in self.variants if variant.is_control)

    @property
    def primary_goal(self) -> Goal:
        return next(goal for goal in self.goals if goal.primary)

    def unfixed_caps(self) -> list[str]:
        """Goals of a live definition with a percentile cap never turned into ``cap``
        (``experiments apply`` fixes it at launch): counting would start uncapped, and a
        live experiment's cap cannot change later."""
        if not self.accepts_assignments:
            return []
        return [
            goal.key for goal in self.goals if goal.cap_percentile is not None and goal.cap is None
        ]

    def counting_rule_changes(self, update: ExperimentDefinition) -> list[str]:
        """How `update` would change the rules this experiment's events are counted by:
        the type or cap of a goal both define, and stats.cuped_days. Once the experiment
        is live these are fixed (its counters would mix two rules); empty when none change.
        """
        changes = []
        updated = {goal.key: goal for goal in update.goals}
        for goal in self.goals:
            new = updated.get(goal.key)
            if new is None:
                continue
            if new.type is not goal.type:
                changes.append(f"goal {goal.key!r} type {goal.type.value} -> {new.type.value}")
            if new.cap != goal.cap:
                changes.append(f"goal {goal.key!r} cap {goal.cap} -> {new.cap}")
        if update.stats.cuped_days != self.stats.cuped_days:
            changes.append(f"stats.cuped_days {self.stats.cuped_days} -> {update.stats.cuped_days}")
        return changes

    def holds_out(self, visitor_id: str) -> bool:
        """A holdout's rule: the visitor is in the held-out share, the control's share of
        the traffic, when its :func:`holdout_bucket` falls below that share."""
        share = self.control.traffic_weight / sum(v.traffic_weight for v in self.variants)
        return holdout_bucket(self.id, visitor_id) < share

    def variant(self, variant_id: str) -> Variant | None:
        return next((variant for variant in self.variants if variant.id == variant_id), None)

    @property
    def accepts_assignments(self) -> bool:
        return self.status is ExperimentStatus.LIVE

    @property
    def accepts_conversions(self) -> bool:
        # Inactive experiments stop enrolling but keep counting their enrolled visitors.
        return self.status in (ExperimentStatus.LIVE, ExperimentStatus.INACTIVE)
