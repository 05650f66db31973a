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
from worker.results.query_totals import QueryTotals
from worker.results.service import load_table, load_visitor_table, totals
from worker.results.visitor_scan import VisitorTable
from worker.store import keys, visitor_columns
from worker.store.sink_protocol import experiment_rules
from worker.store.visitor_columns import Interned, read_visitor_columns
from worker.store.visitor_reader import read_visitor_states

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


async def column_lengths(sink: Sink) -> list[int]:
    found = []
    for definition in DEFINITIONS:
        for partition in range(4):
            for key in (keys.entrant_columns_key, keys.fact_columns_key, keys.event_columns_key):
                found.append(await sink.redis.strlen(key(sink.prefix, partition, definition.id)))
    return found


async def test_an_experiment_with_entrants_from_before_the_store_reads_the_states(
    sink: Sink,
) -> None:
    """Entrants without entrant records (written by the previous layout): the columns
    are not used, the scan reads the visitor states."""
    log = with_context_and_attributes(generated_log(6), 6)
    for partition, topics in log.items():
        batch = list(enumerate(topics[ASSIGNMENTS]))
        await sink.apply(partition, batch)
    definition = DEFINITIONS[0]
    lengths = [await sink.redis.llen(keys.entrants_key(sink.prefix, p, definition.id)) for p in log]
    partition = lengths.index(max(lengths))
    await sink.redis.delete(keys.entrant_columns_key(sink.prefix, partition, definition.id))
    assert await read_visitor_columns(sink.redis, sink.prefix, definition.id) is None
    states = await read_visitor_states(sink.redis, sink.prefix, definition.id)
    expected = VisitorTable.build(definition.id, states, rules=experiment_rules(definition))
    loaded = await load_visitor_table(sink.redis, sink.prefix, definition)
    assert canonical(loaded) == canonical(expected)


async def test_columns_read_in_ranges_of_a_few_records_hold_the_same(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each column read in GETRANGEs of a few records (a range of 64 bytes holds 3
    entrant, 8 fact and 1 event records), decoded reply by reply into the experiment's
    columns, holds what the visitor states hold, code for code as when read whole."""
    log = with_context_and_attributes(generated_log(5), 5)
    rng = random.Random(5)
    for partition, topics in log.items():
        for batch in interleaving(topics, rng, None):
            await sink.apply(partition, batch)
        await sink.apply(partition, [tail(partition, len(topics[ASSIGNMENTS]))])
    for definition in DEFINITIONS:
        whole = await read_visitor_columns(sink.redis, sink.prefix, definition.id, True)
        monkeypatch.setattr(visitor_columns, "RANGE_BYTES", 64)
        ranged = await read_visitor_columns(sink.redis, sink.prefix, definition.id, True)
        monkeypatch.undo()
        assert whole is not None and ranged is not None
        assert ranged.event_row.size > 8  # more than one range of every column
        for name, found in vars(ranged).items():
            if isinstance(found, Interned):
                assert found.values == getattr(whole, name).values, name
                found = found.codes
            expected = getattr(whole, name)
            expected = getattr(expected, "codes", expected)
            assert np.array_equal(found, expected, equal_nan=name == "event_value"), name
        states = await read_visitor_states(sink.redis, sink.prefix, definition.id)
        rules = experiment_rules(definition)
        assert canonical(VisitorTable.from_columns(definition.id, ranged, rules=rules)) == (
            canonical(VisitorTable.build(definition.id, states, rules=rules))
        )
