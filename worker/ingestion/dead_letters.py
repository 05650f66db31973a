"""The dead-letter record: what could not be used, why, and the original bytes."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson


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


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def source_message(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
) -> dict[str, Any]:
    """The original message as it travels through the outbox (bytes as base64)."""
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": b64(key),
        "value": b64(value),
    }


def dead_letter_payload(reason: str, detail: str, message: dict[str, Any]) -> bytes:
    """The JSON published to the dead-letter topic."""
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
