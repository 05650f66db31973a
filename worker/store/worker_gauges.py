"""What the worker's gauges read from Redis: applied offsets, held conversions, outboxes."""

from __future__ import annotations

from dataclasses import dataclass

from worker.store import keys
from worker.store.connection import Redis


@dataclass(frozen=True)
class PartitionState:
    """One partition's applied offsets (topic -> offset), hold size and outbox length."""

    partition: int
    applied: dict[str, int]
    held: int
    outbox: int


async def read_partition_states(redis: Redis, prefix: str, partitions: int) -> list[PartitionState]:
    """Every partition's state in one round trip (three cheap commands per partition)."""
    async with redis.pipeline(transaction=False) as pipe:
        for partition in range(partitions):
            pipe.hgetall(keys.offsets_key(prefix, partition))
            pipe.zcard(keys.hold_key(prefix, partition))
            pipe.llen(keys.outbox_key(prefix, partition))
        replies = await pipe.execute()
    states = []
    for partition in range(partitions):
        offsets, held, outbox = replies[3 * partition : 3 * partition + 3]
        applied = {topic.decode(): int(offset) for topic, offset in offsets.items()}
        states.append(PartitionState(partition, applied, int(held), int(outbox)))
    return states
