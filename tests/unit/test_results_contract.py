"""The results contract: documents, snapshots and decision events as frozen models whose
JSON is what ab.results / ab.winners carry and what schemas/ describes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jsonschema_rs
import orjson
import pytest
from pydantic import ValidationError

from worker.cli.schemas_command import TOPIC_MODELS
from worker.events import json_schemas
from worker.events.experiment import ExperimentDefinition
from worker.results.contract import (
    AnyDecisionEvent,
    ResultDocument,
    Snapshot,
    WinnersRecord,
)
from worker.results.decisions import DecisionState, decide, reset_srm
from worker.results.experiment_result import result_document
from worker.results.query import ResultQuery
from worker.results.query_totals import QueryTotals
from worker.results.variant_totals import VariantTotals

SCHEMAS = json_schemas.generate(TOPIC_MODELS)
RESULTS = jsonschema_rs.validator_for(SCHEMAS["ab.results.schema.json"], validate_formats=True)
WINNERS = jsonschema_rs.validator_for(SCHEMAS["ab.winners.schema.json"], validate_formats=True)
COMPUTED_AT = datetime(2026, 11, 20, 8, 30, 15, 123456, tzinfo=UTC)
METADATA = ["applied_offsets", "computed_at", "interval_index", "computed_by"]


def definition(engine: str, kind: str = "experiment") -> ExperimentDefinition:
    return ExperimentDefinition.model_validate(
        {
            "id": "exp",
            "project_key": "shop",
            "name": "Checkout",
            "status": "live",
            "type": kind,
            "variants": [
                {"id": "a", "name": "A", "is_control": True},
                {"id": "b", "name": "B"},
                {"id": "c", "name": "C"},
            ],
            "goals": [
                {"key": "signup", "name": "Signup", "primary": True},
                {"key": "buy", "name": "Buy", "type": "revenue"},
            ],
            "stats": {"engine": engine},
        }
    )


def rows(visitors: int, conversions: tuple[int, int, int]) -> list[VariantTotals]:
    return [
        VariantTotals(
            variant,
            visitors=visitors,
            visits=visitors + 7,
            conversions=converted,
            converted_visits=converted + 1,
            goal_events=2 * converted,
            goal_events_sum_squares=5 * converted,
            orders=converted,
            revenue=20.5 * converted,
            revenue_sum_squares=600.25 * converted,
        )
        for variant, converted in zip("abc", conversions, strict=True)
    ]


def computed(
    exp: ExperimentDefinition,
    conversions: tuple[int, int, int] = (1000, 1300, 1000),
    query: ResultQuery | None = None,
) -> ResultDocument:
    """A document computed as the worker computes one, with a breakdown when asked."""
    overall = rows(10_000, conversions)
    segments = {"mobile": rows(6_000, (600, 800, 600)), "desktop": rows(4_000, (400, 500, 400))}
    breakdown = query.breakdown if query else None
    totals = QueryTotals(overall, breakdown, segments if breakdown else None)
    return result_document(exp, {"signup": totals, "buy": totals}, query)


def snapshot(document: ResultDocument, **metadata: Any) -> Snapshot:
    return Snapshot(
        document=document,
        applied_offsets={"ab.assignments": {"0": 41, "3": 7}},
        computed_at=COMPUTED_AT,
        interval_index=178_987_621,
        computed_by="host:123",
        **metadata,
    )


def published(model: Snapshot | AnyDecisionEvent | ResultDocument) -> bytes:
    """What the worker publishes for a model."""
    return orjson.dumps(model.model_dump(mode="json"))


@pytest.mark.parametrize("engine", ["bayesian", "frequentist"])
@pytest.mark.parametrize("query", [ResultQuery(), ResultQuery(breakdown="device", tz=2)])
def test_a_computed_document_round_trips_through_its_json(engine: str, query: ResultQuery) -> None:
    document = computed(definition(engine), query=query)
    raw = published(document)
    again = ResultDocument.model_validate_json(raw)
    assert again == document
    assert published(again) == raw


def test_frequentist_check_is_left_out_where_there_is_none() -> None:
    document = computed(definition("bayesian"), query=ResultQuery(breakdown="device"))
    treatment = document.goals["signup"].variants[1].statistics
    assert treatment is not None and treatment.frequentist_check is not None
    json = document.model_dump(mode="json")
    assert "frequentist_check" in json["goals"]["signup"]["variants"][1]["statistics"]
    segment = json["segments"]["mobile"]["goals"]["signup"]["variants"][1]["statistics"]
    assert "frequentist_check" not in segment


def test_every_contract_model_is_frozen() -> None:
    document = computed(definition("frequentist"))
    with pytest.raises(ValidationError, match="frozen"):
        document.srm_alarm = True
    with pytest.raises(ValidationError, match="frozen"):
        document.goals["signup"].variants[0].visitors = 0
    with pytest.raises(ValidationError, match="frozen"):
        snapshot(document).interval_index = 0


def test_a_snapshot_wraps_the_document_and_is_flat_on_the_wire() -> None:
    document = computed(definition("bayesian"))
    before = published(document)
    made = snapshot(document)
    assert made.document is document and published(document) == before
    wire = orjson.loads(published(made))
    # The document's fields, then the metadata: the order ab.results always had.
    assert list(wire) == list(orjson.loads(before)) + METADATA
    assert wire["computed_at"] == "2026-11-20T08:30:15.123456+00:00"  # isoformat, not "Z"
    assert wire["applied_offsets"] == {"ab.assignments": {"0": 41, "3": 7}}
    assert Snapshot.model_validate_json(published(made)) == made
    RESULTS.validate(wire)


def test_only_a_final_snapshot_carries_ended_at() -> None:
    ended = datetime(2026, 11, 21, 9, tzinfo=timezone(timedelta(hours=2)))
    final = snapshot(computed(definition("frequentist")), ended_at=ended)
    wire = orjson.loads(published(final))
    assert list(wire)[-5:] == [*METADATA, "ended_at"]
    assert wire["ended_at"] == "2026-11-21T09:00:00+02:00"
    assert Snapshot.model_validate_json(published(final)) == final
    RESULTS.validate(wire)


def test_the_results_schema_rejects_what_the_model_rejects() -> None:
    wire = orjson.loads(published(snapshot(computed(definition("frequentist")))))
    for broken in (
        {key: value for key, value in wire.items() if key != "computed_at"},
        wire | {"unexpected": 1},
        wire | {"computed_at": "yesterday"},
    ):
        assert not RESULTS.is_valid(broken)
        with pytest.raises(ValidationError):
            Snapshot.model_validate(broken)


def growing_experiment(exp: ExperimentDefinition) -> list[AnyDecisionEvent]:
    """The events of an experiment whose treatment wins, fades (and stays: sequential
    evidence is kept), loses its split, and has its SRM alarm reset by an operator."""
    state = DecisionState()
    events: list[AnyDecisionEvent] = []
    for visitors, conversions in [
        (20_000, (2_000, 2_600, 2_000)),  # b wins
        (40_000, (4_000, 4_050, 4_000)),  # b fades: withdrawn
        (40_000, (4_000, 5_200, 4_000)),  # b wins again
    ]:
        document = result_document(exp, {"signup": QueryTotals(rows(visitors, conversions))})
        decisions = decide(exp, state, snapshot(document))
        events += decisions.events
        state = decisions.state
    skewed = rows(40_000, (4_000, 5_200, 4_000))
    skewed[1].visitors = 46_000  # an SRM alarm withdraws the winner
    document = result_document(exp, {"signup": QueryTotals(skewed)})
    alarmed = decide(exp, state, snapshot(document))
    cleared = reset_srm(exp, alarmed.state, snapshot(document).computed_at)
    return events + alarmed.events + cleared.events


def test_decision_events_of_every_kind_validate_against_the_winners_schema() -> None:
    events = growing_experiment(definition("frequentist"))
    assert [event.kind for event in events] == [
        "winner_declared",
        "srm_detected",
        "winner_withdrawn",
        "srm_cleared",
    ]
    bandit = definition("bayesian", kind="mab")
    level = result_document(bandit, {"signup": QueryTotals(rows(5_000, (500, 500, 500)))})
    ahead = result_document(bandit, {"signup": QueryTotals(rows(5_000, (500, 650, 500)))})
    state = decide(bandit, DecisionState(), snapshot(level)).state
    moved = decide(bandit, state, snapshot(ahead)).events
    assert "allocation_updated" in [event.kind for event in moved]
    events += moved
    for event in events:
        wire = orjson.loads(published(event))
        WINNERS.validate(wire)
        assert list(wire)[:7] == [
            "kind", "experiment_id", "variant_id", "goal", "sequence", "idempotency_key",
            "computed_at",
        ]  # fmt: skip
        assert wire["computed_at"] == "2026-11-20T08:30:15.123456+00:00"
        assert WinnersRecord.model_validate(wire).root == event
    keys = [event.idempotency_key for event in events]
    assert keys[:4] == [
        "exp:winner_declared:b:1",
        "exp:srm_detected:-:1",
        "exp:winner_withdrawn:b:1",
        "exp:srm_cleared:-:1",
    ]


def test_the_winners_schema_rejects_unknown_kinds_and_missing_keys() -> None:
    (event, *_) = growing_experiment(definition("frequentist"))
    wire = orjson.loads(published(event))
    assert not WINNERS.is_valid(wire | {"kind": "winner_guessed"})
    assert not WINNERS.is_valid({key: v for key, v in wire.items() if key != "idempotency_key"})
    assert not WINNERS.is_valid(wire | {"reason": "srm_alarm"})  # a declared winner has none


def test_the_decision_state_stores_as_it_did() -> None:
    exp = definition("frequentist")
    document = result_document(exp, {"signup": QueryTotals(rows(20_000, (2_000, 2_600, 2_000)))})
    state = decide(exp, DecisionState.model_validate({}), snapshot(document)).state
    stored = orjson.dumps(state.model_dump(mode="json"))
    # The fields of earlier versions first and as they were, then the evidence kept.
    before = b'{"winner":"b","srm_alarm":false,"weights":null,"sequence":{"winner_declared":1}'
    assert stored.startswith(before + b',"evidence":{"b":{"lift_type":"relative","p_value":')
    assert stored.endswith(b',"fixed_horizon_passing":null,"allocation_looked_at":null}')
    # A state stored by an earlier version loads, with no evidence yet.
    earlier = DecisionState.model_validate_json(before + b"}")
    assert (earlier.winner, earlier.evidence, earlier.fixed_horizon_passing) == ("b", {}, None)
