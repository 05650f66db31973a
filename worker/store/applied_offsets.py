"""What each partition has applied: the `as of` of a result snapshot."""

from __future__ import annotations

from collections.abc import Iterable

from worker.store import keys
from worker.store.connection import Redis
from worker.store.meta import partition_count


async def read_applied_offsets(redis: Redis, prefix: str) -> dict[str, dict[str, int]]:
    """Topic -> partition -> offset of the last message applied to Redis.

    Read before a result is computed, so the result includes at least these messages:
    a consumer of `ab.results` can tell whether an event it published is in a snapshot.
    """
    partitions = await partition_count(redis, prefix)
    async with redis.pipeline(transaction=False) as pipe:
        for partition in range(partitions):
            pipe.hgetall(keys.offsets_key(prefix, partition))
        replies = await pipe.execute()
    applied: dict[str, dict[str, int]] = {}
    for partition, offsets in enumerate(replies):
        for topic, offset in offsets.items():
            applied.setdefault(topic.decode(), {})[str(partition)] = int(offset)
    return applied


async def read_partition_offsets(
    redis: Redis, prefix: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the offset Redis applied last, for those that have one."""
    wanted = list(partitions)
    async with redis.pipeline(transaction=False) as pipe:
        for topic, partition in wanted:
            pipe.hget(keys.offsets_key(prefix, partition), topic)
        replies = await pipe.execute()
    return {
        (topic, partition): int(reply)
        for (topic, partition), reply in zip(wanted, replies, strict=True)
        if reply is not None
    }
