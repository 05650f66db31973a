"""Winner rules on simulated experiments checked at every interval (seeded)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from worker.events.experiment import ExperimentDefinition
from worker.results.contract import ResultDocument, Snapshot, WinnerDeclared
from worker.results.decisions import DecisionState, decide, reset_srm
from worker.results.experiment_result import result_document
from worker.results.query import ResultQuery
from worker.results.query_totals import QueryTotals
from worker.results.variant_totals import VariantTotals


def definition(
    arms: int, kind: str = "experiment", weights: Sequence[float] | None = None, **stats: Any
) -> ExperimentDefinition:
    return ExperimentDefinition.model_validate(
        {
            "id": "exp",
            "project_key": "shop",
            "name": "Exp",
            "status": "live",
            "type": kind,
            "variants": [
                {
                    "id": f"v{i}",
                    "name": f"V{i}",
                    "is_control": i == 0,
                    "traffic_weight": weights[i] if weights else 1,
                }
                for i in range(arms)
            ],
            "goals": [{"key": "buy", "name": "Buy", "primary": True}],
            "stats": stats,
        }
    )


def snapshot(document: ResultDocument) -> Snapshot:
    """The document as the snapshot job wraps it (the metadata plays no part here)."""
    return Snapshot(
        document=document,
        applied_offsets={},
        computed_at=datetime(2026, 11, 20, tzinfo=UTC),
        interval_index=0,
        computed_by="test:1",
    )


def document(
    exp: ExperimentDefinition, visitors: Sequence[int], conversions: Sequence[int]
) -> Snapshot:
    rows = [
        VariantTotals(f"v{i}", visitors=int(n), conversions=int(c))
        for i, (n, c) in enumerate(zip(visitors, conversions, strict=True))
    ]
    return snapshot(result_document(exp, {"buy": QueryTotals(rows)}))


def peeks(
    exp: ExperimentDefinition,
    rates: Sequence[float],
    split: Sequence[float],
    per_peek: int,
    count: int,
    seed: int,
) -> Iterator[Snapshot]:
    """Results of a growing experiment, one per interval."""
    rng = np.random.default_rng(seed)
    visitors = np.zeros(len(rates), dtype=np.int64)
    conversions = np.zeros(len(rates), dtype=np.int64)
    for _ in range(count):
        arrivals = rng.multinomial(per_peek, split)
        visitors += arrivals
        conversions += rng.binomial(arrivals, rates)
        yield document(exp, visitors.tolist(), conversions.tolist())


def run(exp: ExperimentDefinition, results: Iterator[Snapshot]) -> list[dict[str, Any]]:
    """Every event published (as its JSON) while the results come in, the state carried
    along."""
    state = DecisionState()
    events: list[dict[str, Any]] = []
    for result in results:
        decisions = decide(exp, state, result)
        events += [event.model_dump(mode="json") for event in decisions.events]
        state = decisions.state
    return events


@pytest.mark.parametrize("engine", ["frequentist", "bayesian"])
def test_a_true_30_percent_effect_declares_exactly_one_winner(engine: str) -> None:
    exp = definition(3, engine=engine)
    results = peeks(exp, [0.10, 0.13, 0.10], [1 / 3] * 3, per_peek=3000, count=25, seed=1)
    events = run(exp, results)
    assert [(e["kind"], e["variant_id"]) for e in events] == [("winner_declared", "v1")]
    (event,) = events
    assert event["idempotency_key"] == "exp:winner_declared:v1:1"
    assert event["variant"]["variant_id"] == "v1" and event["reference"]["variant_id"] == "v0"
    assert event["variant"]["statistics"]["lift"] > 0.15
    assert event["srm_p_value"] > 0.001 and event["settings"]["engine"] == engine


def test_the_same_state_and_result_give_the_same_events_once() -> None:
    exp = definition(2, engine="frequentist")
    result = document(exp, [20_000, 20_000], [2_000, 2_600])
    first = decide(exp, DecisionState(), result)
    assert [e.kind for e in first.events] == ["winner_declared"]
    assert decide(exp, first.state, result).events == []
    replay = decide(exp, DecisionState(), result)  # a restart before the state was stored
    assert replay.events == first.events and replay.state == first.state


def test_a_45_55_split_against_50_50_raises_srm_once_and_declares_nothing() -> None:
    exp = definition(2, engine="frequentist")
    results = peeks(exp, [0.10, 0.13], [0.45, 0.55], per_peek=2000, count=20, seed=2)
    events = run(exp, results)
    assert [e["kind"] for e in events] == ["srm_detected"]
    assert events[0]["srm_p_value"] < 0.001
    assert events[0]["expected_weights"] == {"v0": 0.5, "v1": 0.5}
    assert events[0]["idempotency_key"] == "exp:srm_detected:-:1"


def test_an_srm_alarm_withdraws_a_declared_winner() -> None:
    exp = definition(2, engine="frequentist")
    declared = decide(exp, DecisionState(), document(exp, [20_000, 20_000], [2_000, 2_600]))
    skewed = decide(exp, declared.state, document(exp, [20_000, 23_000], [2_000, 3_000]))
    assert [(e.kind, getattr(e, "reason", None)) for e in skewed.events] == [
        ("srm_detected", None),
        ("winner_withdrawn", "srm_alarm"),
    ]
    assert skewed.state.winner is None


def test_a_sequential_winner_stays_through_a_fade() -> None:
    """Always-valid evidence is read at its running minimum p and running interval
    intersection: once sufficient it stays, so a winner does not flap with noise."""
    exp = definition(2, engine="frequentist")
    strong = document(exp, [20_000, 20_000], [2_000, 2_600])
    faded = document(exp, [40_000, 40_000], [4_000, 4_050])
    events = run(exp, iter([strong, faded, strong]))
    assert [(e["kind"], e["idempotency_key"]) for e in events] == [
        ("winner_declared", "exp:winner_declared:v1:1"),
    ]


def test_a_fixed_horizon_test_is_read_once_at_the_planned_sample() -> None:
    exp = definition(2, engine="frequentist", sequential=False, planned_sample_size=10_000)
    level = document(exp, [10_000, 10_000], [1_000, 1_010])
    ahead = document(exp, [20_000, 20_000], [2_000, 2_600])
    # The first eligible look passes nothing: later looks only report, however they look.
    assert run(exp, iter([level, ahead, ahead])) == []
    # Read once with a winner: kept at later looks, even where the test would now fail.
    events = run(exp, iter([ahead, level, level]))
    assert [e["kind"] for e in events] == ["winner_declared"]


def test_a_raised_srm_alarm_stays_raised_until_an_operator_resets_it() -> None:
    exp = definition(2, engine="frequentist")
    skewed = document(exp, [20_000, 23_000], [2_000, 2_300])
    recovered = document(exp, [200_000, 200_500], [20_000, 26_000])
    first = decide(exp, DecisionState(), skewed)
    assert [e.kind for e in first.events] == ["srm_detected"]
    later = decide(exp, first.state, recovered)  # the split looks fine again, b wins
    assert later.events == [] and later.state.srm_alarm
    reset = reset_srm(exp, later.state, later_time())
    assert [(e.kind, e.idempotency_key) for e in reset.events] == [
        ("srm_cleared", "exp:srm_cleared:-:1")
    ]
    assert not reset.state.srm_alarm
    assert reset_srm(exp, reset.state, later_time()).events == []  # nothing raised: no event
    resumed = decide(exp, reset.state, recovered)
    assert [(e.kind, e.variant_id) for e in resumed.events] == [("winner_declared", "v1")]


def later_time() -> datetime:
    return datetime(2026, 11, 21, tzinfo=UTC)


def test_a_worse_variant_is_never_a_winner() -> None:
    exp = definition(2, engine="frequentist", test_direction="two_sided")
    assert (
        decide(exp, DecisionState(), document(exp, [20_000, 20_000], [2_600, 2_000])).events == []
    )
    lower_is_better = definition(2, engine="frequentist", test_direction="less")
    events = decide(
        lower_is_better,
        DecisionState(),
        document(lower_is_better, [20_000, 20_000], [2_600, 2_000]),
    ).events
    assert [(e.kind, e.variant_id) for e in events] == [("winner_declared", "v1")]


@pytest.mark.parametrize("engine", ["frequentist", "bayesian"])
def test_an_aa_test_with_20_variants_declares_nothing_at_any_interval(engine: str) -> None:
    exp = definition(20, engine=engine, sequential=True)
    results = peeks(exp, [0.1] * 20, [0.05] * 20, per_peek=10_000, count=40, seed=3)
    assert [e for e in run(exp, results) if e["kind"] != "srm_detected"] == []


def test_fixed_horizon_tests_wait_for_the_planned_sample() -> None:
    exp = definition(2, engine="frequentist", sequential=False, planned_sample_size=10_000)
    early = document(exp, [9_999, 10_000], [1_000, 1_500])
    assert decide(exp, DecisionState(), early).events == []
    on_time = document(exp, [10_000, 10_000], [1_000, 1_500])
    assert [e.kind for e in decide(exp, DecisionState(), on_time).events] == ["winner_declared"]
    unplanned = definition(2, engine="frequentist", sequential=False)
    unplanned_result = document(unplanned, [50_000] * 2, [5_000, 7_000])
    assert decide(unplanned, DecisionState(), unplanned_result).events == []


def test_bandits_publish_weights_when_they_move() -> None:
    exp = definition(3, kind="mab", engine="bayesian")
    level = document(exp, [5_000] * 3, [500, 500, 500])
    first = decide(exp, DecisionState(), level)
    assert first.events == []  # equal arms keep (about) the configured weights
    leader = document(exp, [5_000] * 3, [500, 650, 500])
    moved = decide(exp, first.state, leader)
    updates = [e.model_dump(mode="json") for e in moved.events if e.kind == "allocation_updated"]
    assert len(updates) == 1 and updates[0]["idempotency_key"] == "exp:allocation_updated:-:1"
    weights = updates[0]["weights"]
    assert weights["v1"] > 0.9 and sum(weights.values()) == pytest.approx(1.0)
    assert updates[0]["previous_weights"] == pytest.approx({"v0": 1 / 3, "v1": 1 / 3, "v2": 1 / 3})
    again = decide(exp, moved.state, leader)
    assert [e for e in again.events if e.kind == "allocation_updated"] == []


def test_decisions_need_the_default_result() -> None:
    exp = definition(2)
    rows = QueryTotals([VariantTotals("v0", visitors=10), VariantTotals("v1", visitors=10)])
    filtered = result_document(exp, {"buy": rows}, ResultQuery(min_count=2))
    with pytest.raises(ValueError, match="default result"):
        decide(exp, DecisionState(), snapshot(filtered))


def test_kameleoons_rule_is_met_by_a_lower_value_in_a_lower_is_better_test() -> None:
    exp = definition(2, engine="frequentist", test_direction="less")
    (event,) = decide(exp, DecisionState(), document(exp, [20_000, 20_000], [2_600, 2_000])).events
    assert isinstance(event, WinnerDeclared)
    assert event.rule.kameleoon.improvement_percent is not None
    assert event.rule.kameleoon.improvement_percent < 0
    assert event.rule.kameleoon.met
