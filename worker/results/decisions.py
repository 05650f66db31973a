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
from typing import Any

from worker.events.experiment import Engine, ExperimentDefinition, ExperimentType, TestDirection
from worker.results.experiment_result import alpha
from worker.results.query import ResultQuery
from worker.stats.corrections import adjust_p_values

ALLOCATION_TOLERANCE = 0.01
"""Bandit weights that move less than this (per arm) are not republished."""

WINNER_DECLARED = "winner_declared"
WINNER_WITHDRAWN = "winner_withdrawn"
SRM_DETECTED = "srm_detected"
ALLOCATION_UPDATED = "allocation_updated"

_DEFAULT_QUERY = ResultQuery().model_dump(mode="json")


@dataclass(frozen=True)
class Decisions:
    """Events to publish, in order, and the state to store with them (plain data)."""

    events: list[dict[str, Any]]
    state: dict[str, Any]


def decide(
    definition: ExperimentDefinition, state: Mapping[str, Any], result: Mapping[str, Any]
) -> Decisions:
    """The decision events of ``result`` (a ``result_document`` of the default query).

    ``state`` is the previous ``Decisions.state`` ({} at first). The same state and
    result always give the same events and keys.
    """
    if result.get("query") != _DEFAULT_QUERY:
        raise ValueError("decisions are taken on the default result only")
    primary = result["goals"][definition.primary_goal.key]
    ledger = _Ledger(definition, result, state.get("sequence") or {})
    srm = bool(result["srm_alarm"])
    if srm and not state.get("srm_alarm"):
        ledger.emit(SRM_DETECTED, None, _srm_numbers(result, primary["variants"]))
    winner = _next_winner(definition, result, primary, state.get("winner"), srm, ledger)
    weights = state.get("weights")
    if definition.type is ExperimentType.MAB:
        weights = _next_weights(primary, weights, ledger)
    return Decisions(
        ledger.events,
        {"winner": winner, "srm_alarm": srm, "weights": weights, "sequence": ledger.sequence},
    )


class _Ledger:
    """Numbers the events of one decision round per kind, continuing the state's count."""

    def __init__(
        self,
        definition: ExperimentDefinition,
        result: Mapping[str, Any],
        sequence: Mapping[str, int],
    ) -> None:
        self.definition = definition
        self.result = result
        self.sequence = dict(sequence)
        self.events: list[dict[str, Any]] = []

    def emit(self, kind: str, variant_id: str | None, numbers: Mapping[str, Any]) -> None:
        number = self.sequence[kind] = int(self.sequence.get(kind, 0)) + 1
        experiment = self.definition.id
        self.events.append(
            {
                "kind": kind,
                "experiment_id": experiment,
                "variant_id": variant_id,
                "goal": self.definition.primary_goal.key,
                "sequence": number,
                "idempotency_key": f"{experiment}:{kind}:{variant_id or '-'}:{number}",
                "computed_at": self.result.get("computed_at"),
                **numbers,
            }
        )


def _next_winner(
    definition: ExperimentDefinition,
    result: Mapping[str, Any],
    primary: Mapping[str, Any],
    winner: str | None,
    srm: bool,
    ledger: _Ledger,
) -> str | None:
    """Withdraw a winner that stopped passing (or under SRM), then declare one if due.

    A declared winner stays while it passes, even if another variant overtakes it:
    downstream services act on a winner, so it must not flap.
    """
    passing = passing_variants(definition, primary["variants"])
    if winner is not None and (srm or winner not in passing):
        reason = "srm_alarm" if srm else "threshold_no_longer_met"
        ledger.emit(
            WINNER_WITHDRAWN, winner, {"reason": reason} | _numbers(result, primary, winner)
        )
        winner = None
    if winner is None and passing and not srm:
        winner = passing[0]
        ledger.emit(
            WINNER_DECLARED,
            winner,
            _numbers(result, primary, winner) | {"rule": winner_rule(definition, primary, winner)},
        )
    return winner


def _next_weights(
    primary: Mapping[str, Any], weights: Mapping[str, float] | None, ledger: _Ledger
) -> Mapping[str, float] | None:
    """Publish the bandit's Thompson weights when they moved beyond the tolerance."""
    if not primary["bandit_updated"]:
        return weights
    new_weights = {k: float(v) for k, v in primary["bandit_weights"].items()}
    previous = weights or _configured_weights(primary["variants"])
    if not _moved(previous, new_weights):
        return weights
    ledger.emit(
        ALLOCATION_UPDATED,
        None,
        {
            "weights": new_weights,
            "previous_weights": previous,
            "probability_best": primary["probability_best"],
        },
    )
    return new_weights


def passing_variants(
    definition: ExperimentDefinition, variants: Sequence[Mapping[str, Any]]
) -> list[str]:
    """Variant ids that pass the winner rule, best improvement first."""
    stats = definition.stats
    planned = stats.planned_sample_size
    horizon_reached = planned is not None and all(v["units"] >= planned for v in variants)
    if not stats.sequential and not horizon_reached:
        return []
    higher_is_better = stats.test_direction is not TestDirection.LESS
    treatments = [v for v in variants if v["statistics"] is not None]
    tests = [_frequentist(definition, v["statistics"]) for v in treatments]
    holm = adjust_p_values([test.get("p_value") for test in tests], "holm")
    passing = [
        variant
        for variant, test, holm_p in zip(treatments, tests, holm, strict=True)
        if _passes(definition, variant["statistics"], test, holm_p, higher_is_better)
    ]
    passing.sort(
        key=lambda v: v["statistics"]["lift"] * (1 if higher_is_better else -1), reverse=True
    )
    return [v["variant_id"] for v in passing]


def _frequentist(
    definition: ExperimentDefinition, statistics: Mapping[str, Any]
) -> Mapping[str, Any]:
    if definition.stats.engine is Engine.BAYESIAN:
        return statistics.get("frequentist_check") or {}
    return statistics


def _passes(
    definition: ExperimentDefinition,
    statistics: Mapping[str, Any],
    test: Mapping[str, Any],
    holm_p_value: float | None,
    higher_is_better: bool,
) -> bool:
    stats = definition.stats
    lift = statistics.get("lift")
    if lift is None or (lift <= 0 if higher_is_better else lift >= 0):
        return False
    if stats.engine is Engine.BAYESIAN:
        chance = statistics.get("chance_to_win")
        if chance is None or chance < stats.confidence_threshold_percent / 100.0:
            return False
    p_value = test.get("p_value_adjusted")
    interval = test.get("ci_adjusted")
    if p_value is None or holm_p_value is None or interval is None:
        return False
    if max(p_value, holm_p_value) >= alpha(definition):
        return False
    lower, upper = interval
    if higher_is_better:
        return lower is not None and lower > 0
    return upper is not None and upper < 0


def winner_rule(
    definition: ExperimentDefinition, goal: Mapping[str, Any], variant_id: str
) -> dict[str, Any]:
    """Which rule declared the winner, and Kameleoon's rule on the same numbers.

    Ours: the threshold under sequential inference (or a fixed-horizon test at the
    planned sample), a positive improvement, Holm across arms, no SRM alarm.
    Kameleoon's: reliability (1 - one-sided p, or the chance to beat the reference)
    above the threshold and a positive improvement; ours implies it.
    """
    statistics = next(v for v in goal["variants"] if v["variant_id"] == variant_id)["statistics"]
    threshold = definition.stats.confidence_threshold_percent
    reliability = statistics.get("reliability")
    improvement = statistics.get("improvement")
    return {
        "name": "sequential" if definition.stats.sequential else "fixed_horizon",
        "engine": definition.stats.engine.value,
        "threshold_percent": threshold,
        "kameleoon": {
            "reliability_percent": None if reliability is None else 100 * reliability,
            "improvement_percent": improvement,
            "met": reliability is not None
            and 100 * reliability >= threshold
            and improvement is not None
            and improvement > 0,
        },
    }


def _moved(previous: Mapping[str, float], new: Mapping[str, float]) -> bool:
    return any(abs(new[k] - previous.get(k, 0.0)) > ALLOCATION_TOLERANCE for k in new)


def _numbers(result: Mapping[str, Any], goal: Mapping[str, Any], variant_id: str) -> dict[str, Any]:
    """The rows behind a winner decision: the variant, the reference, the checks."""
    rows = {v["variant_id"]: v for v in goal["variants"]}
    return {
        "reference_variant": result["reference_variant"],
        "variant": rows[variant_id],
        "reference": rows[result["reference_variant"]],
        "srm_p_value": result["srm_p_value"],
        "settings": result["settings"],
    }


def _configured_weights(variants: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    return {v["variant_id"]: float(v["traffic_weight"]) for v in variants}


def _srm_numbers(
    result: Mapping[str, Any], variants: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    return {
        "srm_p_value": result["srm_p_value"],
        "srm_sequential_p_value": result.get("srm_sequential_p_value"),
        "visitors": {v["variant_id"]: v["visitors"] for v in variants},
        "expected_weights": _configured_weights(variants),
    }
