"""Message -> Lua command planning (worker/ingestion/commands.py) and Kafka's partitioner."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner, murmur2

from worker.events.assignment import Assignment
from worker.events.experiment import ExperimentDefinition
from worker.ingestion.commands import (
    Plan,
    SourceMessage,
    plan_assignment,
    plan_conversion,
    segment_cell,
)
from worker.ingestion.partitioning import partition_for

PARTITIONS = 12
ASSIGNMENTS = "ab.assignments"
CONVERSIONS = "ab.conversions"
# 2024-05-01T12:00:00+02:00 in milliseconds since the epoch.
NOON_CEST_MS = 1_714_557_600_000

# Kafka's UtilsTest.testMurmur2: Java's signed 32-bit results.
JAVA_MURMUR2 = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


def experiment(experiment_id: str, status: str) -> ExperimentDefinition:
    return ExperimentDefinition.model_validate(
        {
            "id": experiment_id,
            "project_key": "shop",
            "name": experiment_id,
            "status": status,
            "variants": [
                {"id": "control", "name": "Control", "is_control": True},
                {"id": "green", "name": "Green"},
            ],
            "goals": [{"key": "purchase", "name": "Purchase", "primary": True}],
        }
    )


CATALOG = {
    definition.id: definition
    for definition in (
        experiment("exp-live", "live"),
        experiment("exp-draft", "draft"),
        experiment("exp-inactive", "inactive"),
        experiment("exp-done", "completed"),
    )
}


def assignment_event(**overrides: Any) -> dict[str, Any]:
    return {
        "event_id": "evt-a1",
        "experiment_id": "exp-live",
        "variant_id": "green",
        "visitor_id": "visitor-1",
        "timestamp": "2024-05-01T12:00:00+02:00",
        **overrides,
    }


def conversion_event(**overrides: Any) -> dict[str, Any]:
    return {
        "event_id": "evt-c1",
        "visitor_id": "visitor-1",
        "goal": "purchase",
        "timestamp": "2024-05-01T12:00:00+02:00",
        **overrides,
    }


PUBLISHED_MS = 1_714_557_900_000
"""The records' timestamp: five minutes after the events' own (2024-05-01T10:00Z)."""


def message(
    topic: str, value: bytes | None, visitor_id: str = "visitor-1", partition: int | None = None
) -> SourceMessage:
    """A record as a murmur2 producer would have written it, unless `partition` says otherwise."""
    return SourceMessage(
        topic=topic,
        partition=partition_for(visitor_id, PARTITIONS) if partition is None else partition,
        offset=42,
        key=visitor_id.encode(),
        value=value,
        timestamp_ms=PUBLISHED_MS,
    )


def plan_a(event: dict[str, Any] | bytes | None, **kwargs: Any) -> Plan:
    value = event if isinstance(event, bytes | None) else orjson.dumps(event)
    return plan_assignment(message(ASSIGNMENTS, value, **kwargs), CATALOG, PARTITIONS)


def plan_c(event: dict[str, Any] | bytes | None, **kwargs: Any) -> Plan:
    value = event if isinstance(event, bytes | None) else orjson.dumps(event)
    return plan_conversion(message(CONVERSIONS, value, **kwargs), CATALOG, PARTITIONS)


def command_of(plan: Plan) -> dict[str, Any]:
    """The command as a plain dict, to compare and take apart whatever its kind."""
    return dict(plan.command)


def outbox_entry(plan: Plan) -> dict[str, Any]:
    return orjson.loads(command_of(plan)["out"])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# accepted events


def test_assignment_command() -> None:
    event = assignment_event(
        visit_id="visit-7",
        context={
            "device": "Mobile",
            "browser": "chrome",
            "os": "iOS",
            "country": "de",
            "source": "paid",
            "city": "Berlin",
            "utm": {"campaign": "spring"},
        },
    )
    plan = plan_a(event)
    assert plan.registry_miss is False
    assert plan.command == {
        "k": "a",
        "t": ASSIGNMENTS,
        "o": 42,
        "p": PUBLISHED_MS,
        "id": "evt-a1",
        "u": "visitor-1",
        "x": "exp-live",
        "v": "green",
        "s": "visit-7",
        "ts": NOON_CEST_MS,
        "c": "mobile|chrome|ios|DE|new|paid",
        "ctx": '{"city":"Berlin","utm":{"campaign":"spring"}}',
    }


def test_assignment_without_optional_fields_leaves_keys_out() -> None:
    plan = plan_a(assignment_event())
    assert plan.command == {
        "k": "a",
        "t": ASSIGNMENTS,
        "o": 42,
        "p": PUBLISHED_MS,
        "id": "evt-a1",
        "u": "visitor-1",
        "x": "exp-live",
        "v": "green",
        "ts": NOON_CEST_MS,
        "c": "other|other|other|ZZ|new|other",
    }


def test_conversion_command() -> None:
    event = conversion_event(
        visit_id="visit-7",
        value=19.99,
        currency="EUR",
        experiment_id="exp-live",
        attributes={"plan": "pro", "seats": 3},
    )
    raw = orjson.dumps(event)
    plan = plan_c(raw)
    assert plan.registry_miss is False
    command = command_of(plan)
    held = orjson.loads(command.pop("held"))
    assert command == {
        "k": "c",
        "t": CONVERSIONS,
        "o": 42,
        "p": PUBLISHED_MS,
        "id": "evt-c1",
        "u": "visitor-1",
        "x": "exp-live",
        "s": "visit-7",
        "g": "purchase",
        "ts": NOON_CEST_MS,
        "val": "19.99",
        "cur": "EUR",
        "at": {"plan": "pro", "seats": 3},
    }
    assert held == {
        "topic": CONVERSIONS,
        "partition": partition_for("visitor-1", PARTITIONS),
        "offset": 42,
        "key": b64(b"visitor-1"),
        "value": b64(raw),
        "goal": "purchase",
    }


def test_global_conversion_names_no_experiment() -> None:
    plan = plan_c(conversion_event(value=10))
    assert plan.command["k"] == "c"
    assert "x" not in plan.command
    assert "at" not in plan.command
    assert command_of(plan)["val"] == "10.0"


def test_conversion_of_an_inactive_experiment_is_still_counted() -> None:
    plan = plan_c(conversion_event(experiment_id="exp-inactive"))
    assert (plan.command["k"], command_of(plan)["x"], plan.registry_miss) == (
        "c",
        "exp-inactive",
        False,
    )


# segment cells


@pytest.mark.parametrize(
    "context, cell",
    [
        ({}, "other|other|other|ZZ|new|other"),
        (
            {"device": "desktop", "browser": "firefox", "os": "linux", "country": "fr"},
            "desktop|firefox|linux|FR|new|other",
        ),
        (
            {"first_seen_at": "2024-04-29T12:00:00+02:00", "source": "email"},
            "other|other|other|ZZ|returning|email",
        ),
        ({"first_seen_at": "2024-05-01T11:00:00+02:00"}, "other|other|other|ZZ|new|other"),
    ],
)
def test_segment_cell(context: dict[str, Any], cell: str) -> None:
    assert segment_cell(Assignment.model_validate(assignment_event(context=context))) == cell


# dead letters


@pytest.mark.parametrize("plan_for", [plan_a, plan_c])
@pytest.mark.parametrize("raw", [b"{not json", b'{"event_id": "e1",', b"\xff\xfe", None])
def test_malformed_json(plan_for: Any, raw: bytes | None) -> None:
    plan = plan_for(raw)
    entry = outbox_entry(plan)
    assert plan.command["k"] == "d"
    assert entry["kind"] == "dead_letter"
    assert entry["reason"] == "malformed_json"
    assert plan.registry_miss is False


def test_dead_letter_keeps_the_original_message() -> None:
    raw = b'{"visitor_id": "visitor-1", broken'
    plan = plan_a(raw)
    assert plan.command == {
        "k": "d",
        "t": ASSIGNMENTS,
        "o": 42,
        "p": PUBLISHED_MS,
        "out": command_of(plan)["out"],
    }
    assert outbox_entry(plan)["message"] == {
        "topic": ASSIGNMENTS,
        "partition": partition_for("visitor-1", PARTITIONS),
        "offset": 42,
        "key": b64(b"visitor-1"),
        "value": b64(raw),
    }


@pytest.mark.parametrize(
    "plan_for, event, field",
    [
        (plan_a, assignment_event(visitor_id="has space"), "visitor_id"),
        (plan_a, assignment_event(timestamp="2024-05-01T12:00:00"), "timestamp"),
        (plan_a, assignment_event(context={"device": 5}), "context.device"),
        (plan_a, {"event_id": "e1"}, "experiment_id"),
        (plan_c, conversion_event(goal="a|b"), "goal"),
        (plan_c, conversion_event(currency="euro"), "currency"),
        (plan_c, conversion_event(colour="red"), "colour"),
    ],
)
def test_schema_violation_names_the_field(plan_for: Any, event: dict[str, Any], field: str) -> None:
    plan = plan_for(event)
    entry = outbox_entry(plan)
    assert plan.command["k"] == "d"
    assert entry["reason"] == "schema_violation"
    assert entry["detail"].startswith(f"{field}: ")
    assert plan.registry_miss is False


def test_json_that_is_not_an_object_is_a_schema_violation() -> None:
    entry = outbox_entry(plan_a(b"[1, 2]"))
    assert (entry["reason"], entry["detail"]) == (
        "schema_violation",
        "(root): Input should be an object",
    )


@pytest.mark.parametrize(
    "plan_for, event, reason",
    [
        (plan_a, assignment_event(experiment_id="exp-nope"), "unknown_experiment"),
        (plan_a, assignment_event(variant_id="blue"), "unknown_variant"),
        (plan_a, assignment_event(experiment_id="exp-draft"), "experiment_not_live"),
        (plan_a, assignment_event(experiment_id="exp-inactive"), "experiment_not_live"),
        (plan_a, assignment_event(experiment_id="exp-done"), "experiment_not_live"),
        (plan_c, conversion_event(experiment_id="exp-nope"), "unknown_experiment"),
        (plan_c, conversion_event(experiment_id="exp-draft"), "experiment_not_live"),
        (plan_c, conversion_event(experiment_id="exp-done"), "experiment_not_live"),
    ],
)
def test_registry_problems_are_dead_lettered_as_misses(
    plan_for: Any, event: dict[str, Any], reason: str
) -> None:
    plan = plan_for(event)
    entry = outbox_entry(plan)
    assert plan.command["k"] == "d"
    assert entry["reason"] == reason
    # A miss may be a definition published a moment ago: the caller re-plans after a sync.
    assert plan.registry_miss is True


def test_registry_detail_names_experiment_and_variant() -> None:
    entry = outbox_entry(plan_a(assignment_event(variant_id="blue")))
    assert entry["detail"] == "experiment 'exp-live' has no variant 'blue'"
    entry = outbox_entry(plan_a(assignment_event(experiment_id="exp-draft")))
    assert entry["detail"] == "experiment 'exp-draft' is draft: it takes no new assignments"


# misrouted messages


@pytest.mark.parametrize(
    "plan_for, event, topic",
    [
        (plan_a, assignment_event(visitor_id="visitor-2"), ASSIGNMENTS),
        # Forwarding comes before the registry: the right partition's owner decides.
        (plan_a, assignment_event(visitor_id="visitor-2", experiment_id="exp-nope"), ASSIGNMENTS),
        (plan_c, conversion_event(visitor_id="visitor-2"), CONVERSIONS),
    ],
)
def test_misrouted_message_is_forwarded(plan_for: Any, event: dict[str, Any], topic: str) -> None:
    right = partition_for("visitor-2", PARTITIONS)
    wrong = (right + 1) % PARTITIONS
    raw = orjson.dumps(event)
    plan = plan_for(raw, visitor_id="visitor-2", partition=wrong)
    assert plan.registry_miss is False
    assert plan.command == {
        "k": "f",
        "t": topic,
        "o": 42,
        "p": PUBLISHED_MS,
        "out": command_of(plan)["out"],
    }
    assert outbox_entry(plan) == {
        "kind": "forward",
        "topic": topic,
        "partition": right,
        "key": b64(b"visitor-2"),
        "value": b64(raw),
    }


def test_forward_uses_the_visitor_id_not_the_producer_key() -> None:
    # A producer that keyed by something else still lands the event on the visitor's partition.
    raw = orjson.dumps(assignment_event(visitor_id="visitor-3"))
    wrong = (partition_for("visitor-3", PARTITIONS) + 5) % PARTITIONS
    source = SourceMessage(ASSIGNMENTS, wrong, 7, b"session-99", raw)
    entry = outbox_entry(plan_assignment(source, CATALOG, PARTITIONS))
    assert entry["partition"] == partition_for("visitor-3", PARTITIONS)
    assert entry["key"] == b64(b"visitor-3")


# commands never carry None (cjson would turn null into a truthy value)


def all_plans() -> list[Plan]:
    return [
        plan_a(assignment_event()),
        plan_a(assignment_event(context={"country": None, "city": None, "utm": None})),
        plan_a(assignment_event(visit_id=None)),
        plan_a(assignment_event(experiment_id="exp-nope")),
        plan_a(b"{"),
        plan_a(None),
        plan_a(assignment_event(visitor_id="visitor-2"), visitor_id="visitor-2", partition=0),
        plan_c(conversion_event()),
        plan_c(conversion_event(value=None, currency=None, experiment_id=None, attributes=None)),
        plan_c(conversion_event(attributes={})),
        plan_c(conversion_event(experiment_id="exp-draft")),
        plan_conversion(SourceMessage(CONVERSIONS, 0, 1, None, b"not json"), CATALOG, PARTITIONS),
    ]


@pytest.mark.parametrize("plan", all_plans())
def test_commands_never_contain_none(plan: Plan) -> None:
    assert all(value is not None for value in plan.command.values()), plan.command
    assert {"k", "t", "o"} <= set(plan.command)


# Kafka's default partitioner


@pytest.mark.parametrize(("text", "java"), JAVA_MURMUR2.items())
def test_murmur2_matches_kafkas_java_vectors(text: str, java: int) -> None:
    # aiokafka returns the hash as an unsigned 32-bit number; Java's int is its signed view.
    assert murmur2(text.encode()) == java & 0xFFFFFFFF


@pytest.mark.parametrize(("text", "java"), JAVA_MURMUR2.items())
@pytest.mark.parametrize("partitions", [1, 3, 12, 100])
def test_partition_for_matches_java(text: str, java: int, partitions: int) -> None:
    # Java: Utils.toPositive(Utils.murmur2(key)) % numPartitions.
    expected = (java & 0x7FFFFFFF) % partitions
    assert partition_for(text, partitions) == expected
    all_partitions = list(range(partitions))
    assert DefaultPartitioner()(text.encode(), all_partitions, all_partitions) == expected


def test_partition_for_spreads_visitors() -> None:
    partitions = {partition_for(f"visitor-{index}", PARTITIONS) for index in range(500)}
    assert partitions == set(range(PARTITIONS))


# event time against publish time


@pytest.mark.parametrize("plan", [plan_a, plan_c])
def test_event_time_a_day_after_publishing_is_dead_lettered(plan: Any) -> None:
    make = assignment_event if plan is plan_a else conversion_event
    # published 2024-05-01T10:05Z; one day later is 2024-05-02T10:05Z
    within = plan(make(timestamp="2024-05-02T10:05:00+00:00"))
    beyond = plan(make(timestamp="2024-05-02T10:05:00.001+00:00"))
    assert within.command["k"] in ("a", "c")
    assert beyond.command["k"] == "d"
    entry = outbox_entry(beyond)
    assert entry["reason"] == "timestamp_out_of_range"
    assert "86400 s" in entry["detail"]


def test_future_skew_is_configurable() -> None:
    value = orjson.dumps(assignment_event(timestamp="2024-05-01T10:06:00+00:00"))
    source = message(ASSIGNMENTS, value)
    assert (
        plan_assignment(source, CATALOG, PARTITIONS, max_future_skew_ms=60_000).command["k"] == "a"
    )
    assert (
        plan_assignment(source, CATALOG, PARTITIONS, max_future_skew_ms=59_999).command["k"] == "d"
    )


def test_publish_time_falls_back_to_event_time_without_a_record_timestamp() -> None:
    value = orjson.dumps(conversion_event())
    source = SourceMessage(
        CONVERSIONS, partition_for("visitor-1", PARTITIONS), 1, b"visitor-1", value
    )
    command = plan_conversion(source, CATALOG, PARTITIONS).command
    assert command["p"] == 1_714_557_600_000  # 2024-05-01T10:00Z, the event's own time
