"""Per-visitor values of one goal over a past window, from every visitor's state.

Read once, when an experiment goes live with a percentile cap (``Goal.cap_percentile``):
it reads every visitor bucket of the namespace, so it costs a full pass over them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping

from worker.store import keys
from worker.store.connection import Redis
from worker.store.meta import partition_count
from worker.store.visitor_records import StoredVisitor, bucket_count, decode_visitor, name_ids

BUCKETS_PER_READ = 500
"""Buckets read per round trip (a few dozen visitors each)."""


async def visitor_goal_values(
    redis: Redis,
    prefix: str,
    goal: str,
    since_ms: int,
    until_ms: int,
    revenue: bool,
    progress: Callable[[int, int], None] | None = None,
) -> list[float]:
    """Per visitor with events of ``goal`` in [since_ms, until_ms): its revenue sum
    (``revenue``) or its number of events. Held events (not yet counted anywhere) and
    visitors without such events are left out.

    ``progress(partitions done, partitions)`` is called after each partition.
    """
    partitions = await partition_count(redis, prefix)
    values: list[float] = []
    for partition in range(partitions):
        layout = await redis.hgetall(keys.visitor_buckets_key(prefix, partition))
        while True:
            found = [
                value
                async for visitor in _visitors(redis, prefix, partition, bucket_count(layout))
                if (value := _goal_value(visitor, goal, since_ms, until_ms, revenue)) is not None
            ]
            # A bucket split meanwhile may have moved visitors into a bucket not read.
            after = await redis.hgetall(keys.visitor_buckets_key(prefix, partition))
            if bucket_count(after) == bucket_count(layout):
                break
            layout = after
        values.extend(found)
        if progress is not None:
            progress(partition + 1, partitions)
    return values


async def _visitors(
    redis: Redis, prefix: str, partition: int, buckets: int
) -> AsyncIterator[StoredVisitor]:
    """The visitors of the partition's first ``buckets`` buckets, decoded."""
    ids = name_ids(await redis.hgetall(keys.names_key(prefix, partition)))
    for start in range(0, buckets, BUCKETS_PER_READ):
        async with redis.pipeline(transaction=False) as pipe:
            for bucket in range(start, min(start + BUCKETS_PER_READ, buckets)):
                pipe.hgetall(keys.visitor_bucket_key(prefix, partition, bucket))
            replies: list[Mapping[bytes, bytes]] = await pipe.execute()
        # Names are only ever added, and a state names only ids given before it was
        # written; a name given after the first read is read again.
        for fields in replies:
            for data in fields.values():
                try:
                    yield decode_visitor(data, ids)
                except KeyError:
                    ids = name_ids(await redis.hgetall(keys.names_key(prefix, partition)))
                    yield decode_visitor(data, ids)


def _goal_value(
    visitor: StoredVisitor, goal: str, since_ms: int, until_ms: int, revenue: bool
) -> float | None:
    """The visitor's value of ``goal`` in the window, or None without such events."""
    total, events = 0.0, 0
    for name, stored in visitor.goals:
        if name != goal:
            continue
        for event in stored:
            if event.held_id is None and since_ms <= event.time_ms < until_ms:
                events += 1
                total += event.value or 0.0
    if events == 0:
        return None
    return total if revenue else float(events)
