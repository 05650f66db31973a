"""Reads an experiment's counters from every partition and sums them per cell."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from worker.store import keys

DEFAULT_PARTITIONS = 12

VISITOR_METRICS = ("n", "visits", "me")
"""Positions in a cell's packed visitor metrics (apply_batch.lua's VISITOR_METRICS)."""
GOAL_METRICS = ("cv", "cvis", "ev", "ev2", "ord", "rev", "rev2")
"""Positions in a cell's packed metrics of one goal (apply_batch.lua's GOAL_METRICS)."""


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


async def partition_count(redis: Redis, prefix: str) -> int:
    """The input topics' partition count, recorded by the worker at start-up."""
    raw = await redis.hget(keys.meta_key(prefix), "partitions")
    return int(raw) if raw else DEFAULT_PARTITIONS


async def read_counters(
    redis: Redis, prefix: str, experiment_id: str
) -> dict[CellKey, dict[str, float]]:
    """All counters of the experiment, summed over partitions.

    Metrics are named `n`, `visits`, `me` and `g:{goal}:{cv|cvis|ev|ev2|ord|rev|rev2}`;
    a metric that was never counted in a cell may be absent or 0.
    """
    partitions = await partition_count(redis, prefix)
    async with redis.pipeline(transaction=False) as pipe:
        for partition in range(partitions):
            pipe.smembers(keys.counter_hours_key(prefix, partition, experiment_id))
            pipe.hgetall(keys.cells_key(prefix, partition))
        indexes = await pipe.execute()
    hours = [sorted(int(hour) for hour in indexes[2 * p]) for p in range(partitions)]
    async with redis.pipeline(transaction=False) as pipe:
        for partition in range(partitions):
            for hour in hours[partition]:
                pipe.hgetall(keys.counters_key(prefix, partition, experiment_id, hour))
        replies = iter(await pipe.execute())
    cells: dict[CellKey, dict[str, float]] = {}
    # Cell texts are shared by partitions (ids are not): parse each text once.
    cell_parts: dict[bytes, tuple[str, ...]] = {}
    for partition in range(partitions):
        cell_ids = indexes[2 * partition + 1]
        texts = {cell_id: text for text, cell_id in cell_ids.items() if text != b"#"}
        for hour in hours[partition]:
            for raw_field, raw_value in next(replies).items():
                cell_id, variant, *goal = raw_field.decode().split(":")
                text = texts[cell_id.encode()]
                parts = cell_parts.get(text)
                if parts is None:
                    parts = cell_parts[text] = tuple(text.decode().split("|"))
                key = CellKey(variant, hour, *parts)
                metrics = cells.get(key)
                if metrics is None:
                    metrics = cells[key] = {}
                _add_packed(metrics, raw_value, goal[0] if goal else None)
    return cells


def _add_packed(metrics: dict[str, float], packed: bytes, goal: str | None) -> None:
    """Adds one stored field's comma-separated metrics to a cell's named metrics."""
    names = VISITOR_METRICS if goal is None else [f"g:{goal}:{name}" for name in GOAL_METRICS]
    for name, text in zip(names, packed.split(b","), strict=False):
        metrics[name] = metrics.get(name, 0.0) + float(text)
