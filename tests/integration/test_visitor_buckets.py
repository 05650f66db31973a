"""Visitor state without a Redis key per visitor (issue 16, item 4): packed states in
bucket hashes that split as the visitors grow, and the move of the old per-visitor
hashes into them (`python -m worker migrate`)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest

from tests.integration.test_sink_read_order import (
    ASSIGNMENTS,
    CONVERSIONS,
    DAY,
    PARTITIONS,
    PUBLISHED,
    Sink,
    assignment,
    conversion,
    sink,
)
from worker.errors import ConfigurationError
from worker.ingestion.partitioning import partition_for
from worker.store import keys
from worker.store.visitor_columns import read_visitor_columns
from worker.store.visitor_reader import read_visitor_states
from worker.store.visitor_records import BUCKET_LOAD, bucket_count, bucket_of

pytestmark = pytest.mark.integration
__all__ = ["sink"]  # the fixture, shared with test_sink_read_order.py

LISTPACK_FIELDS = 128
"""Redis' default hash-max-listpack-entries: a bucket above it takes the hashtable encoding."""


def visitors_of(partition: int, count: int) -> list[str]:
    names = (f"u{n}" for n in range(2 * count * PARTITIONS))
    chosen = [name for name in names if partition_for(name, PARTITIONS) == partition][:count]
    assert len(chosen) == count
    return chosen


async def test_visitors_fill_buckets_that_split_and_no_key_is_made_per_visitor(
    sink: Sink,
) -> None:
    partition = PARTITIONS - 1
    visitors = visitors_of(partition, 2400)
    converted = visitors[::3]
    records = [
        (n, assignment(v, "x1", str(n % 2), DAY, PUBLISHED + n)) for n, v in enumerate(visitors)
    ]
    records += [
        (n, conversion(v, DAY + timedelta(minutes=5), PUBLISHED + 5000 + n, value=2.0))
        for n, v in enumerate(converted)
    ]
    records.sort(key=lambda pair: pair[1].published_ms)
    offsets = {ASSIGNMENTS: 0, CONVERSIONS: 0}
    for start in range(0, len(records), 500):
        batch = []
        for _, record in records[start : start + 500]:
            batch.append((offsets[record.topic], record))
            offsets[record.topic] += 1
        await sink.apply(partition, batch)

    base = keys.partition_base(sink.prefix, partition)
    assert [key async for key in sink.redis.scan_iter(match=f"{base}:v:*", count=10_000)] == []
    layout = await sink.redis.hgetall(keys.visitor_buckets_key(sink.prefix, partition))
    level, split = int(layout[b"L"]), int(layout[b"s"])
    assert int(layout[b"n"]) == len(visitors)
    assert bucket_count(layout) == 2**level + split >= len(visitors) // BUCKET_LOAD
    for visitor in visitors:
        home = bucket_of(visitor.encode(), level, split)
        assert await sink.redis.hexists(
            keys.visitor_bucket_key(sink.prefix, partition, home), visitor
        )
    for bucket in range(bucket_count(layout)):
        key = keys.visitor_bucket_key(sink.prefix, partition, bucket)
        assert 0 < await sink.redis.hlen(key) <= LISTPACK_FIELDS
        assert await sink.redis.object("encoding", key) == b"listpack"

    results = (await sink.results())["x1"]
    assert [row["visitors"] for row in results] == [
        sum(1 for n in range(len(visitors)) if n % 2 == variant) for variant in (0, 1)
    ]
    assert [row["conversions"] for row in results] == [
        sum(1 for n in range(0, len(visitors), 3) if n % 2 == variant) for variant in (0, 1)
    ]
    states = await read_visitor_states(sink.redis, sink.prefix, "x1")
    assert [state["visitor_id"] for state in states] == visitors


async def test_migrate_moves_old_visitor_hashes_and_the_sink_goes_on_from_them(
    sink: Sink,
) -> None:
    visitor = "old-visitor"
    partition = partition_for(visitor, PARTITIONS)
    hour = int(DAY.timestamp()) // 3600
    entry_ms = hour * 3_600_000
    # As the layout with a key per visitor left it: entered x1 in variant 1 at entry_ms
    # (cell 1), one visit, one counted conversion of 10.0 on goal buy.
    await sink.redis.hset(keys.cells_key(sink.prefix, partition), "a|b|c|d|e|f", 1)
    await sink.redis.hset(
        keys.legacy_visitor_key(sink.prefix, partition, visitor),
        mapping={
            "kx": "x1", "kg": "buy:1", "e1": f"1|{entry_ms}|1|{PUBLISHED}", "v1:_": hour,
            "n1": 1, "s1:1": "1|10|1|1", "c1:1:_": 1,
            "k1:1": f'{{"t":{entry_ms + 60_000},"v":"10"}}',
        },
    )  # fmt: skip
    await sink.redis.rpush(keys.legacy_entrants_key(sink.prefix, partition, "x1"), visitor)
    await sink.redis.hset(keys.offsets_key(sink.prefix, partition), ASSIGNMENTS, 0)
    more = [
        (1, assignment(visitor, "x1", "1", DAY + timedelta(hours=1), PUBLISHED + 10)),
        (0, conversion(visitor, DAY + timedelta(minutes=30), PUBLISHED + 11, value=5.0)),
        (2, assignment(visitor, "x1", "1", DAY, PUBLISHED + 12, visit="second")),
    ]
    with pytest.raises(ConfigurationError, match="migrate"):
        await sink.apply(partition, more)

    environment = {**os.environ, "REDIS_URL": sink.settings.redis_url}
    for _ in range(2):  # the second run finds nothing left to move
        migrated = subprocess.run(
            [sys.executable, "-m", "worker", "migrate", "--prefix", sink.prefix],
            env=environment, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert migrated.returncode == 0, migrated.stderr
    assert "1 visitor(s) into buckets" not in migrated.stdout

    (state,) = await read_visitor_states(sink.redis, sink.prefix, "x1")
    assert (state["variant"], state["entry_ms"], state["visits"]) == ("1", entry_ms, {"_": hour})
    assert await sink.redis.exists(keys.legacy_visitor_key(sink.prefix, partition, visitor)) == 0
    assert await sink.redis.exists(keys.legacy_entrants_key(sink.prefix, partition, "x1")) == 0
    # An entrant from before the columnar store: migrate gave it its row and records.
    columns = await read_visitor_columns(sink.redis, sink.prefix, "x1", visitor_ids=True)
    assert columns.visitor_ids == [visitor]
    assert (columns.entry_ms.tolist(), columns.fact_hour.tolist()) == ([entry_ms], [hour])
    assert columns.event_time_ms.tolist() == [entry_ms + 60_000]

    await sink.apply(partition, more)
    totals = await sink.redis.hgetall(keys.totals_key(sink.prefix, partition, "x1"))
    # No new visitor and no new converted visitor, as the old state said: only the
    # second visit (visits, V, V^2 grow; for goal buy V*C, V*E and V*R with it) and the
    # second event (events, revenue, orders and their squares and products).
    assert totals[b"1"] == b"0,1,0,1,3"
    assert totals[b"1:buy"] == b"0,0,1,3,1,5,125,0,1,3,20,3,20"
