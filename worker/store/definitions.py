"""Experiment definitions as the worker stored them in Redis (the read model).

The experiment registry (worker/ingestion/registry.py) writes them from `ab.experiments`;
the CLI and the read API read them.
"""

from __future__ import annotations

from worker.events.experiment import ExperimentDefinition
from worker.store import keys
from worker.store.connection import Redis


async def stored_definition(redis: Redis, prefix: str, experiment_id: str) -> bytes | None:
    """The stored definition's JSON, unparsed (callers that cache parses key them by it)."""
    raw = await redis.hget(keys.experiments_key(prefix), experiment_id)
    return raw.encode() if isinstance(raw, str) else raw


async def load_definition(
    redis: Redis, prefix: str, experiment_id: str
) -> ExperimentDefinition | None:
    """The stored definition of one experiment, or None."""
    raw = await stored_definition(redis, prefix, experiment_id)
    return None if raw is None else ExperimentDefinition.model_validate_json(raw)


async def load_definitions(redis: Redis, prefix: str) -> list[ExperimentDefinition]:
    """Every stored definition, by experiment id."""
    raw = await redis.hgetall(keys.experiments_key(prefix))
    return sorted(
        (ExperimentDefinition.model_validate_json(value) for value in raw.values()),
        key=lambda definition: definition.id,
    )


async def save_definition(
    redis: Redis, prefix: str, definition: ExperimentDefinition, offset: int | None = None
) -> None:
    """Store (or replace) a definition read from `ab.experiments` at ``offset``.

    Not a transaction: the two hashes sit in different Redis Cluster slots. Written in
    this order, a crash between the two leaves an older offset beside the new
    definition, which only makes records in between compare with the newer one."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(keys.experiments_key(prefix), definition.id, definition.model_dump_json())
        if offset is None:
            pipe.hdel(keys.definition_offsets_key(prefix), definition.id)
        else:
            pipe.hset(keys.definition_offsets_key(prefix), definition.id, offset)
        await pipe.execute()


async def load_accepted_definition(
    redis: Redis, prefix: str, experiment_id: str
) -> tuple[ExperimentDefinition, int | None] | None:
    """The stored definition of one experiment and the topic offset it was read at
    (None when stored without one), or None."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hget(keys.experiments_key(prefix), experiment_id)
        pipe.hget(keys.definition_offsets_key(prefix), experiment_id)
        raw, offset = await pipe.execute()
    if raw is None:
        return None
    definition = ExperimentDefinition.model_validate_json(raw)
    return definition, None if offset is None else int(offset)


async def delete_definition(redis: Redis, prefix: str, experiment_id: str) -> None:
    """Forget a definition (its tombstone was read)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hdel(keys.experiments_key(prefix), experiment_id)
        pipe.hdel(keys.definition_offsets_key(prefix), experiment_id)
        await pipe.execute()


async def claim_invalid_definition(redis: Redis, prefix: str, partition: int, offset: int) -> bool:
    """True for exactly one caller per invalid record of `ab.experiments`, the one that
    reports it: every worker reads the whole topic at every start."""
    marker = keys.invalid_definition_key(prefix, partition, offset)
    return bool(await redis.set(marker, "1", nx=True))


async def release_invalid_definition(
    redis: Redis, prefix: str, partition: int, offset: int
) -> None:
    """Undo `claim_invalid_definition` when the report was not sent, so it is tried again."""
    await redis.delete(keys.invalid_definition_key(prefix, partition, offset))
