"""The running totals and the day rollups give the numbers of the hours (issue 16).

Every delta the sink counts into an hour's hash goes, in the same call, into its UTC
day's rollup and the experiment's running totals. These tests fill a key prefix with
several days of traffic (visits crossing midnight, conversions days after entry) and
answer each query both ways: through ``load_table`` (which picks the coarsest grain)
and from every hour, as every read did before the rollups.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.integration.harness import Namespace
from tests.integration.test_sink_read_order import (
    ASSIGNMENTS,
    CONVERSIONS,
    DAY,
    DEFINITIONS,
    PARTITIONS,
    PUBLISHED,
    Record,
    Sink,
    assignment,
    conversion,
)
from worker.cli.main import main
from worker.events.experiment import ExperimentDefinition
from worker.ingestion.partitioning import partition_for
from worker.results.cell_aggregation import CellTable
from worker.results.planning import counter_grain
from worker.results.query import Condition, ResultQuery, SegmentFilter
from worker.results.runners import Threads
from worker.results.service import (
    ResultsService,
    Table,
    days_spanned,
    days_with_data,
    document,
    load_table,
    totals,
)
from worker.store import keys
from worker.store.counter_reader import Grain, read_counters

pytestmark = pytest.mark.integration

DAYS = 5


def where(*groups: list[tuple[str, str, str]]) -> SegmentFilter:
    """AND of OR groups of (field, operator, value)."""
    return tuple(
        tuple(
            Condition.model_validate({"field": f, "operator": o, "value": v}) for f, o, v in group
        )
        for group in groups
    )


FIRST = DAY.date()
QUERIES = [
    ResultQuery(),
    ResultQuery(count_unit="visits", conversion_type="converted_visits"),
    ResultQuery(goal="view", reference_variant="1"),
    ResultQuery(start_date=FIRST + timedelta(days=1), end_date=FIRST + timedelta(days=3)),
    ResultQuery(start_date=FIRST + timedelta(days=2)),
    ResultQuery(end_date=FIRST + timedelta(days=1)),
    ResultQuery(start_date=FIRST + timedelta(days=1), end_date=FIRST + timedelta(days=2), tz=3),
    ResultQuery(start_date=FIRST + timedelta(days=1), end_date=FIRST + timedelta(days=3), tz=-5),
    ResultQuery(start_date=FIRST, end_date=FIRST + timedelta(days=4), tz=14),
    ResultQuery(end_date=FIRST + timedelta(days=2), tz=-12),
    ResultQuery(breakdown="device"),
    ResultQuery(segment=where([("device", "==", "mobile")]), breakdown="country"),
    ResultQuery(segment=where([("browser", "!=", "safari")]), tz=4, count_unit="visits"),
    ResultQuery(
        segment=where([("country", "!=", "DE"), ("device", "==", "tablet")]),
        start_date=FIRST + timedelta(days=1),
        end_date=FIRST + timedelta(days=3),
        tz=2,
        breakdown="device",
    ),
    ResultQuery(breakdown="day_of_week"),
    ResultQuery(breakdown="day_of_week", tz=5, start_date=FIRST + timedelta(days=1)),
    ResultQuery(breakdown="hour_of_day", end_date=FIRST + timedelta(days=3)),
    ResultQuery(start_date=FIRST + timedelta(days=40)),
]


def multi_day_log(seed: int) -> dict[int, list[list[tuple[int, Record]]]]:
    """Per partition, batches of (offset, record): every assignment, then every
    conversion (published after them, so none is held). Visitors enter over DAYS days,
    come back up to a day later and convert up to two days after entry."""
    rng = random.Random(seed)
    records: dict[int, dict[str, list[Record]]] = {
        p: {ASSIGNMENTS: [], CONVERSIONS: []} for p in range(PARTITIONS)
    }
    clock = PUBLISHED + 10 * 86_400_000  # after every event: none is in the future
    for number in range(300):
        visitor = f"g{seed}-v{number}"
        entry = DAY + timedelta(minutes=rng.randrange(DAYS * 24 * 60))
        context = {
            "device": rng.choice(["mobile", "desktop", "tablet"]),
            "country": rng.choice(["US", "DE", "FR"]),
        }
        topics = records[partition_for(visitor, PARTITIONS)]
        for experiment in rng.sample(["x1", "x2"], rng.choice((1, 2))):
            variant = str(rng.randrange(2))
            for visit in range(rng.choice((1, 2, 3))):
                clock += 1
                moment = entry + timedelta(minutes=rng.randrange(0, 30 * 60) * visit)
                record = assignment(visitor, experiment, variant, moment, clock, f"s{visit}")
                record.event["context"] = context
                topics[ASSIGNMENTS].append(record)
        for _ in range(rng.choice((0, 1, 2, 4))):
            clock += 1
            goal = rng.choice(["buy", "view", "signup"])
            moment = entry + timedelta(minutes=rng.randrange(-60, 48 * 60))
            value = round(rng.uniform(1, 99), 2) if goal == "buy" else None
            topics[CONVERSIONS].append(conversion(visitor, moment, clock, value, goal=goal))
    out: dict[int, list[list[tuple[int, Record]]]] = {}
    for partition, topics in records.items():
        ordered = [
            (offset, record)
            for topic in (ASSIGNMENTS, CONVERSIONS)
            for offset, record in enumerate(topics[topic])
        ]
        out[partition] = [ordered[start : start + 37] for start in range(0, len(ordered), 37)]
    return out


async def filled(redis: Redis, namespace: Namespace, prefix: str, seed: int) -> None:
    """The prefix filled with ``multi_day_log(seed)`` through the Lua sink."""
    sink = Sink(redis, namespace.settings, prefix)
    await sink.define()
    for partition, batches in multi_day_log(seed).items():
        for batch in batches:
            await sink.apply(partition, batch)


async def hour_table(redis: Redis, prefix: str, definition: ExperimentDefinition) -> CellTable:
    """Every hour of the experiment, as every counter read did before the rollups."""
    counters = await read_counters(redis, prefix, definition.id, Grain.HOURS)
    return CellTable.from_counters(counters.cells, counters.data_hours)


def assert_close(found: Any, expected: Any, where: str = "") -> None:
    """Equal, floats to 1e-12 relative: sums of the same deltas in another order."""
    if isinstance(expected, Mapping):
        assert isinstance(found, Mapping) and found.keys() == expected.keys(), where
        for name in expected:
            assert_close(found[name], expected[name], f"{where}.{name}")
    elif isinstance(expected, list | tuple):
        assert isinstance(found, list | tuple) and len(found) == len(expected), where
        for index, (left, right) in enumerate(zip(found, expected, strict=True)):
            assert_close(left, right, f"{where}[{index}]")
    elif isinstance(expected, float) and not math.isnan(expected):
        assert found == pytest.approx(expected, rel=1e-12, abs=1e-9), where
    elif isinstance(expected, float):
        assert isinstance(found, float) and math.isnan(found), where
    else:
        assert found == expected, where


def variant_rows(table: Table, spec: ResultQuery, definition: ExperimentDefinition) -> Any:
    """Every total of the query's goal, per variant and breakdown segment."""
    order = spec.variant_order(definition)
    return totals(table, spec, spec.goal_key(definition), order).as_dict()


@pytest.mark.parametrize("seed", [4, 5])
async def test_every_grain_answers_as_the_hours_do(
    namespace: Namespace, redis: Redis, seed: int
) -> None:
    prefix = f"{namespace.settings.key_prefix}:g{seed}"
    await filled(redis, namespace, prefix, seed)
    grains = set()
    for definition in DEFINITIONS:
        hours = await hour_table(redis, prefix, definition)
        assert hours.size > 0
        for spec in QUERIES:
            grains.add(counter_grain(spec))
            table = await load_table(redis, prefix, definition, spec)
            where = f"{definition.id} {spec!r}"
            assert_close(
                variant_rows(table, spec, definition), variant_rows(hours, spec, definition), where
            )
            assert days_spanned(table, spec) == days_spanned(hours, spec), where
            goals = [goal.key for goal in definition.goals]
            assert_close(
                document(table, definition, spec, goals).model_dump(mode="json"),
                document(hours, definition, spec, goals).model_dump(mode="json"),
                where,
            )
    assert grains == set(Grain)


@pytest.mark.parametrize("tz", [0, 3, -7])
async def test_daily_and_cumulative_series_answer_as_the_hours_do(
    namespace: Namespace, redis: Redis, tz: int
) -> None:
    prefix = f"{namespace.settings.key_prefix}:s{tz}"
    await filled(redis, namespace, prefix, 6)
    service = ResultsService(prefix, Threads(lambda: Redis.from_url(namespace.settings.redis_url)))
    definition = DEFINITIONS[0]
    for spec in (
        ResultQuery(tz=tz, goal="buy"),
        ResultQuery(tz=tz, goal="view", start_date=FIRST + timedelta(days=1)),
        ResultQuery(
            tz=tz, segment=where([("device", "==", "mobile")]), end_date=FIRST + timedelta(days=3)
        ),
    ):
        hours = await hour_table(redis, prefix, definition)
        expected_days = days_with_data(hours, spec)
        daily = await service.daily(definition, spec)
        assert [day for day, _ in daily] == expected_days
        assert len(expected_days) >= 3
        for day, found in daily:
            one_day = spec.model_copy(update={"start_date": day, "end_date": day})
            expected = document(hours, definition, one_day, [spec.goal_key(definition)])
            assert_close(found.model_dump(mode="json"), expected.model_dump(mode="json"), str(day))
        cumulative = await service.cumulative(definition, spec, expected_days)
        for day, found in zip(expected_days, cumulative, strict=True):
            up_to = spec.model_copy(update={"end_date": day})
            expected = document(hours, definition, up_to, [spec.goal_key(definition)])
            assert_close(found.model_dump(mode="json"), expected.model_dump(mode="json"), str(day))


async def test_the_totals_hold_every_delta_of_the_hours(namespace: Namespace, redis: Redis) -> None:
    """Raw check of the layout: each partition's totals are the sums of its hours, and
    its day rollups of the hours of each day, first and last hours included."""
    prefix = f"{namespace.settings.key_prefix}:raw"
    await filled(redis, namespace, prefix, 7)
    for definition in DEFINITIONS:
        totals_cells = (await read_counters(redis, prefix, definition.id, Grain.TOTALS)).cells
        hour_cells = (await read_counters(redis, prefix, definition.id, Grain.HOURS)).cells
        summed: dict[str, dict[str, float]] = {}
        for key, metrics in hour_cells.items():
            row = summed.setdefault(key.variant, {})
            for name, value in metrics.items():
                row[name] = row.get(name, 0.0) + value
        assert_close(
            {key.variant: {n: v for n, v in m.items() if v} for key, m in totals_cells.items()},
            {variant: {n: v for n, v in m.items() if v} for variant, m in summed.items()},
        )
        cell_totals = (await read_counters(redis, prefix, definition.id, Grain.CELL_TOTALS)).cells
        by_cell: dict[tuple[str, Any], dict[str, float]] = {}
        for key, metrics in hour_cells.items():
            row = by_cell.setdefault((key.variant, key.cell), {})
            for name, value in metrics.items():
                row[name] = row.get(name, 0.0) + value
        assert_close(
            {
                (k.variant, k.cell): {n: v for n, v in m.items() if v}
                for k, m in cell_totals.items()
            },
            {cell: {n: v for n, v in m.items() if v} for cell, m in by_cell.items()},
        )
        for partition in range(PARTITIONS):
            listed = await redis.smembers(keys.counter_hours_key(prefix, partition, definition.id))
            hours = sorted(int(hour) for hour in listed)
            for running in (keys.totals_key, keys.cell_totals_key):
                span = await redis.hmget(running(prefix, partition, definition.id), "<", ">")
                assert [int(x or -1) for x in span] == [hours[0], hours[-1]]
            days = await redis.smembers(keys.counter_days_key(prefix, partition, definition.id))
            assert sorted(int(d) for d in days) == sorted({hour // 24 for hour in hours})
            assert date.fromordinal(date(1970, 1, 1).toordinal() + hours[0] // 24) >= FIRST


async def rollup_keys(redis: Redis, prefix: str) -> dict[str, Any]:
    """Every totals (per variant and per cell), day and day-set key of the prefix, with
    its content."""
    found: dict[str, Any] = {}
    for partition in range(PARTITIONS):
        for definition in DEFINITIONS:
            day_set = keys.counter_days_key(prefix, partition, definition.id)
            days = await redis.smembers(day_set)
            if days:
                found[day_set] = days
            for day in days:
                day_key = keys.day_counters_key(prefix, partition, definition.id, int(day))
                found[day_key] = await redis.hgetall(day_key)
            for running in (keys.totals_key, keys.cell_totals_key):
                running_key = running(prefix, partition, definition.id)
                if await redis.exists(running_key):
                    found[running_key] = await redis.hgetall(running_key)
    return found


async def answers(redis: Redis, prefix: str) -> list[Any]:
    out = []
    for definition in DEFINITIONS:
        for spec in QUERIES:
            table = await load_table(redis, prefix, definition, spec)
            goals = [goal.key for goal in definition.goals]
            out.append(document(table, definition, spec, goals).model_dump(mode="json"))
    return out


async def test_migrate_builds_the_rollups_of_a_prefix_the_old_sink_wrote(
    namespace: Namespace, redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"{namespace.settings.key_prefix}:m"
    await filled(redis, namespace, prefix, 8)
    expected = await answers(redis, prefix)
    written = await rollup_keys(redis, prefix)
    assert written
    await redis.delete(*written)  # what the sink wrote before the rollups existed
    assert await rollup_keys(redis, prefix) == {}

    assert await asyncio.to_thread(main, ["migrate", "--prefix", prefix]) == 0
    output = capsys.readouterr().out
    assert (
        f"migrated {prefix!r}: 0 visitor(s) into buckets, columns of 0 entrant(s) rebuilt, 2 experiment(s)"
        in output
    )
    assert "partition 0 experiment x1:" in output
    migrated = await rollup_keys(redis, prefix)
    assert migrated.keys() == written.keys()
    assert_close(await answers(redis, prefix), expected)

    # again: nothing changes
    assert await asyncio.to_thread(main, ["migrate", "--prefix", prefix]) == 0
    assert await rollup_keys(redis, prefix) == migrated
