"""Builds the running totals (per variant, and per cell) and the day rollups of a prefix
written before they existed.

The sink (apply_batch.lua) keeps them up to date from the first event on; a prefix the
older sink wrote has only the hour hashes. ``rebuild_rollups`` derives both from those
hashes, for one partition and experiment at a time, in a transaction that WATCHes the
hour set and every hour read: a batch the sink applies meanwhile makes it start again,
so the result is the sum of exactly the hours it replaces (run it with the worker
stopped to avoid the retries). It overwrites what it builds, so running it again changes
nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline
from redis.exceptions import WatchError
from redis.typing import EncodableT, FieldT

from worker.store import keys
from worker.store.connection import Redis
from worker.store.meta import partition_count

HOURS_PER_DAY = 24


@dataclass(frozen=True)
class Rebuilt:
    """What one partition and experiment got: from how many hours, how many days."""

    partition: int
    experiment_id: str
    hours: int
    days: int


async def rebuild_rollups(
    redis: Redis, prefix: str, report: Callable[[Rebuilt], None] = lambda _: None
) -> list[Rebuilt]:
    """Totals and day rollups of every stored experiment (every one a result can be read
    of: results need the definition) with hour counters in the prefix."""
    stored = await redis.hkeys(keys.experiments_key(prefix))
    # the client answers bytes (no decode_responses)
    experiments = sorted(key.decode() for key in stored if isinstance(key, bytes))
    done = []
    for partition in range(await partition_count(redis, prefix)):
        for experiment_id in experiments:
            rebuilt = await _rebuild(redis, prefix, partition, experiment_id)
            if rebuilt.hours:
                report(rebuilt)
                done.append(rebuilt)
    return done


async def _rebuild(redis: Redis, prefix: str, partition: int, experiment_id: str) -> Rebuilt:
    while True:
        async with redis.pipeline(transaction=True) as pipe:
            try:
                return await _rebuild_watched(pipe, prefix, partition, experiment_id)
            except WatchError:
                continue  # the sink applied a batch meanwhile: read again


async def _rebuild_watched(
    pipe: Pipeline | ClusterPipeline, prefix: str, partition: int, experiment_id: str
) -> Rebuilt:
    """One rebuild: reads run at once while WATCHed, the writes in MULTI/EXEC. Every
    key is the partition's (one hash tag): on a Cluster, one slot, one node."""
    hour_set = keys.counter_hours_key(prefix, partition, experiment_id)
    await pipe.watch(hour_set)
    hours = sorted(int(hour) for hour in await pipe.smembers(hour_set))
    hour_keys = [keys.counters_key(prefix, partition, experiment_id, hour) for hour in hours]
    if hour_keys:
        await pipe.watch(*hour_keys)
    days: dict[int, dict[str, list[float]]] = {}
    spans: dict[int, list[int]] = {}
    totals: dict[str, list[float]] = {}
    cell_totals: dict[str, list[float]] = {}
    for hour, key in zip(hours, hour_keys, strict=True):
        day = hour // HOURS_PER_DAY
        day_fields = days.setdefault(day, {})
        span = spans.setdefault(day, [hour, hour])
        span[1] = hour
        stored_fields = await pipe.hgetall(key)
        for raw_field, raw_values in stored_fields.items():
            assert isinstance(raw_field, bytes) and isinstance(raw_values, bytes)
            field = raw_field.decode()
            values = [float(part) for part in raw_values.split(b",")]
            _add(day_fields, field, values)
            _add(cell_totals, field, values)
            _add(totals, field.split(":", 1)[1], values)  # without the cell id
    totals_key = keys.totals_key(prefix, partition, experiment_id)
    cell_totals_key = keys.cell_totals_key(prefix, partition, experiment_id)
    day_set = keys.counter_days_key(prefix, partition, experiment_id)
    old_days = [int(day) for day in await pipe.smembers(day_set)]
    pipe.multi()
    pipe.delete(totals_key, cell_totals_key, day_set)
    for day in old_days:
        pipe.delete(keys.day_counters_key(prefix, partition, experiment_id, day))
    for day, fields in days.items():
        day_key = keys.day_counters_key(prefix, partition, experiment_id, day)
        first, last = spans[day]
        pipe.hset(day_key, mapping=_packed(fields, first, last))
        pipe.sadd(day_set, day)
    if hours:
        pipe.hset(totals_key, mapping=_packed(totals, hours[0], hours[-1]))
        pipe.hset(cell_totals_key, mapping=_packed(cell_totals, hours[0], hours[-1]))
    await pipe.execute()
    return Rebuilt(partition, experiment_id, len(hours), len(days))


def _add(fields: dict[str, list[float]], field: str, values: list[float]) -> None:
    summed = fields.setdefault(field, [])
    summed.extend([0.0] * (len(values) - len(summed)))
    for index, value in enumerate(values):
        summed[index] += value


def _packed(fields: dict[str, list[float]], first: int, last: int) -> dict[FieldT, EncodableT]:
    """As apply_batch.lua packs them: trailing zeros left out, whole numbers as integers,
    others with as many digits as read back the same number; with the first and the
    last hour ("<", ">")."""
    out: dict[FieldT, EncodableT] = {"<": first, ">": last}
    for field, values in fields.items():
        last = len(values)
        while last > 1 and values[last - 1] == 0:
            last -= 1
        out[field] = ",".join(
            str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
            for value in values[:last]
        )
    return out
