"""Result snapshots, the once-per-interval claim, and decisions recorded exactly once."""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

# Decisions go to the outbox in the same atomic step that marks them taken, so a
# decision is never lost between "decided" and "published", and never taken twice.
RECORD_DECISIONS = """
-- ARGV: key prefix, then (idempotency key, event) pairs, then the new state
local taken = 0
for index = 2, #ARGV - 1, 2 do
  if redis.call('SET', ARGV[1] .. ARGV[index], '1', 'NX') then
    redis.call('RPUSH', KEYS[1], ARGV[index + 1])
    taken = taken + 1
  end
end
redis.call('SET', KEYS[2], ARGV[#ARGV])
return taken
"""


def snapshot_key(prefix: str, experiment_id: str) -> str:
    return f"{prefix}:snapshot:{experiment_id}"


def claim_key(prefix: str, experiment_id: str, interval_index: int) -> str:
    return f"{prefix}:snapshot-claim:{experiment_id}:{interval_index}"


def decision_state_key(prefix: str, experiment_id: str) -> str:
    return f"{prefix}:decision-state:{experiment_id}"


def winners_outbox_key(prefix: str) -> str:
    return f"{prefix}:winners-outbox"


def ended_key(prefix: str, experiment_id: str) -> str:
    return f"{prefix}:ended-at:{experiment_id}"


async def claim_interval(
    redis: Redis, prefix: str, experiment_id: str, interval_index: int, ttl_seconds: int
) -> bool:
    """True for exactly one caller per experiment and interval, however many workers ask."""
    key = claim_key(prefix, experiment_id, interval_index)
    return bool(await redis.set(key, "1", nx=True, ex=max(ttl_seconds, 1)))


async def save_snapshot(
    redis: Redis, prefix: str, experiment_id: str, document: dict[str, Any]
) -> None:
    await redis.set(snapshot_key(prefix, experiment_id), orjson.dumps(document))


async def stored_snapshot(redis: Redis, prefix: str, experiment_id: str) -> bytes | None:
    """The stored snapshot's JSON, unparsed (the API parses it once per distinct bytes)."""
    raw = await redis.get(snapshot_key(prefix, experiment_id))
    return raw.encode() if isinstance(raw, str) else raw


async def load_decision_state(redis: Redis, prefix: str, experiment_id: str) -> dict[str, Any]:
    raw = await redis.get(decision_state_key(prefix, experiment_id))
    return {} if raw is None else dict(orjson.loads(raw))


async def record_decisions(
    redis: Redis,
    prefix: str,
    experiment_id: str,
    decisions: list[tuple[str, bytes]],
    state: dict[str, Any],
) -> int:
    """Queue each (idempotency key, outbox entry) not taken before; save the state. Atomic."""
    args: list[str | bytes] = [f"{prefix}:decision:"]
    for key, entry in decisions:
        args += [key, entry]
    args.append(orjson.dumps(state))
    taken = await redis.eval(
        RECORD_DECISIONS,
        2,
        winners_outbox_key(prefix),
        decision_state_key(prefix, experiment_id),
        *args,
    )
    return int(taken)


async def mark_ended(redis: Redis, prefix: str, experiment_id: str, ended_at: str) -> str:
    """The first recorded end date of a completed experiment (later calls keep it)."""
    await redis.set(ended_key(prefix, experiment_id), ended_at, nx=True)
    return await load_ended_at(redis, prefix, experiment_id) or ended_at


async def load_ended_at(redis: Redis, prefix: str, experiment_id: str) -> str | None:
    """The recorded end date (ISO 8601) of a completed experiment, if one was recorded."""
    raw = await redis.get(ended_key(prefix, experiment_id))
    return raw.decode() if isinstance(raw, bytes) else raw
