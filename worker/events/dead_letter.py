"""Dead letters: why an input could not be used, the record published to `ab.dead-letter`,
and the outbox entry that asks for it.

A dead letter travels in two shapes. The planner (and the Lua sink, for a conversion
whose hold expired) queues an outbox entry, `DeadLetterEntry`, in the same atomic write
as the offsets; the outbox relay, or the experiment registry for an invalid definition,
turns it into the published record, `DeadLetter`. Both are built here and only here:
`dead_letter_entry` and `dead_letter_payload` (apply_batch.lua's
`dead_letter_unassigned` writes the entry's shape; a test holds it to `DeadLetterEntry`).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal, NotRequired

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

# pydantic validates only typing_extensions' TypedDict on Python 3.11 (the test of the
# Lua sink's entries does).
from typing_extensions import TypedDict


class Reason(StrEnum):
    """Machine-readable reasons; consumers of `ab.dead-letter` switch on these."""

    MALFORMED_JSON = "malformed_json"
    SCHEMA_VIOLATION = "schema_violation"
    UNKNOWN_EXPERIMENT = "unknown_experiment"
    UNKNOWN_VARIANT = "unknown_variant"
    EXPERIMENT_NOT_LIVE = "experiment_not_live"
    NO_ASSIGNMENT = "no_assignment"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    INVALID_DEFINITION = "invalid_definition"
    IMMUTABLE_WHILE_LIVE = "immutable_while_live"
    HELD_OUT = "held_out"


class SourceRecord(TypedDict):
    """A Kafka record as it travels through Redis: where it was read, its bytes as base64."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: str | None
    goal: NotRequired[str]
    """Only in a held conversion: apply_batch.lua finds the held goal event by it."""


class DeadLetterEntry(TypedDict):
    """The outbox entry of one dead letter (see the module's docstring)."""

    kind: Literal["dead_letter"]
    reason: Reason
    detail: str
    message: SourceRecord


def b64(data: bytes | None) -> str | None:
    """Bytes as base64 text (JSON carries no bytes); None stays None."""
    return None if data is None else base64.b64encode(data).decode()


def unb64(text: str | None) -> bytes | None:
    """The bytes of `b64`'s text; None stays None."""
    return None if text is None else base64.b64decode(text)


def source_message(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
) -> SourceRecord:
    """The original message as it travels through the outbox (bytes as base64)."""
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": b64(key),
        "value": b64(value),
    }


def dead_letter_entry(reason: Reason, detail: str, message: SourceRecord) -> DeadLetterEntry:
    """The outbox entry that has the relay publish `message` as a dead letter."""
    return {"kind": "dead_letter", "reason": reason, "detail": detail, "message": message}


def dead_letter_payload(reason: str, detail: str, message: SourceRecord) -> bytes:
    """The JSON published to the dead-letter topic (a `DeadLetter`)."""
    value = unb64(message.get("value"))
    try:
        text = value.decode() if value is not None else None
    except UnicodeDecodeError:
        text = None
    return orjson.dumps(
        {
            "reason": reason,
            "detail": detail,
            "source": {
                "topic": message["topic"],
                "partition": message["partition"],
                "offset": message["offset"],
            },
            "key_base64": message.get("key"),
            "value_base64": message.get("value"),
            "value_text": text,
            "dead_lettered_at": datetime.now(UTC).isoformat(),
        }
    )


class DeadLetterSource(BaseModel):
    """Where the unusable message was read."""

    model_config = ConfigDict(extra="forbid")

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


class DeadLetter(BaseModel):
    """Topic `ab.dead-letter`, key = the original message's key.

    One record per input that could not be used, with the original bytes.
    """

    model_config = ConfigDict(extra="forbid")

    reason: Reason = Field(description="Machine-readable reason; consumers switch on it.")
    detail: str = Field(description="What was wrong, for people (e.g. the pydantic errors).")
    source: DeadLetterSource
    key_base64: str | None = Field(
        description="The original key, base64; null when the message had none.",
        json_schema_extra={"contentEncoding": "base64"},
    )
    value_base64: str | None = Field(
        description="The original value, base64; null for a tombstone.",
        json_schema_extra={"contentEncoding": "base64"},
    )
    value_text: str | None = Field(
        description="The original value as text; null when it is not valid UTF-8 or absent."
    )
    dead_lettered_at: AwareDatetime
