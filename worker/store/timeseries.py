"""Daily series of one goal stored on request (PostHog's ``recalculate_timeseries``),
served until the next request; the API owns their JSON shape."""

from __future__ import annotations

from worker.store import keys
from worker.store.connection import Redis


async def save_timeseries(
    redis: Redis, prefix: str, experiment_id: str, goal: str, series: bytes
) -> None:
    """Store (or replace) the series of ``goal``."""
    await redis.set(keys.timeseries_key(prefix, experiment_id, goal), series)


async def load_timeseries(redis: Redis, prefix: str, experiment_id: str, goal: str) -> bytes | None:
    """The stored series of ``goal``, or None."""
    raw = await redis.get(keys.timeseries_key(prefix, experiment_id, goal))
    return raw.encode() if isinstance(raw, str) else raw
