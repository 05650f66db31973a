"""The Lua batch script, driven directly through `BatchSink` on the real Redis.

The worker-level tests reach the script through Kafka and a worker process; these
call it with chosen commands, so that each rule of the counting contract (DESIGN.md
section 3) is checked on its own.
"""

from __future__ import annotations

from collections import Counter
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
from worker.ingestion.partitioning import partition_for
from worker.store import keys

pytestmark = pytest.mark.integration
__all__ = ["sink"]  # the fixture, shared with test_sink_read_order.py


def visitors_in_one_partition(count: int) -> tuple[int, list[str]]:
    partition = partition_for("anchor", PARTITIONS)
    names = [f"v{n}" for n in range(10_000) if partition_for(f"v{n}", PARTITIONS) == partition]
    return partition, names[:count]


async def test_a_replayed_batch_changes_nothing(sink: Sink) -> None:
    partition, (visitor,) = visitors_in_one_partition(1)
    batch = [
        (0, assignment(visitor, "x1", "1", DAY, PUBLISHED)),
        (0, conversion(visitor, DAY + timedelta(minutes=1), PUBLISHED + 1, value=12.5)),
    ]
    first = await sink.apply(partition, batch)
    again = await sink.apply(partition, batch)
    assert (first["applied"], first["replayed"]) == (2, 0)
    assert (again["applied"], again["replayed"]) == (0, 2)
    assert (await sink.results())["x1"][1] == {
        "variant_id": "1",
        "visitors": 1,
        "conversions": 1,
        "revenue": 12.5,
    }


async def test_a_conversion_resent_at_a_new_offset_counts_once(sink: Sink) -> None:
    partition, (visitor,) = visitors_in_one_partition(1)
    bought = conversion(visitor, DAY + timedelta(minutes=1), PUBLISHED + 1, value=30.0)
    reply = await sink.apply(
        partition,
        [(0, assignment(visitor, "x1", "0", DAY, PUBLISHED)), (0, bought), (1, bought)],
    )
    assert reply["duplicates"] == 1
    assert (await sink.results())["x1"][0]["revenue"] == 30.0


async def test_first_variant_wins_and_a_later_one_is_a_multiple_exposure(sink: Sink) -> None:
    partition, (visitor,) = visitors_in_one_partition(1)
    await sink.apply(
        partition,
        [
            (0, assignment(visitor, "x2", "1", DAY, PUBLISHED)),
            (1, assignment(visitor, "x2", "0", DAY + timedelta(hours=1), PUBLISHED + 1)),
            (2, assignment(visitor, "x2", "0", DAY + timedelta(hours=2), PUBLISHED + 2)),
        ],
    )
    settings_prefix = sink.prefix
    fields = await sink.redis.hgetall(
        keys.counters_key(settings_prefix, partition, "x2", int(DAY.timestamp()) // 3600)
    )
    # one field per cell x variant: "n,visits,me,vc,vc2"; the first variant holds all
    # (one visit, "_", though shown three times: V = 1, V^2 = 1)
    assert sorted(fields.values()) == [b"1,1,1,1,1"]
    assert (await sink.results())["x2"] == [
        {"variant_id": "0", "visitors": 0, "conversions": 0, "revenue": 0.0},
        {"variant_id": "1", "visitors": 1, "conversions": 0, "revenue": 0.0},
    ]


async def test_a_conversion_counts_only_at_or_after_entry_and_only_where_it_names(
    sink: Sink,
) -> None:
    partition, (early, named, other) = visitors_in_one_partition(3)
    entry = DAY.replace(hour=12)
    await sink.apply(
        partition,
        [
            (0, assignment(early, "x1", "0", entry, PUBLISHED)),
            (1, assignment(named, "x1", "0", entry, PUBLISHED)),
            (2, assignment(named, "x2", "0", entry, PUBLISHED)),
            (3, assignment(other, "x1", "0", entry, PUBLISHED)),
            (0, conversion(early, entry - timedelta(seconds=1), PUBLISHED + 1)),
            (1, conversion(named, entry, PUBLISHED + 2, experiment="x2")),
            (2, conversion(other, entry + timedelta(hours=11), PUBLISHED + 3)),
        ],
    )
    results = await sink.results()
    assert results["x1"][0]["conversions"] == 1  # only `other`'s, hours after entry
    assert results["x2"][0]["conversions"] == 1  # `named` restricted its conversion to x2
    assert await sink.dead_letters() == Counter()  # before entry is kept, not an error


async def test_dead_letters_and_forwards_are_queued_in_the_same_write(sink: Sink) -> None:
    partition, (visitor,) = visitors_in_one_partition(1)
    reply = await sink.apply(
        partition, [(0, assignment(visitor, "x1", "9", DAY, PUBLISHED))]
    )  # no variant 9
    assert (reply["dead_lettered"], reply["outbox"]) == (1, 1)
    offsets = await sink.redis.hgetall(keys.offsets_key(sink.prefix, partition))
    assert offsets == {ASSIGNMENTS.encode(): b"0"}
    assert CONVERSIONS.encode() not in offsets
