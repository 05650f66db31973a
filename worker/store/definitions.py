"""Experiment definitions as the worker stored them in Redis (the read model)."""

from __future__ import annotations

from redis.asyncio import Redis

from worker.events.experiment import ExperimentDefinition
from worker.store import keys


async def load_definition(
    redis: Redis, prefix: str, experiment_id: str
) -> ExperimentDefinition | None:
    raw = await redis.hget(keys.experiments_key(prefix), experiment_id)
    return None if raw is None else ExperimentDefinition.model_validate_json(raw)


async def load_definitions(redis: Redis, prefix: str) -> list[ExperimentDefinition]:
    raw = await redis.hgetall(keys.experiments_key(prefix))
    return sorted(
        (ExperimentDefinition.model_validate_json(value) for value in raw.values()),
        key=lambda definition: definition.id,
    )
