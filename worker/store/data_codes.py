"""Kameleoon data codes: an unguessable handle on one background result computation.

A code is created PENDING with the project and experiment it was asked for, then
becomes READY (with the data) or ERROR (with a sentence). Every record expires (Redis
TTL): an expired code is indistinguishable from one that never existed.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from typing import Any, Literal

import orjson

from worker.store import keys
from worker.store.connection import Redis

CODE_BYTES = 32
CODE_PATTERN = r"^[A-Za-z0-9_\-]{43}$"
"""What ``secrets.token_urlsafe(32)`` produces; anything else is not a code."""

DATA_CODE_SECONDS = 3600
"""How long a code and its result live."""

Status = Literal["PENDING", "READY", "ERROR"]


@dataclass(frozen=True)
class DataCode:
    """One computation: who asked, for which experiment, its status and outcome."""

    code: str
    project_key: str
    experiment_id: str
    status: Status = "PENDING"
    data: dict[str, Any] | None = None
    error: str | None = None


async def create_data_code(
    redis: Redis, prefix: str, project_key: str, experiment_id: str
) -> DataCode:
    """A new PENDING code for the experiment."""
    record = DataCode(
        code=secrets.token_urlsafe(CODE_BYTES),
        project_key=project_key,
        experiment_id=experiment_id,
    )
    await redis.set(
        keys.data_code_key(prefix, record.code), orjson.dumps(asdict(record)), ex=DATA_CODE_SECONDS
    )
    return record


async def finish_data_code(
    redis: Redis,
    prefix: str,
    record: DataCode,
    data: dict[str, Any] | None = None,
    error: str | None = None,
) -> DataCode:
    """Store the outcome: READY with ``data``, or ERROR with ``error`` when given.

    The outcome keeps the code's original expiry; a code that expired meanwhile stays
    gone (the result would be unreadable anyway).
    """
    done = DataCode(
        code=record.code,
        project_key=record.project_key,
        experiment_id=record.experiment_id,
        status="ERROR" if error is not None else "READY",
        data=data,
        error=error,
    )
    await redis.set(
        keys.data_code_key(prefix, record.code), orjson.dumps(asdict(done)), xx=True, keepttl=True
    )
    return done


async def find_data_code(redis: Redis, prefix: str, code: str) -> DataCode | None:
    """The record of a live code, or None when it is unknown or expired."""
    raw = await redis.get(keys.data_code_key(prefix, code))
    return None if raw is None else DataCode(**orjson.loads(raw))
