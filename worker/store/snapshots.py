"""Result snapshots, the once-per-interval claim, and decisions recorded exactly once."""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson

from worker.store import keys
from worker.store.connection import Redis

RECORD_DECISIONS = resources.files("worker.store").joinpath("record_decisions.lua").read_text()
HISTORY_LIMIT = 200
"""How many decision events an experiment's history keeps, the newest: a page's worth,
and a bound on the list whatever a bandit's reallocation period."""


async def claim_interval(
    redis: Redis, prefix: str, experiment_id: str, interval_index: int, ttl_seconds: int
) -> bool:
    """True for exactly one caller per experiment and interval, however many workers ask."""
    key = keys.snapshot_claim_key(prefix, experiment_id, interval_index)
    return bool(await redis.set(key, "1", nx=True, ex=max(ttl_seconds, 1)))


async def save_snapshot(
    redis: Redis, prefix: str, experiment_id: str, document: dict[str, Any]
) -> None:
    """Store the experiment's latest snapshot (the API serves it)."""
    await redis.set(keys.snapshot_key(prefix, experiment_id), orjson.dumps(document))


async def stored_snapshot(redis: Redis, prefix: str, experiment_id: str) -> bytes | None:
    """The stored snapshot's JSON, unparsed (the API parses it once per distinct bytes)."""
    raw = await redis.get(keys.snapshot_key(prefix, experiment_id))
    return raw.encode() if isinstance(raw, str) else raw


async def load_decision_state(redis: Redis, prefix: str, experiment_id: str) -> dict[str, Any]:
    """The state the experiment's next decisions start from ({} before the first)."""
    raw = await redis.get(keys.decision_state_key(prefix, experiment_id))
    return {} if raw is None else dict(orjson.loads(raw))


async def record_decisions(
    redis: Redis,
    prefix: str,
    experiment_id: str,
    decisions: list[tuple[str, bytes, bytes]],
    state: dict[str, Any],
) -> int:
    """Queue each (idempotency key, outbox entry, event JSON) not taken before, adding its
    event to the decision history; save the state. Atomic (record_decisions.lua), in the
    experiment's one Cluster slot. Returns how many were new."""
    args: list[str | bytes | int] = [orjson.dumps(state), HISTORY_LIMIT]
    for key, entry, event in decisions:
        args += [key, entry, event]
    script = redis.register_script(RECORD_DECISIONS)
    taken = await script(
        keys=[
            keys.decided_key(prefix, experiment_id),
            keys.winners_outbox_key(prefix, experiment_id),
            keys.decision_state_key(prefix, experiment_id),
            keys.decision_history_key(prefix, experiment_id),
        ],
        args=args,
    )
    return int(taken)


async def decision_history(redis: Redis, prefix: str, experiment_id: str) -> list[dict[str, Any]]:
    """The experiment's recorded decision events (their published JSON, parsed), newest
    first; the caller validates them as the decision event models, which live above the
    store."""
    raw = await redis.lrange(keys.decision_history_key(prefix, experiment_id), 0, -1)
    return [dict(orjson.loads(event)) for event in raw]


async def mark_ended(redis: Redis, prefix: str, experiment_id: str, ended_at: str) -> str:
    """The first recorded end date of a completed experiment (later calls keep it)."""
    await redis.set(keys.ended_key(prefix, experiment_id), ended_at, nx=True)
    return await load_ended_at(redis, prefix, experiment_id) or ended_at


async def load_ended_at(redis: Redis, prefix: str, experiment_id: str) -> str | None:
    """The recorded end date (ISO 8601) of a completed experiment, if one was recorded."""
    raw = await redis.get(keys.ended_key(prefix, experiment_id))
    return raw.decode() if isinstance(raw, bytes) else raw
