"""Winner rules: previous decision state + a new default result → decision events (pure).

A variant *passes* when, on the primary goal against the control, its lift points
the better way and its frequentist test (the engine's own, or for the Bayesian engine
the same comparison run frequentist) is significant: adjusted p-value below alpha
and adjusted interval clear of zero on the better side. The Bayesian engine also
needs its chance to win at the threshold. Declaring the best of k-1 treatments is a
selection, so the p-value used is at least Holm's across the treatments even when
no correction is configured: a winner is wrong with probability at most alpha.

The test must be read under a valid stopping rule: with ``sequential`` it is the
always-valid confidence sequence, read at any interval; without, a fixed-horizon
test is read only once every arm has ``planned_sample_size`` units (never without a
plan). A winner is declared only while no SRM alarm is raised.

Each event carries an idempotency key ``{experiment}:{kind}:{variant or -}:{n}``,
where n counts that kind for the experiment, so a decision recomputed from the same
state (a restart, another worker) has the same key and is published once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from worker.events.experiment import Engine, ExperimentDefinition, ExperimentType, TestDirection
from worker.results.contract import (
    AllocationUpdated,
    AnyDecisionEvent,
    FrequentistCheck,
    GoalBlock,
    KameleoonRule,
    ResultDocument,
    Snapshot,
    SrmDetected,
    VariantRow,
    VariantStatistics,
    WinnerDeclared,
    WinnerRule,
    WinnerWithdrawn,
)
from worker.results.experiment_result import alpha
from worker.results.query import ResultQuery
from worker.stats.corrections import adjust_p_values

ALLOCATION_TOLERANCE = 0.01
"""Bandit weights that move less than this (per arm) are not republished."""

_DEFAULT_QUERY = ResultQuery()


class DecisionState(BaseModel):
    """What one round of decisions leaves for the next (stored in Redis beside the
    outbox; an experiment without decisions yet starts from the defaults).

    Unknown fields are ignored, not refused: a state stored by another version of the
    worker still loads, in the worker and in the API that reads the winner from it.
    """

    model_config = ConfigDict(frozen=True)

    winner: str | None = None
    srm_alarm: bool = False
    weights: dict[str, float] | None = None
    sequence: dict[str, int] = Field(default_factory=dict)
    """Event kind → how many events of it the experiment has had."""


@dataclass(frozen=True)
class Decisions:
    """Events to publish, in order, and the state to store with them."""

    events: list[AnyDecisionEvent]
    state: DecisionState


def decide(definition: ExperimentDefinition, state: DecisionState, snapshot: Snapshot) -> Decisions:
    """The decision events of ``snapshot`` (of the default query).

    ``state`` is the previous ``Decisions.state``. The same state and snapshot always
    give the same events and keys.
    """
    result = snapshot.document
    if result.query != _DEFAULT_QUERY:
        raise ValueError("decisions are taken on the default result only")
    primary = result.goals[definition.primary_goal.key]
    ledger = _Ledger(definition, snapshot.computed_at, state.sequence)
    srm = result.srm_alarm
    if srm and not state.srm_alarm:
        ledger.events.append(
            SrmDetected(
                **ledger.header("srm_detected", None),
                srm_p_value=result.srm_p_value,
                srm_sequential_p_value=result.srm_sequential_p_value,
                visitors={v.variant_id: v.visitors for v in primary.variants},
                expected_weights=_configured_weights(primary.variants),
            )
        )
    winner = _next_winner(definition, result, primary, state.winner, srm, ledger)
    weights = state.weights
    if definition.type is ExperimentType.MAB:
        weights = _next_weights(primary, weights, ledger)
    return Decisions(
        ledger.events,
        DecisionState(winner=winner, srm_alarm=srm, weights=weights, sequence=ledger.sequence),
    )


class _Ledger:
    """Numbers the events of one decision round per kind, continuing the state's count."""

    def __init__(
        self, definition: ExperimentDefinition, computed_at: datetime, sequence: Mapping[str, int]
    ) -> None:
        self.definition = definition
        self.computed_at = computed_at
        self.sequence = dict(sequence)
        self.events: list[AnyDecisionEvent] = []

    def header(self, kind: str, variant_id: str | None) -> dict[str, Any]:
        """The fields every event starts with, for the next event of ``kind``."""
        number = self.sequence[kind] = self.sequence.get(kind, 0) + 1
        experiment = self.definition.id
        return {
            "kind": kind,
            "experiment_id": experiment,
            "variant_id": variant_id,
            "goal": self.definition.primary_goal.key,
            "sequence": number,
            "idempotency_key": f"{experiment}:{kind}:{variant_id or '-'}:{number}",
            "computed_at": self.computed_at,
        }


def _next_winner(
    definition: ExperimentDefinition,
    result: ResultDocument,
    primary: GoalBlock,
    winner: str | None,
    srm: bool,
    ledger: _Ledger,
) -> str | None:
    """Withdraw a winner that stopped passing (or under SRM), then declare one if due.

    A declared winner stays while it passes, even if another variant overtakes it:
    downstream services act on a winner, so it must not flap.
    """
    passing = passing_variants(definition, primary.variants)
    if winner is not None and (srm or winner not in passing):
        ledger.events.append(
            WinnerWithdrawn(
                **ledger.header("winner_withdrawn", winner),
                reason="srm_alarm" if srm else "threshold_no_longer_met",
                **_numbers(result, primary, winner),
            )
        )
        winner = None
    if winner is None and passing and not srm:
        winner = passing[0]
        ledger.events.append(
            WinnerDeclared(
                **ledger.header("winner_declared", winner),
                **_numbers(result, primary, winner),
                rule=winner_rule(definition, primary, winner),
            )
        )
    return winner


def _next_weights(
    primary: GoalBlock, weights: dict[str, float] | None, ledger: _Ledger
) -> dict[str, float] | None:
    """Publish the bandit's Thompson weights when they moved beyond the tolerance."""
    if not primary.bandit_updated or primary.bandit_weights is None:
        return weights
    new_weights = dict(primary.bandit_weights)
    previous = weights or _configured_weights(primary.variants)
    if not _moved(previous, new_weights):
        return weights
    ledger.events.append(
        AllocationUpdated(
            **ledger.header("allocation_updated", None),
            weights=new_weights,
            previous_weights=previous,
            probability_best=primary.probability_best,
        )
    )
    return new_weights


def passing_variants(definition: ExperimentDefinition, variants: Sequence[VariantRow]) -> list[str]:
    """Variant ids that pass the winner rule, best improvement first."""
    stats = definition.stats
    planned = stats.planned_sample_size
    horizon_reached = planned is not None and all(v.units >= planned for v in variants)
    if not stats.sequential and not horizon_reached:
        return []
    higher_is_better = stats.test_direction is not TestDirection.LESS
    treatments = [(v.variant_id, v.statistics) for v in variants if v.statistics is not None]
    tests = [_frequentist(definition, statistics) for _, statistics in treatments]
    holm = adjust_p_values([test.p_value if test else None for test in tests], "holm")
    lifts = {
        variant_id: statistics.lift
        for (variant_id, statistics), test, holm_p in zip(treatments, tests, holm, strict=True)
        if statistics.lift is not None
        and _passes(definition, statistics, test, holm_p, higher_is_better)
    }
    sign = 1 if higher_is_better else -1
    return sorted(lifts, key=lambda variant_id: sign * lifts[variant_id], reverse=True)


def _frequentist(
    definition: ExperimentDefinition, statistics: VariantStatistics
) -> VariantStatistics | FrequentistCheck | None:
    """The frequentist test of a comparison: the engine's own, or the Bayesian one's check."""
    if definition.stats.engine is Engine.BAYESIAN:
        return statistics.frequentist_check
    return statistics


def _passes(
    definition: ExperimentDefinition,
    statistics: VariantStatistics,
    test: VariantStatistics | FrequentistCheck | None,
    holm_p_value: float | None,
    higher_is_better: bool,
) -> bool:
    stats = definition.stats
    lift = statistics.lift
    if lift is None or (lift <= 0 if higher_is_better else lift >= 0):
        return False
    if stats.engine is Engine.BAYESIAN:
        chance = statistics.chance_to_win
        if chance is None or chance < stats.confidence_threshold_percent / 100.0:
            return False
    if test is None:
        return False
    p_value = test.p_value_adjusted
    interval = test.ci_adjusted
    if p_value is None or holm_p_value is None or interval is None:
        return False
    if max(p_value, holm_p_value) >= alpha(definition):
        return False
    lower, upper = interval
    if higher_is_better:
        return lower is not None and lower > 0
    return upper is not None and upper < 0


def winner_rule(definition: ExperimentDefinition, goal: GoalBlock, variant_id: str) -> WinnerRule:
    """Which rule declared the winner, and Kameleoon's rule on the same numbers.

    Ours: the threshold under sequential inference (or a fixed-horizon test at the
    planned sample), a positive improvement, Holm across arms, no SRM alarm.
    Kameleoon's: reliability (1 - one-sided p, or the chance to beat the reference)
    above the threshold and a positive improvement; ours implies it.
    """
    statistics = next(v for v in goal.variants if v.variant_id == variant_id).statistics
    threshold = definition.stats.confidence_threshold_percent
    reliability = statistics.reliability if statistics else None
    improvement = statistics.improvement if statistics else None
    return WinnerRule(
        name="sequential" if definition.stats.sequential else "fixed_horizon",
        engine=definition.stats.engine,
        threshold_percent=threshold,
        kameleoon=KameleoonRule(
            reliability_percent=None if reliability is None else 100 * reliability,
            improvement_percent=improvement,
            met=reliability is not None
            and 100 * reliability >= threshold
            and improvement is not None
            and improvement > 0,
        ),
    )


def _moved(previous: Mapping[str, float], new: Mapping[str, float]) -> bool:
    return any(abs(new[k] - previous.get(k, 0.0)) > ALLOCATION_TOLERANCE for k in new)


def _numbers(result: ResultDocument, goal: GoalBlock, variant_id: str) -> dict[str, Any]:
    """The rows behind a winner decision: the variant, the reference, the checks."""
    rows = {v.variant_id: v for v in goal.variants}
    return {
        "reference_variant": result.reference_variant,
        "variant": rows[variant_id],
        "reference": rows[result.reference_variant],
        "srm_p_value": result.srm_p_value,
        "settings": result.settings,
    }


def _configured_weights(variants: Sequence[VariantRow]) -> dict[str, float]:
    return {v.variant_id: v.traffic_weight for v in variants}
