"""What one experiment's answers depend on, read from Redis in one round trip.

The stored definition, the default-result snapshot and the recorded end date are the
only Redis data a Mida result is made of (besides computed results, which the API's
``ResultSource`` keeps). Comparing their raw bytes with the bytes an answer was made
from tells whether that answer is still current, without parsing anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.store import keys
from worker.store.connection import Redis


@dataclass(frozen=True)
class ExperimentState:
    """Raw stored bytes (None: absent, or not asked for)."""

    definition: bytes | None
    snapshot: bytes | None
    ended_at: bytes | None


async def read_state(
    redis: Redis, prefix: str, experiment_id: str, *, snapshot: bool, ended_at: bool
) -> ExperimentState:
    """The definition and, when asked for, the snapshot and end date: one pipeline
    (not a transaction: the keys live in different Redis Cluster slots)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hget(keys.experiments_key(prefix), experiment_id)
        if snapshot:
            pipe.get(keys.snapshot_key(prefix, experiment_id))
        if ended_at:
            pipe.get(keys.ended_key(prefix, experiment_id))
        replies = list(await pipe.execute())
    definition = replies.pop(0)
    return ExperimentState(
        definition=definition,
        snapshot=replies.pop(0) if snapshot else None,
        ended_at=replies.pop(0) if ended_at else None,
    )
