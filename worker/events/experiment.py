"""Experiment definitions: topic `ab.experiments`, key = experiment id, compacted."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from worker.events.fields import Identifier, ShortText


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


class Goal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: Identifier
    name: ShortText
    type: GoalType = GoalType.CONVERSION
    primary: bool = False


class StatsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engine: Engine = Engine.BAYESIAN
    confidence_threshold_percent: Annotated[float, Field(gt=50, lt=100)] = 95.0
    test_direction: TestDirection = TestDirection.TWO_SIDED
    correction: Correction = Correction.NONE
    sequential: bool = True
    sequential_tuning: Annotated[int, Field(ge=1)] = 5000
    planned_sample_size: Annotated[int, Field(ge=1)] | None = None


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
        return self

    @property
    def control(self) -> Variant:
        return next(variant for variant in self.variants if variant.is_control)

    @property
    def primary_goal(self) -> Goal:
        return next(goal for goal in self.goals if goal.primary)

    def variant(self, variant_id: str) -> Variant | None:
        return next((variant for variant in self.variants if variant.id == variant_id), None)

    @property
    def accepts_assignments(self) -> bool:
        return self.status is ExperimentStatus.LIVE

    @property
    def accepts_conversions(self) -> bool:
        # Inactive experiments stop enrolling but keep counting their enrolled visitors.
        return self.status in (ExperimentStatus.LIVE, ExperimentStatus.INACTIVE)
