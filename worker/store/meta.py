"""Facts every reader needs, kept in the meta hash: the input topics' partition count."""

from __future__ import annotations

from worker.store import keys
from worker.store.connection import Redis

DEFAULT_PARTITIONS = 12
"""Assumed by readers of a namespace no worker has started in yet."""


async def partition_count(redis: Redis, prefix: str) -> int:
    """The input topics' partition count, recorded by the worker at start-up."""
    raw = await redis.hget(keys.meta_key(prefix), "partitions")
    return int(raw) if raw else DEFAULT_PARTITIONS


async def record_partition_count(redis: Redis, prefix: str, partitions: int) -> None:
    """Record the partition count for readers (every worker, at start-up)."""
    await redis.hset(keys.meta_key(prefix), "partitions", partitions)
