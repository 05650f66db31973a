"""Per-visitor values of one goal over a past window, from every visitor's state.

Read once, when an experiment goes live with a percentile cap (``Goal.cap_percentile``):
it reads every visitor bucket of the namespace, so it costs a full pass over them.
"""

from __future__ import annotations

from collections.abc import Callable

from worker.store import keys
from worker.store.connection import Redis
from worker.store.meta import partition_count
from worker.store.visitor_reader import read_bucket_states
from worker.store.visitor_records import StoredVisitor, decode_visitor, name_ids


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
        stored = await read_bucket_states(redis, prefix, partition)
        ids = name_ids(await redis.hgetall(keys.names_key(prefix, partition)))
        for _, data in stored:
            value = _goal_value(decode_visitor(data, ids), goal, since_ms, until_ms, revenue)
            if value is not None:
                values.append(value)
        if progress is not None:
            progress(partition + 1, partitions)
    return values


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
