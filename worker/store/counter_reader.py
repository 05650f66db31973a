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
    # A cell has a field per metric: parse each cell's text once, not once per field.
    by_text: dict[bytes, dict[str, float]] = {}
    for reply in replies:
        for raw_field, raw_value in reply.items():
            cell_text, _, metric = raw_field.rpartition(b"|")
            metrics = by_text.get(cell_text)
            if metrics is None:
                metrics = by_text[cell_text] = defaultdict(float)
            metrics[metric.decode()] += float(raw_value)
    cells: dict[CellKey, dict[str, float]] = {}
    for cell_text, metrics in by_text.items():
        cell, _ = parse_field(cell_text.decode() + "|")
        cells[cell] = metrics
    return cells
