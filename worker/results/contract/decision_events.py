"""Decision events: topic `ab.winners`, key = experiment id, one event per decision change.

Every event starts with the same fields (``kind`` first, which tells them apart) and
carries an ``idempotency_key``: a repeat after a crash has the same key, so a consumer
drops it by the key. Field order is the order of the published JSON.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, RootModel

from worker.events.experiment import Engine
from worker.results.contract.document import CONTRACT, AnalysisSettings, VariantRow
from worker.results.contract.snapshot import IsoTime

ReferenceVariant = Annotated[str, Field(description="The variant the others are compared with.")]
DecidedRow = Annotated[
    VariantRow, Field(description="The variant's row of the primary goal in the snapshot.")
]
ReferenceRow = Annotated[
    VariantRow, Field(description="The reference's row of the primary goal in the snapshot.")
]
Weights = Annotated[dict[str, float], Field(description="Variant id → share of traffic.")]


class DecisionEvent(BaseModel):
    """The fields every decision event starts with."""

    model_config = CONTRACT

    kind: str
    experiment_id: str
    variant_id: str | None = Field(description="The variant decided on; null for the experiment.")
    goal: str = Field(description="The primary goal, on which every decision is taken.")
    sequence: int = Field(description="How many events of this kind the experiment has had.")
    idempotency_key: str = Field(
        description="{experiment}:{kind}:{variant or -}:{sequence}; the same for a repeat."
    )
    computed_at: IsoTime = Field(description="The computed_at of the snapshot decided on.")


class SrmDetected(DecisionEvent):
    """The split of visitors departs from the configured weights (sample-ratio mismatch)."""

    kind: Literal["srm_detected"]
    srm_p_value: float | None
    srm_sequential_p_value: float | None = Field(description="The test the alarm is raised on.")
    visitors: dict[str, int] = Field(description="Variant id → visitors.")
    expected_weights: Weights


class SrmCleared(DecisionEvent):
    """An operator reset a raised SRM alarm (`python -m worker experiments reset-srm`);
    an alarm never clears by itself."""

    kind: Literal["srm_cleared"]


class WinnerWithdrawn(DecisionEvent):
    """A declared winner stopped passing the rule, or an SRM alarm was raised."""

    kind: Literal["winner_withdrawn"]
    reason: Literal["srm_alarm", "threshold_no_longer_met"]
    reference_variant: ReferenceVariant
    variant: DecidedRow
    reference: ReferenceRow
    srm_p_value: float | None
    settings: AnalysisSettings


class KameleoonRule(BaseModel):
    """Kameleoon's rule on the same numbers: reliability above the threshold and a
    positive improvement (ours implies it)."""

    model_config = CONTRACT

    reliability_percent: float | None
    improvement_percent: float | None
    met: bool


class WinnerRule(BaseModel):
    """Which rule declared the winner."""

    model_config = CONTRACT

    name: Literal["sequential", "fixed_horizon"]
    engine: Engine
    threshold_percent: float
    kameleoon: KameleoonRule


class WinnerDeclared(DecisionEvent):
    """A variant passes the winner rule on the primary goal."""

    kind: Literal["winner_declared"]
    reference_variant: ReferenceVariant
    variant: DecidedRow
    reference: ReferenceRow
    srm_p_value: float | None
    settings: AnalysisSettings
    rule: WinnerRule


class AllocationUpdated(DecisionEvent):
    """A bandit's Thompson-sampling weights moved beyond the tolerance."""

    kind: Literal["allocation_updated"]
    weights: Weights
    previous_weights: Weights
    probability_best: dict[str, float] | None = Field(
        description="Variant id → chance to be the best arm."
    )


AnyDecisionEvent = Annotated[
    SrmDetected | SrmCleared | WinnerWithdrawn | WinnerDeclared | AllocationUpdated,
    Field(discriminator="kind"),
]


class WinnersRecord(RootModel[AnyDecisionEvent]):
    """Topic `ab.winners`, key = experiment id: one decision event, told apart by ``kind``."""
