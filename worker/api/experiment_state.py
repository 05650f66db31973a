"""What one experiment's answers depend on, read from Redis in one round trip.

The stored definition, the default-result snapshot and the recorded end date are the
only Redis data a Mida result is made of (besides computed results, which the
``ResultSource`` keeps). Comparing their raw bytes with the bytes an answer was made
from tells whether that answer is still current, without parsing anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from redis.asyncio import Redis

from worker.events.experiment import ExperimentDefinition, ExperimentStatus
from worker.store import keys
from worker.store.snapshots import ended_key, snapshot_key

PARSED_DEFINITIONS = 256


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
            pipe.get(snapshot_key(prefix, experiment_id))
        if ended_at:
            pipe.get(ended_key(prefix, experiment_id))
        replies = list(await pipe.execute())
    definition = replies.pop(0)
    return ExperimentState(
        definition=definition,
        snapshot=replies.pop(0) if snapshot else None,
        ended_at=replies.pop(0) if ended_at else None,
    )


async def load_definition(
    redis: Redis, prefix: str, experiment_id: str
) -> ExperimentDefinition | None:
    """The stored definition, parsed once per distinct stored text."""
    raw = await redis.hget(keys.experiments_key(prefix), experiment_id)
    return None if raw is None else parse_definition(raw)


@lru_cache(maxsize=PARSED_DEFINITIONS)
def parse_definition(raw: bytes) -> ExperimentDefinition:
    """A stored definition's model. Shared between requests: callers never mutate it
    (they use ``model_copy``)."""
    return ExperimentDefinition.model_validate_json(raw)


def needs_ended_at(definition: ExperimentDefinition) -> bool:
    """Whether answers read the end date the worker recorded (``mida_routes.ended_at``)."""
    return definition.ended_at is None and definition.status is ExperimentStatus.COMPLETED
