"""Winner rules: previous decision state + a new default result → decision events (pure).

A variant *passes* when, on the primary goal against the control, its lift points
the better way and its frequentist test (the engine's own, or for the Bayesian engine
the same comparison run frequentist) is significant: adjusted p-value below alpha
and adjusted interval clear of zero on the better side. The Bayesian engine also
needs its chance to win at the threshold. Declaring the best of k-1 treatments is a
selection, so the p-value used is at least Holm's across the treatments even when
no correction is configured: a winner is wrong with probability at most alpha.

The test must be read under a valid stopping rule. With ``sequential`` it is the
always-valid confidence sequence, read at any interval: its p-value may be read at
its running minimum and its interval at the running intersection, so the evidence
for a variant is accumulated in the decision state and, once sufficient, stays
sufficient (a winner does not flap with noise). Without, a fixed-horizon test is read
**once**, at the first look where every arm has ``planned_sample_size`` units (never
without a plan); its outcome is kept in the state and later looks only report. An
SRM alarm, once raised, stays raised (only an operator resets it, `python -m worker
experiments reset-srm`), and no winner is declared, or kept, under it.

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
    SrmCleared,
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


class Evidence(BaseModel):
    """A sequential comparison's evidence so far, in the units of its ``lift_type``."""

    model_config = ConfigDict(frozen=True)

    lift_type: str
    p_value: float
    """Running minimum of the larger of the adjusted and the Holm p-value."""
    lower: float | None
    """Running maximum of the adjusted interval's lower bound."""
    upper: float | None
    """Running minimum of the adjusted interval's upper bound."""


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
    evidence: dict[str, Evidence] = Field(default_factory=dict)
    """Variant → its sequential evidence so far."""
    fixed_horizon_passing: list[str] | None = None
    """The fixed-horizon test's passing variants, read once at the planned sample."""
    allocation_looked_at: datetime | None = None
    """When a bandit's weights were last looked at (``reallocation_seconds`` apart)."""


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
    srm = result.srm_alarm or state.srm_alarm
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
    verdict = _verdict(definition, primary.variants, state)
    winner = _next_winner(definition, result, primary, state.winner, srm, verdict, ledger)
    weights = state.weights
    looked_at = state.allocation_looked_at
    if definition.type is ExperimentType.MAB and _allocation_due(definition, looked_at, snapshot):
        weights = _next_weights(primary, weights, ledger)
        if primary.bandit_updated:
            looked_at = snapshot.computed_at
    return Decisions(
        ledger.events,
        DecisionState(
            winner=winner,
            srm_alarm=srm,
            weights=weights,
            sequence=ledger.sequence,
            evidence=verdict.evidence,
            fixed_horizon_passing=verdict.fixed_horizon_passing,
            allocation_looked_at=looked_at,
        ),
    )


def _allocation_due(
    definition: ExperimentDefinition, looked_at: datetime | None, snapshot: Snapshot
) -> bool:
    """Whether a bandit's weights are looked at in this snapshot: always without a
    reallocation period, else once the period has passed since the last look (a look is
    one where the bandit computed weights, whether or not they moved enough to publish)."""
    period = definition.reallocation_seconds
    if period is None or looked_at is None:
        return True
    return (snapshot.computed_at - looked_at).total_seconds() >= period


def reset_srm(definition: ExperimentDefinition, state: DecisionState, at: datetime) -> Decisions:
    """An operator's reset of a raised SRM alarm: `srm_cleared`, and decisions resume.

    Nothing else clears an alarm: the anytime-valid test's p-value is read at its
    running minimum, so a split that recovers later does not make the data trustworthy.
    """
    if not state.srm_alarm:
        return Decisions([], state)
    ledger = _Ledger(definition, at, state.sequence)
    ledger.events.append(SrmCleared(**ledger.header("srm_cleared", None)))
    return Decisions(
        ledger.events,
        state.model_copy(update={"srm_alarm": False, "sequence": ledger.sequence}),
    )


@dataclass(frozen=True)
class _Verdict:
    """Which variants may be declared now, which a declared winner may stay, and the
    evidence to keep for the next look."""

    passing: list[str]
    kept: set[str]
    evidence: dict[str, Evidence]
    fixed_horizon_passing: list[str] | None


def _verdict(
    definition: ExperimentDefinition, variants: Sequence[VariantRow], state: DecisionState
) -> _Verdict:
    stats = definition.stats
    if stats.sequential:
        evidence = _accumulate(definition, variants, state.evidence)
        passing = [
            variant_id
            for variant_id in passing_variants(definition, variants, evidence)
            if _current_support(definition, variants, variant_id)
        ]
        kept = set(passing_variants(definition, variants, evidence))
        return _Verdict(passing, kept, evidence, None)
    if state.fixed_horizon_passing is not None:
        # Read once already: later looks only report.
        recorded = state.fixed_horizon_passing
        return _Verdict(list(recorded), set(recorded), {}, recorded)
    planned = stats.planned_sample_size
    if planned is None or not all(v.units >= planned for v in variants):
        return _Verdict([], set(), {}, None)
    read = passing_variants(definition, variants, _accumulate(definition, variants, {}))
    read = [v for v in read if _current_support(definition, variants, v)]
    return _Verdict(read, set(read), {}, read)


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
    verdict: _Verdict,
    ledger: _Ledger,
) -> str | None:
    """Withdraw a winner that stopped passing (or under SRM), then declare one if due.

    A declared winner stays while its evidence holds, even if another variant
    overtakes it: downstream services act on a winner, so it must not flap.
    """
    passing = verdict.passing
    if winner is not None and (srm or winner not in verdict.kept):
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


def passing_variants(
    definition: ExperimentDefinition,
    variants: Sequence[VariantRow],
    evidence: Mapping[str, Evidence],
) -> list[str]:
    """Variant ids whose evidence passes the winner rule, best improvement first."""
    higher_is_better = definition.stats.test_direction is not TestDirection.LESS
    threshold = alpha(definition)
    lifts = {
        v.variant_id: v.statistics.lift
        for v in variants
        if v.statistics is not None
        and v.statistics.lift is not None
        and v.variant_id in evidence
        and _clears(evidence[v.variant_id], threshold, higher_is_better)
    }
    sign = 1 if higher_is_better else -1
    return sorted(lifts, key=lambda variant_id: sign * lifts[variant_id], reverse=True)


def _accumulate(
    definition: ExperimentDefinition,
    variants: Sequence[VariantRow],
    previous: Mapping[str, Evidence],
) -> dict[str, Evidence]:
    """This look's tests folded into the evidence so far (Holm across the treatments)."""
    treatments = [(v.variant_id, v.statistics) for v in variants if v.statistics is not None]
    tests = [_frequentist(definition, statistics) for _, statistics in treatments]
    holm = adjust_p_values([test.p_value if test else None for test in tests], "holm")
    evidence = dict(previous)
    for (variant_id, statistics), test, holm_p in zip(treatments, tests, holm, strict=True):
        if test is None or holm_p is None or test.p_value_adjusted is None:
            continue
        if test.ci_adjusted is None:
            continue
        lower, upper = test.ci_adjusted
        now = Evidence(
            lift_type=statistics.lift_type,
            p_value=max(test.p_value_adjusted, holm_p),
            lower=lower,
            upper=upper,
        )
        before = evidence.get(variant_id)
        if before is not None and before.lift_type == now.lift_type:
            now = Evidence(
                lift_type=now.lift_type,
                p_value=min(before.p_value, now.p_value),
                lower=_larger(before.lower, now.lower),
                upper=_smaller(before.upper, now.upper),
            )
        evidence[variant_id] = now
    return evidence


def _clears(evidence: Evidence, threshold: float, higher_is_better: bool) -> bool:
    """Significant, with the interval clear of zero on the better side."""
    if evidence.p_value >= threshold:
        return False
    if higher_is_better:
        return evidence.lower is not None and evidence.lower > 0
    return evidence.upper is not None and evidence.upper < 0


def _current_support(
    definition: ExperimentDefinition, variants: Sequence[VariantRow], variant_id: str
) -> bool:
    """What a declaration also needs at its own look: the lift pointing the better way,
    and for the Bayesian engine the chance to win at the threshold."""
    statistics = next(v.statistics for v in variants if v.variant_id == variant_id)
    if statistics is None or statistics.lift is None:
        return False
    higher_is_better = definition.stats.test_direction is not TestDirection.LESS
    if statistics.lift <= 0 if higher_is_better else statistics.lift >= 0:
        return False
    if definition.stats.engine is Engine.BAYESIAN:
        chance = statistics.chance_to_win
        threshold = definition.stats.confidence_threshold_percent / 100.0
        return chance is not None and chance >= threshold
    return True


def _larger(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _smaller(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _frequentist(
    definition: ExperimentDefinition, statistics: VariantStatistics
) -> VariantStatistics | FrequentistCheck | None:
    """The frequentist test of a comparison: the engine's own, or the Bayesian one's check."""
    if definition.stats.engine is Engine.BAYESIAN:
        return statistics.frequentist_check
    return statistics


def winner_rule(definition: ExperimentDefinition, goal: GoalBlock, variant_id: str) -> WinnerRule:
    """Which rule declared the winner, and Kameleoon's rule on the same numbers.

    Ours: the threshold under sequential inference (or a fixed-horizon test at the
    planned sample), a positive improvement, Holm across arms, no SRM alarm.
    Kameleoon's: reliability (1 - one-sided p, or the chance to beat the reference)
    above the threshold and an improvement the tested way; ours implies it.
    """
    statistics = next(v for v in goal.variants if v.variant_id == variant_id).statistics
    threshold = definition.stats.confidence_threshold_percent
    reliability = statistics.reliability if statistics else None
    improvement = statistics.improvement if statistics else None
    # In a lower-is-better test the improvement Kameleoon wants points down.
    lower_is_better = definition.stats.test_direction is TestDirection.LESS
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
            and (improvement < 0 if lower_is_better else improvement > 0),
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
