"""Reads an experiment's counters from every partition and sums them per cell."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from redis.asyncio import Redis

from worker.store import keys

DEFAULT_PARTITIONS = 12


@dataclass(frozen=True)
class CellKey:
    """One counter cell: variant x entry hour x segment cell; metric names its number."""

    variant: str
    hour: int
    device: str
    browser: str
    os: str
    country: str
    visitor_type: str
    source: str


def parse_field(field: str) -> tuple[CellKey, str]:
    """`variant|hour|device|browser|os|country|visitor_type|source|metric`."""
    variant, hour, device, browser, os_, country, visitor_type, source, metric = field.split("|")
    return CellKey(variant, int(hour), device, browser, os_, country, visitor_type, source), metric


async def partition_count(redis: Redis, prefix: str) -> int:
    """The input topics' partition count, recorded by the worker at start-up."""
    raw = await redis.hget(keys.meta_key(prefix), "partitions")
    return int(raw) if raw else DEFAULT_PARTITIONS


async def read_counters(
    redis: Redis, prefix: str, experiment_id: str
) -> dict[CellKey, dict[str, float]]:
    """All counters of the experiment, summed over partitions."""
    partitions = await partition_count(redis, prefix)
    async with redis.pipeline(transaction=False) as pipe:
        for partition in range(partitions):
            pipe.hgetall(keys.counters_key(prefix, partition, experiment_id))
        replies = await pipe.execute()
    cells: dict[CellKey, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for reply in replies:
        for raw_field, raw_value in reply.items():
            cell, metric = parse_field(raw_field.decode())
            cells[cell][metric] += float(raw_value)
    return cells
