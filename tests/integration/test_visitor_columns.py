"""The columnar visitor store (apply_batch.lua, worker/store/visitor_columns.py) holds what
the visitor states hold: the table built from its columns equals the one built from the
states, and so does every scan, on generated traffic through the real Lua sink.

The log is test_sink_read_order's (duplicated assignments, multiple exposures,
revisits, conversions before entry and restricted to an experiment, holds released and
expired, caps, the CUPED covariate), with contexts, event attributes and currencies
added, applied in several read orders and in random batches; then replayed whole, which
must change nothing.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import numpy as np
import orjson
import pytest
from redis.asyncio import Redis

from tests.integration.harness import Namespace
from tests.integration.test_sink_read_order import (
    ASSIGNMENTS,
    CONVERSIONS,
    DEFINITIONS,
    Record,
    Sink,
    generated_log,
    interleaving,
    sink,
    tail,
)
from tests.unit.test_results_scan import QUERIES
from worker.errors import ConfigurationError
from worker.results.query_totals import QueryTotals
from worker.results.service import load_table, load_visitor_table, totals
from worker.results.visitor_scan import VisitorTable
from worker.store import batch_sink, keys, visitor_columns
from worker.store.column_migration import rebuild_columns
from worker.store.sink_protocol import experiment_rules
from worker.store.visitor_columns import Interned, StoredColumns, read_visitor_columns
from worker.store.visitor_migration import NameTable
from worker.store.visitor_reader import read_bucket_states, read_visitor_states
from worker.store.visitor_records import bucket_of, decode_visitor, encode_visitor

pytestmark = pytest.mark.integration
__all__ = ["sink"]  # the fixture, shared with test_sink_read_order.py

CITIES = ["Lyon", "Oslo", "Porto"]


def with_context_and_attributes(
    log: dict[int, dict[str, list[Record]]], seed: int
) -> dict[int, dict[str, list[Record]]]:
    """The log with a context on most assignments and attributes and a currency on
    most conversions (a replayed record keeps its event: the same id, the same body)."""
    rng = random.Random(seed)
    out: dict[int, dict[str, list[Record]]] = {}
    for partition, topics in log.items():
        assignments = []
        for record in topics[ASSIGNMENTS]:
            event = dict(record.event)
            if rng.random() < 0.8:
                event["context"] = {
                    "device": rng.choice(["mobile", "desktop"]),
                    "city": rng.choice(CITIES),
                    "region": rng.choice(["north", "south"]),
                    "utm": {"source": rng.choice(["news", "ads"])},
                    "attributes": {"tier": rng.choice(["gold", "basic"])},
                }
            assignments.append(replace(record, event=event))
        conversions = []
        for record in topics[CONVERSIONS]:
            event = dict(record.event)
            if rng.random() < 0.7:
                event["attributes"] = {
                    "plan": rng.choice(["pro", "free"]),
                    "amount": rng.choice([5, 15, 25.5]),
                }
            if "value" in event and rng.random() < 0.7:
                event["currency"] = rng.choice(["USD", "EUR"])
            conversions.append(replace(record, event=event))
        out[partition] = {ASSIGNMENTS: assignments, CONVERSIONS: conversions}
    return out


def canonical(table: VisitorTable) -> dict[str, Any]:
    """Per visitor what a scan reads, independent of row order and of how visits and
    strings are numbered: the events that may count for the experiment, sorted, each
    with its visit named by the events the visit holds (two events alike but for their
    visits would otherwise sort by the visits' ids, which the two layouts number
    differently)."""
    events = table.events
    allowed = events.may_count_for(table.experiment_id)
    # A hold is released before an entry counts its event: none of them is still held.
    assert not (events.held & allowed).any()
    out: dict[str, Any] = {}
    assert table.visitor_ids is not None
    for row, visitor in enumerate(table.visitor_ids):
        mine = [
            (
                (
                    events.goal.values[events.goal.codes[n]],
                    int(events.time_ms[n]),
                    None if events.value[n] != events.value[n] else float(events.value[n]),
                    _value(events.restricted, n),
                    orjson.dumps(_value(events.attributes, n), option=orjson.OPT_SORT_KEYS),
                    _value(events.currency, n),
                ),
                int(events.visit[n]),
            )
            for n in range(events.visitor.size)
            if events.visitor[n] == row and allowed[n]
        ]
        in_visit: dict[int, list[tuple[Any, ...]]] = {}
        for fields, visit in mine:
            in_visit.setdefault(visit, []).append(fields)
        visit_names = {visit: sorted(held, key=repr) for visit, held in in_visit.items()}
        out[visitor] = {
            "variant": table.variants.values[table.variants.codes[row]],
            "entry_ms": int(table.entry_ms[row]),
            "cell": table.cells.values[table.cells.codes[row]],
            "context": _value(table.contexts, row),
            "multiple_exposure": bool(table.multiple_exposure[row]),
            "visit_hours": sorted(table.visit_hours[table.visit_visitor == row].tolist()),
            "events": sorted(((*fields, visit_names[visit]) for fields, visit in mine), key=repr),
        }
    return out


def _value(column: Any, row: int) -> object:
    code = int(column.codes[row])
    return None if code < 0 else column.values[code]


async def assert_columns_match_states(sink: Sink) -> None:
    for definition in DEFINITIONS:
        rules = experiment_rules(definition)
        stored = await read_visitor_columns(sink.redis, sink.prefix, definition.id, True)
        assert stored is not None  # every entrant came after the store: no fallback
        from_columns = VisitorTable.from_columns(definition.id, stored, rules=rules)
        states = await read_visitor_states(sink.redis, sink.prefix, definition.id)
        from_states = VisitorTable.build(definition.id, states, rules=rules)
        assert from_columns.size == from_states.size > 0
        assert canonical(from_columns) == canonical(from_states)
        loaded = await load_visitor_table(sink.redis, sink.prefix, definition)
        assert canonical(loaded) == canonical(from_states)
        for name, query in QUERIES.items():
            # as the API loads it: without visitor ids unless the query filters on them
            table = await load_table(sink.redis, sink.prefix, definition, query)
            scanned = table if isinstance(table, VisitorTable) else from_columns
            for goal in definition.goals:
                order = query.variant_order(definition)
                got = numbers(totals(scanned, query, goal.key, order))
                want = numbers(totals(from_states, query, goal.key, order))
                assert got == pytest.approx(want, rel=1e-12, abs=1e-9), (name, goal.key)


def numbers(found: QueryTotals) -> dict[tuple[str, str, str], Any]:
    """Every number of the totals: (segment, variant, field) -> value ("" is the whole)."""
    segments = {"": found.variants, **(found.segments or {})}
    return {
        (segment, row.variant_id, name): value
        for segment, rows in segments.items()
        for row in rows
        for name, value in row.as_dict().items()
        if name != "variant_id"
    }


@pytest.mark.parametrize("seed", [5, 7])
async def test_the_columns_hold_what_the_visitor_states_hold(
    namespace: Namespace, redis: Redis, seed: int
) -> None:
    log = with_context_and_attributes(generated_log(seed), seed)
    rng = random.Random(seed)
    for run, ahead in enumerate([CONVERSIONS, None]):
        sink = Sink(redis, namespace.settings, f"{namespace.settings.key_prefix}:c{run}")
        await sink.define()
        applied: dict[int, list[list[tuple[int, Record]]]] = {}
        for partition, topics in log.items():
            applied[partition] = interleaving(topics, rng, ahead)
            for batch in applied[partition]:
                await sink.apply(partition, batch)
        # before the tail some conversions are still held
        await assert_columns_match_states(sink)
        for partition, topics in log.items():
            await sink.apply(partition, [tail(partition, len(topics[ASSIGNMENTS]))])
        await assert_columns_match_states(sink)
        lengths = await column_lengths(sink)
        for partition, batches in applied.items():  # a replay of everything
            for batch in batches:
                await sink.apply(partition, batch)
        assert await column_lengths(sink) == lengths


async def column_lengths(sink: Sink) -> list[object]:
    """Every column's record counts and its first segments' bytes."""
    found: list[object] = []
    for definition in DEFINITIONS:
        for partition in range(4):
            counts = keys.column_counts_key(sink.prefix, partition, definition.id)
            found.append(sorted((await sink.redis.hgetall(counts)).items()))
            for key in (keys.entrant_columns_key, keys.fact_columns_key, keys.event_columns_key):
                for segment in range(4):
                    segment_key = key(sink.prefix, partition, definition.id, segment)
                    found.append(await sink.redis.strlen(segment_key))
    return found


async def test_columns_in_segments_of_a_few_records_hold_the_same(
    namespace: Namespace, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With segments of 3 records (one APPEND fills some, a batch completes others or
    writes whole ones), the columns hold what the visitor states hold, code for code as
    with segments of SEGMENT_RECORDS, and every segment but the last is full."""
    log = with_context_and_attributes(generated_log(5), 5)
    found: dict[int, dict[str, StoredColumns]] = {}
    default = keys.SEGMENT_RECORDS
    for records in (default, 3):
        monkeypatch.setattr(keys, "SEGMENT_RECORDS", records)
        script = batch_sink.SCRIPT.replace(
            f"local SEGMENT_RECORDS = {default}\n", f"local SEGMENT_RECORDS = {records}\n"
        )
        monkeypatch.setattr(batch_sink, "SCRIPT", script)
        sink = Sink(redis, namespace.settings, f"{namespace.settings.key_prefix}:s{records}")
        await sink.define()
        rng = random.Random(5)
        for partition, topics in log.items():
            for batch in interleaving(topics, rng, None):
                await sink.apply(partition, batch)
            await sink.apply(partition, [tail(partition, len(topics[ASSIGNMENTS]))])
        found[records] = {}
        for definition in DEFINITIONS:
            stored = await read_visitor_columns(sink.redis, sink.prefix, definition.id, True)
            found[records][definition.id] = stored
            states = await read_visitor_states(sink.redis, sink.prefix, definition.id)
            rules = experiment_rules(definition)
            assert canonical(VisitorTable.from_columns(definition.id, stored, rules=rules)) == (
                canonical(VisitorTable.build(definition.id, states, rules=rules))
            )
            for partition in range(4):
                await assert_full_segments(sink, partition, definition.id, records)
        monkeypatch.undo()
    small = found[3]
    for experiment, whole in found[default].items():
        assert whole.event_row.size > 3  # more than one segment of every column
        for name, column in vars(small[experiment]).items():
            expected = getattr(whole, name)
            if isinstance(column, Interned):
                assert column.values == expected.values, name
                column, expected = column.codes, expected.codes
            assert np.array_equal(column, expected, equal_nan=name == "event_value"), name


async def assert_full_segments(sink: Sink, partition: int, experiment: str, records: int) -> None:
    """Each column of the counts holds full segments of ``records``, then the rest."""
    counts = await sink.redis.hgetall(keys.column_counts_key(sink.prefix, partition, experiment))
    for column, key, record in (
        (b"e", keys.entrant_columns_key, visitor_columns.ENTRANT),
        (b"f", keys.fact_columns_key, visitor_columns.FACT),
        (b"g", keys.event_columns_key, visitor_columns.EVENT),
    ):
        full, rest = divmod(int(counts.get(column, 0)), records)
        expected = [records * record.itemsize] * full + ([rest * record.itemsize] if rest else [])
        sizes = [
            await sink.redis.strlen(key(sink.prefix, partition, experiment, segment))
            for segment in range(len(expected) + 1)
        ]
        assert sizes == [*expected, 0], (partition, column)


async def test_migrate_rebuilds_the_columns_of_an_earlier_layout_from_the_states(
    sink: Sink,
) -> None:
    """A partition as the layouts before the segments left it: no columns for entrants
    from before the store (their states have no row), whole column strings and an
    entrants list, no layout mark; the sink refuses it. `migrate` gives every entrant
    a row and its records: the columns then hold what the states hold, as the sink had
    written them, and the sink goes on."""
    log = with_context_and_attributes(generated_log(5), 5)
    rng = random.Random(5)
    for partition, topics in log.items():
        for batch in interleaving(topics, rng, None):
            await sink.apply(partition, batch)
    written = {
        definition.id: canonical(await load_visitor_table(sink.redis, sink.prefix, definition))
        for definition in DEFINITIONS
    }
    for partition in log:
        await as_the_earlier_layout(sink, partition)
    with pytest.raises(ConfigurationError, match="migrate"):
        await sink.apply(next(iter(log)), [tail(next(iter(log)), 0)])

    await rebuild_columns(sink.redis, sink.prefix)
    assert await rebuild_columns(sink.redis, sink.prefix) == []  # nothing left to do
    for definition in DEFINITIONS:
        rebuilt = await load_visitor_table(sink.redis, sink.prefix, definition)
        assert canonical(rebuilt) == written[definition.id]
    for partition in log:
        assert await sink.redis.keys(f"{keys.partition_base(sink.prefix, partition)}:ev:*") == []
    await assert_columns_match_states(sink)
    for partition, topics in log.items():
        await sink.apply(partition, [tail(partition, len(topics[ASSIGNMENTS]))])
    await assert_columns_match_states(sink)


async def as_the_earlier_layout(sink: Sink, partition: int) -> None:
    """Drops the partition's columns and its entries' rows, adds an entrants list and a
    whole column string, and removes the layout mark."""
    base = keys.partition_base(sink.prefix, partition)
    for pattern in ("xe:*", "xf:*", "xg:*", "xn:*"):
        found = await sink.redis.keys(f"{base}:{pattern}")
        if found:
            await sink.redis.delete(*found)
    names = await sink.redis.hgetall(keys.names_key(sink.prefix, partition))
    table = NameTable(names)
    for visitor, data in await read_bucket_states(sink.redis, sink.prefix, partition):
        state = decode_visitor(data, table.by_id)
        rowless = tuple(replace(entry, row=None) for entry in state.entries)
        layout = await sink.redis.hgetall(keys.visitor_buckets_key(sink.prefix, partition))
        bucket = bucket_of(visitor, int(layout[b"L"]), int(layout[b"s"]))
        await sink.redis.hset(
            keys.visitor_bucket_key(sink.prefix, partition, bucket),
            visitor,
            encode_visitor(replace(state, entries=rowless), table.ids),
        )
        for entry in state.entries:
            await sink.redis.rpush(
                keys.legacy_entrants_key(sink.prefix, partition, entry.experiment), visitor
            )
            await sink.redis.append(
                keys.legacy_column_key(sink.prefix, partition, "xe", entry.experiment), b"x" * 20
            )
    await sink.redis.hdel(keys.visitor_buckets_key(sink.prefix, partition), "c")
