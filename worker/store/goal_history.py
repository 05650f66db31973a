"""Per-visitor values of one goal over a past window, from every visitor's state.

Read once, when an experiment goes live with a percentile cap (``Goal.cap_percentile``):
it walks every visitor hash of the namespace, so it costs a full pass over them.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from worker.store import keys
from worker.store.connection import Redis, scan_batches
from worker.store.meta import partition_count

SCAN_COUNT = 2000


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
        pattern = _glob_escape(keys.visitor_key(prefix, partition, "")) + "*"
        async for batch in scan_batches(redis, pattern, SCAN_COUNT):
            async with redis.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.hgetall(key)
                replies = await pipe.execute()
            for fields in replies:
                value = _goal_value(fields, goal, since_ms, until_ms, revenue)
                if value is not None:
                    values.append(value)
        if progress is not None:
            progress(partition + 1, partitions)
    return values


def _goal_value(
    fields: dict[bytes, bytes], goal: str, since_ms: int, until_ms: int, revenue: bool
) -> float | None:
    """The visitor's value of ``goal`` in the window, from its ``kg`` and ``kG:{n}`` fields
    (apply_batch.lua), or None without such events."""
    listed = fields.get(b"kg")
    if listed is None:
        return None
    names = [item.rpartition(b":")[0] for item in listed.split(b",")]
    if goal.encode() not in names:
        return None
    event_prefix = b"k%d:" % (names.index(goal.encode()) + 1)
    total, events = 0.0, 0
    for name, raw in fields.items():
        if not name.startswith(event_prefix):
            continue
        record = orjson.loads(raw)
        if record.get("h") or not since_ms <= record["t"] < until_ms:
            continue
        events += 1
        total += float(record.get("v") or 0)
    if events == 0:
        return None
    return total if revenue else float(events)


def _glob_escape(text: str) -> str:
    """``text`` matched literally by SCAN's MATCH (prefixes may hold glob characters)."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)
