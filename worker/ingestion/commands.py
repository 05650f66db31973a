"""Turns one Kafka message into one command for the Lua sink (pure: no I/O).

The commands are the typed dicts of worker/store/sink_protocol.py, which the script
reads by short keys; absent values are left out, never null.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypeVar

import orjson
from pydantic import ValidationError

from worker.events.assignment import UNKNOWN_COUNTRY, Assignment
from worker.events.conversion import Conversion
from worker.events.dead_letter import (
    DeadLetterEntry,
    Reason,
    b64,
    dead_letter_entry,
    source_message,
)
from worker.events.experiment import ExperimentDefinition, ExperimentStatus, ExperimentType
from worker.events.segment_cell import SegmentCell
from worker.ingestion.partitioning import partition_for
from worker.store.sink_protocol import (
    AssignmentCommand,
    ConversionCommand,
    ExperimentRules,
    ForwardEntry,
    OutboxCommand,
    SinkCommand,
    experiment_rules,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EXTENDED_CONTEXT = (
    "region", "city", "landing_page", "ref_page", "user_agent", "utm",
    "query_params", "attributes", "sdk", "timezone", "first_seen_at", "raw",
)  # fmt: skip
"""Context kept in the visitor state for scans; ``raw`` is the text of enumerated
values counted as `other` (``Context.raw``), present only when there was some."""


@dataclass(frozen=True)
class SourceMessage:
    """What the sink needs of a Kafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    """The record's timestamp: publish time (LogAppendTime, the broker's clock) on the
    topics the worker creates, the producer's clock on CreateTime topics."""

    def published_ms(self, fallback: int = 0) -> int:
        """The publish time, or `fallback` for a record without one (old message format)."""
        stamp = self.timestamp_ms
        return stamp if stamp is not None and stamp >= 0 else fallback


DEFAULT_MAX_FUTURE_SKEW_MS = 86_400_000
"""How far an event's own timestamp may lie after its record's publish time."""


@dataclass(frozen=True)
class Plan:
    """The command for one message, and whether an experiment lookup missed.

    A miss may only mean the definition was published a moment ago: the caller
    catches the registry up once and plans again before dead-lettering.
    """

    command: SinkCommand
    missed_experiment: str | None = None
    """The experiment id whose lookup missed (unknown, or without that variant or status)."""

    @property
    def registry_miss(self) -> bool:
        return self.missed_experiment is not None


def epoch_ms(moment: datetime) -> int:
    """Whole milliseconds since the epoch (floored), exactly, from the timedelta's parts
    (dividing by a timedelta cost about three times as much, per event)."""
    since = moment - EPOCH
    return since.days * 86_400_000 + since.seconds * 1000 + since.microseconds // 1000


def segment_cell(assignment: Assignment) -> str:
    """The text of the visitor's segment cell (every visitor is in exactly one)."""
    context = assignment.context
    return SegmentCell(
        device=context.device.value,
        browser=context.browser.value,
        os=context.os.value,
        country=context.country or UNKNOWN_COUNTRY,
        visitor_type=assignment.visitor_type().value,
        source=context.source.value,
    ).text


def _dead(message: SourceMessage, reason: Reason, detail: str, miss: str | None = None) -> Plan:
    entry = dead_letter_entry(
        reason,
        detail,
        source_message(
            message.topic, message.partition, message.offset, message.key, message.value
        ),
    )
    return Plan(_outbox_command("d", message, entry), missed_experiment=miss)


def _outbox_command(
    kind: Literal["d", "f"], message: SourceMessage, entry: DeadLetterEntry | ForwardEntry
) -> OutboxCommand:
    """The command that only queues `entry` in the outbox, at the message's position."""
    return {
        "k": kind,
        "t": message.topic,
        "o": message.offset,
        "p": message.published_ms(),
        "out": orjson.dumps(entry).decode(),
    }


def _schema_detail(error: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(part) for part in item['loc']) or '(root)'}: {item['msg']}"
        for item in error.errors(include_url=False)[:5]
    ]
    return "; ".join(problems)[:1000]


def _misrouted(message: SourceMessage, visitor_id: str, partitions: int) -> Plan | None:
    expected = partition_for(visitor_id, partitions)
    if expected == message.partition:
        return None
    entry: ForwardEntry = {
        "kind": "forward",
        "topic": message.topic,
        "partition": expected,
        "key": b64(visitor_id.encode()),
        "value": b64(message.value),
    }
    return Plan(_outbox_command("f", message, entry))


EventT = TypeVar("EventT", Assignment, Conversion)


def _parse(message: SourceMessage, model: type[EventT], partitions: int) -> EventT | Plan:
    """The validated event, or the plan that disposes of the message instead."""
    try:
        event = model.model_validate_json(message.value or b"")
    except ValidationError as error:
        return _invalid(message, error)
    forward = _misrouted(message, event.visitor_id, partitions)
    return event if forward is None else forward


def _event_ms(
    message: SourceMessage, event: Assignment | Conversion, max_future_skew_ms: int
) -> int | Plan:
    """The event's time in ms, or the plan that dead-letters an event from the future."""
    event_ms = epoch_ms(event.timestamp)
    if message.timestamp_ms is not None and message.timestamp_ms >= 0:
        # A producer bug (a clock in the wrong zone, milliseconds taken for seconds):
        # counted, it would sit in an hour that has not come yet.
        ahead_ms = event_ms - message.timestamp_ms
        if ahead_ms > max_future_skew_ms:
            return _dead(
                message,
                Reason.TIMESTAMP_OUT_OF_RANGE,
                f"timestamp {event.timestamp.isoformat()} is {ahead_ms / 1000:.0f} s after "
                f"the record was published (at most {max_future_skew_ms // 1000} s allowed)",
            )
    return event_ms


def plan_assignment(
    message: SourceMessage,
    catalog: Mapping[str, ExperimentDefinition],
    partitions: int,
    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS,
) -> Plan:
    """The command for a message of the assignments topic."""
    event = _parse(message, Assignment, partitions)
    if isinstance(event, Plan):
        return event
    event_ms = _event_ms(message, event, max_future_skew_ms)
    if isinstance(event_ms, Plan):
        return event_ms
    experiment = catalog.get(event.experiment_id)
    if experiment is None:
        return _dead(
            message,
            Reason.UNKNOWN_EXPERIMENT,
            f"experiment {event.experiment_id!r} is not defined",
            miss=event.experiment_id,
        )
    if experiment.variant(event.variant_id) is None:
        return _dead(
            message,
            Reason.UNKNOWN_VARIANT,
            f"experiment {experiment.id!r} has no variant {event.variant_id!r}",
            miss=event.experiment_id,
        )
    if not experiment.accepts_assignments:
        return _dead(
            message,
            Reason.EXPERIMENT_NOT_LIVE,
            f"experiment {experiment.id!r} is {experiment.status.value}: it takes no new assignments",
            miss=event.experiment_id,
        )
    held_out = holdout_refusal(experiment, event, catalog)
    if held_out is not None:
        return _dead(message, Reason.HELD_OUT, held_out)
    extended = event.context.model_dump(
        mode="json", include=set(EXTENDED_CONTEXT), exclude_none=True
    )
    command: AssignmentCommand = {
        "k": "a",
        "t": message.topic,
        "o": message.offset,
        "p": message.published_ms(fallback=event_ms),
        "id": event.event_id,
        "u": event.visitor_id,
        "x": event.experiment_id,
        "v": event.variant_id,
        "ts": event_ms,
        "c": segment_cell(event),
    }
    if event.visit_id is not None:
        command["s"] = event.visit_id
    if extended:
        command["ctx"] = orjson.dumps(extended).decode()
    return Plan(command)


def holdout_refusal(
    experiment: ExperimentDefinition,
    event: Assignment,
    catalog: Mapping[str, ExperimentDefinition],
) -> str | None:
    """Why a holdout refuses this assignment, or None.

    A holdout experiment's control is its held-out share: a visitor whose bucket
    (``ExperimentDefinition.holds_out``) falls in it may only be assigned the control,
    any other visitor only another variant. While the holdout runs (live or inactive),
    an experiment naming it in ``holdout_id`` does not enrol its held-out visitors.
    The bucket is a function of the two ids alone, so the answer does not depend on the
    order the events arrive in, and a replay gives the same one.
    """
    visitor = event.visitor_id
    if experiment.type is ExperimentType.HOLDOUT:
        held = experiment.holds_out(visitor)
        if held != (event.variant_id == experiment.control.id):
            group = "held out" if held else "not held out"
            return (
                f"visitor {visitor!r} is {group} by holdout {experiment.id!r}: it is assigned "
                f"{'only' if held else 'anything but'} its control {experiment.control.id!r}"
            )
        return None
    holdout = catalog.get(experiment.holdout_id) if experiment.holdout_id else None
    if (
        holdout is not None
        and holdout.type is ExperimentType.HOLDOUT
        and holdout.accepts_conversions
        and holdout.holds_out(visitor)
    ):
        return (
            f"visitor {visitor!r} is held out by holdout {holdout.id!r}: experiment "
            f"{experiment.id!r} does not enrol it"
        )
    return None


def plan_conversion(
    message: SourceMessage,
    catalog: Mapping[str, ExperimentDefinition],
    partitions: int,
    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS,
) -> Plan:
    """The command for a message of the conversions topic."""
    event = _parse(message, Conversion, partitions)
    if isinstance(event, Plan):
        return event
    event_ms = _event_ms(message, event, max_future_skew_ms)
    if isinstance(event_ms, Plan):
        return event_ms
    if event.experiment_id is not None:
        experiment = catalog.get(event.experiment_id)
        if experiment is None:
            return _dead(
                message,
                Reason.UNKNOWN_EXPERIMENT,
                f"experiment {event.experiment_id!r} is not defined",
                miss=event.experiment_id,
            )
        if not experiment.accepts_conversions:
            return _dead(
                message,
                Reason.EXPERIMENT_NOT_LIVE,
                f"experiment {experiment.id!r} is {experiment.status.value}: it counts no conversions",
                miss=event.experiment_id,
            )
    held = source_message(
        message.topic, message.partition, message.offset, message.key, message.value
    )
    held["goal"] = event.goal
    command: ConversionCommand = {
        "k": "c",
        "t": message.topic,
        "o": message.offset,
        "p": message.published_ms(fallback=event_ms),
        "id": event.event_id,
        "u": event.visitor_id,
        "g": event.goal,
        "ts": event_ms,
        "held": orjson.dumps(held).decode(),
    }
    if event.experiment_id is not None:
        command["x"] = event.experiment_id
    if event.visit_id is not None:
        command["s"] = event.visit_id
    if event.value is not None:
        command["val"] = repr(event.value)
    if event.currency is not None:
        command["cur"] = event.currency
    if event.attributes:
        command["at"] = event.attributes
    return Plan(command)


def _invalid(message: SourceMessage, error: ValidationError) -> Plan:
    if message.value is None:
        return _dead(message, Reason.MALFORMED_JSON, "the message has no value")
    # pydantic reports unparsable JSON as a json_invalid error of the root.
    if any(item["type"] in ("json_invalid", "json_type") for item in error.errors()):
        return _dead(message, Reason.MALFORMED_JSON, _schema_detail(error))
    return _dead(message, Reason.SCHEMA_VIOLATION, _schema_detail(error))


def sink_rules(catalog: Mapping[str, ExperimentDefinition]) -> dict[str, ExperimentRules]:
    """The rules of every experiment whose counts may still change (not completed): a
    conversion counts for every experiment its visitor entered, which no batch names."""
    return {
        experiment_id: experiment_rules(definition)
        for experiment_id, definition in catalog.items()
        if definition.status is not ExperimentStatus.COMPLETED
    }
