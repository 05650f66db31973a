"""Outboxes: Redis lists of what a script queued for Kafka, in the order it was queued.

The Lua scripts append (apply_batch.lua: a partition's dead letters and forwards;
record_decisions.lua: an experiment's decisions); the relay (worker/relay.py) reads the
oldest entries, publishes them, and only then drops them.
"""

from __future__ import annotations

from worker.store.connection import Redis


async def oldest_entries(redis: Redis, outbox: str, count: int) -> list[bytes | str]:
    """Up to ``count`` entries from the head of the outbox, left in place."""
    return list(await redis.lrange(outbox, 0, count - 1))


async def drop_oldest(redis: Redis, outbox: str, count: int) -> None:
    """Remove ``count`` entries from the head of the outbox (they were published)."""
    await redis.ltrim(outbox, count, -1)
