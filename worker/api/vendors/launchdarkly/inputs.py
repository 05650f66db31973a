"""The request bodies of LaunchDarkly's experiment writes (its REST API v2 names):
``ExperimentPost``, ``IterationInput`` and the semantic patch of ``startIteration`` and
``stopIteration``. Fields we cannot honour are refused with a reason, not ignored."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from worker.events.fields import Identifier, LongText, ShortText

FORBID = ConfigDict(extra="forbid")


class MetricInput(BaseModel):
    """A metric of the iteration: one of our goal keys (metric groups are not ours)."""

    model_config = FORBID

    key: Identifier
    isGroup: Literal[False] = Field(False, description="Metric groups (funnels) are not supported.")
    primary: bool | None = Field(
        None, description="Deprecated by LaunchDarkly: use primarySingleMetricKey."
    )


class TreatmentParameterInput(BaseModel):
    """The flag variation the treatment serves; its ``variationId`` is the variant id."""

    model_config = FORBID

    flagKey: Identifier
    variationId: Identifier


PERCENT_PATTERN = r"^(?:100(?:\.0+)?|[0-9]{1,2}(?:\.[0-9]+)?)$"
"""A percentage as a decimal string, 0 to 100 (``50``, ``33.3``, ``100.0``)."""


class TreatmentInput(BaseModel):
    """One treatment: a variant, whether it is the baseline and its traffic share."""

    model_config = FORBID

    name: ShortText
    baseline: bool
    allocationPercent: str = Field(
        description="A decimal string, 0 to 100.", pattern=PERCENT_PATTERN
    )
    parameters: Annotated[list[TreatmentParameterInput], Field(min_length=1, max_length=1)]


class FlagInput(BaseModel):
    """The flag configuration of the iteration (kept, not applied)."""

    model_config = FORBID

    ruleId: ShortText
    flagConfigVersion: int
    notInExperimentVariationId: Identifier | None = None


class IterationInput(BaseModel):
    """LaunchDarkly's ``IterationInput``."""

    model_config = FORBID

    hypothesis: LongText
    canReshuffleTraffic: bool = True
    metrics: Annotated[list[MetricInput], Field(min_length=1, max_length=50)]
    primarySingleMetricKey: Identifier | None = None
    treatments: Annotated[list[TreatmentInput], Field(min_length=1, max_length=50)]
    flags: Annotated[dict[ShortText, FlagInput], Field(max_length=20)] = Field(default_factory=dict)
    randomizationUnit: Literal["user"] | None = Field(
        None, description="The unit is always the visitor (the events' visitor_id)."
    )
    reallocationFrequencyMillis: Annotated[int, Field(ge=1)] | None = Field(
        None, description="mab only: how often the bandit's traffic is reallocated."
    )

    @model_validator(mode="after")
    def _consistent(self) -> IterationInput:
        if sum(treatment.baseline for treatment in self.treatments) != 1:
            raise ValueError("exactly one treatment must have baseline: true")
        total = sum(Decimal(treatment.allocationPercent) for treatment in self.treatments)
        if total != 100:
            raise ValueError(f"the treatments' allocationPercent must sum to 100, got {total}")
        ids = [treatment.parameters[0].variationId for treatment in self.treatments]
        if len(set(ids)) != len(ids):
            raise ValueError("each treatment must serve its own variationId")
        keys = [metric.key for metric in self.metrics]
        if self.primarySingleMetricKey is not None and self.primarySingleMetricKey not in keys:
            raise ValueError(
                f"primarySingleMetricKey {self.primarySingleMetricKey!r} is not a metric"
            )
        return self


class AnalysisConfigInput(BaseModel):
    """LaunchDarkly's ``AnalysisConfigInput`` (thresholds as decimal strings)."""

    model_config = FORBID

    bayesianThreshold: str | None = None
    significanceThreshold: str | None = None
    testDirection: Literal["two-sided", "one-sided", "two_sided", "greater", "less"] | None = None
    multipleComparisonCorrectionMethod: (
        Literal["bonferroni", "holm", "benjamini-hochberg"] | None
    ) = None
    sequentialTestingEnabled: bool | None = None


class ExperimentPost(BaseModel):
    """LaunchDarkly's ``ExperimentPost``: the experiment and its first iteration."""

    model_config = FORBID

    key: Identifier
    name: ShortText
    description: LongText | None = None
    maintainerId: ShortText | None = None
    iteration: IterationInput
    holdoutId: Identifier | None = None
    tags: Annotated[list[ShortText], Field(max_length=50)] = Field(default_factory=list)
    methodology: Literal["bayesian", "frequentist"] | None = None
    analysisConfig: AnalysisConfigInput | None = None
    dataSource: Literal["launchdarkly"] | None = Field(
        None, description="Metric data always comes from the events this worker counts."
    )
    type: Literal["experiment", "mab", "holdout"] = "experiment"


class StartIteration(BaseModel):
    """Start the draft iteration (or a never-started experiment's first one)."""

    model_config = FORBID

    kind: Literal["startIteration"]
    changeJustification: LongText | None = Field(
        None, description="Required when an iteration is running."
    )


class StopIteration(BaseModel):
    """Stop the running iteration, naming the winning treatment and why."""

    model_config = FORBID

    kind: Literal["stopIteration"]
    winningTreatmentId: Identifier | None = None
    winningReason: LongText | None = None


class ExperimentPatchInput(BaseModel):
    """A semantic patch: instructions applied in order, published once, all or none."""

    model_config = FORBID

    comment: LongText | None = None
    instructions: Annotated[
        list[Annotated[StartIteration | StopIteration, Field(discriminator="kind")]],
        Field(min_length=1, max_length=10),
    ]
