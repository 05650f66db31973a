"""Rebuilds the columnar visitor store of a partition from its visitor states, in the
segmented layout apply_batch.lua writes (``keys.COLUMNS_LAYOUT``).

The layouts before it kept each column in one string, listed the entrants in
``ev:{experiment}``, wrote the entry's own visit as a fact, and had no columns at all
for visitors who entered before the store existed (their scans read the states). Every
column record is a function of the visitor state that the sink keeps beside it (the
entry, the visits after the entry's own, a multiple exposure, the settled goal events
the experiment may count), so this writes each experiment's columns anew from the
states, gives every entry a row, and then marks the partition with the layout.

Run with the workers stopped (``python -m worker migrate``): the script refuses a
partition without the mark. Per partition it writes the states (with their new rows)
and the columns, then the mark, then deletes the old keys; run again after a crash, it
writes the same again and finishes the deletion.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis.typing import EncodableT, FieldT

from worker.store import keys
from worker.store.connection import Redis, scan_batches
from worker.store.visitor_columns import ENTRANT, EVENT, FACT, MS_PER_HOUR, MULTIPLE_EXPOSURE
from worker.store.visitor_migration import (
    SCAN_COUNT,
    Interner,
    NameTable,
    chunks,
    each_partition,
    glob_escape,
)
from worker.store.visitor_reader import read_bucket_states
from worker.store.visitor_records import (
    StoredEntry,
    StoredVisitor,
    bucket_of,
    decode_visitor,
    encode_visitor,
)


@dataclass(frozen=True)
class RebuiltColumns:
    partition: int
    experiments: int
    entrants: int
    old_keys: int  # keys of the earlier layouts deleted


@dataclass
class _Columns:
    """One experiment's records: the entrants by row, the facts and events in any order
    (a scan groups them by row)."""

    entrants: dict[int, tuple[int, float, int, int]] = dataclasses.field(default_factory=dict)
    facts: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    events: list[tuple[int, int, float, float, int, int, int, int]] = dataclasses.field(
        default_factory=list
    )


async def rebuild_columns(
    redis: Redis, prefix: str, progress: Callable[[RebuiltColumns], None] | None = None
) -> list[RebuiltColumns]:
    """Brings every partition not yet of ``keys.COLUMNS_LAYOUT`` to it, and deletes the
    keys of the earlier layouts; returns what each partition changed (partitions with
    nothing to change are left out)."""
    return await each_partition(redis, prefix, _rebuild_partition, progress)


async def _rebuild_partition(redis: Redis, prefix: str, partition: int) -> RebuiltColumns | None:
    layout_key = keys.visitor_buckets_key(prefix, partition)
    layout = await redis.hgetall(layout_key)
    experiments = entrants = 0
    rebuilt = layout.get(b"c") != keys.COLUMNS_LAYOUT.encode()
    if rebuilt:
        experiments, entrants = await _write_columns(redis, prefix, partition, layout)
        await redis.hset(
            layout_key,
            mapping={
                "L": int(layout.get(b"L", 0)),
                "s": int(layout.get(b"s", 0)),
                "n": int(layout.get(b"n", 0)),
                "c": keys.COLUMNS_LAYOUT,
            },
        )
    old = await _old_keys(redis, prefix, partition)
    for chunk in chunks(old, 1000):
        await redis.unlink(*chunk)
    if not rebuilt and not old:
        return None
    return RebuiltColumns(partition, experiments, entrants, len(old))


async def _write_columns(
    redis: Redis, prefix: str, partition: int, layout: Mapping[Any, Any]
) -> tuple[int, int]:
    """Writes the partition's columns and its states with their rows; (experiments,
    entrants)."""
    stored = await read_bucket_states(redis, prefix, partition)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.names_key(prefix, partition))
        pipe.hgetall(keys.strings_key(prefix, partition))
        names_fields, strings = await pipe.execute()
    names = NameTable(names_fields)
    string_id = Interner(strings, len(strings) + 1)
    visitors = {visitor: decode_visitor(data, names.by_id) for visitor, data in stored}
    rows = _rows(visitors)
    columns: dict[str, _Columns] = {}
    updated: dict[bytes, StoredVisitor] = {}
    for visitor, state in visitors.items():
        entries = []
        for entry in state.entries:
            row = rows[entry.experiment, visitor]
            entries.append(dataclasses.replace(entry, row=row))
            _add_records(
                columns.setdefault(entry.experiment, _Columns()), entry, row, state, string_id
            )
        updated[visitor] = dataclasses.replace(state, entries=tuple(entries))
    level, split = int(layout.get(b"L", 0)), int(layout.get(b"s", 0))
    buckets: dict[int, dict[FieldT, EncodableT]] = {}
    for visitor, state in updated.items():
        buckets.setdefault(bucket_of(visitor, level, split), {})[visitor] = encode_visitor(
            state, names.ids
        )
    async with redis.pipeline(transaction=False) as pipe:
        if string_id.new:
            pipe.hset(
                keys.strings_key(prefix, partition),
                mapping={text: number for text, number in string_id.new.items()},
            )
        if names.ids.new:
            pipe.hset(keys.names_key(prefix, partition), mapping=names.fields())
        for bucket, states in buckets.items():
            pipe.hset(keys.visitor_bucket_key(prefix, partition, bucket), mapping=states)
        for experiment, found in columns.items():
            counts: dict[FieldT, EncodableT] = {}
            in_rows = [found.entrants[row] for row in range(len(found.entrants))]
            for column, key, record, items in (
                ("e", keys.entrant_columns_key, ENTRANT, in_rows),
                ("f", keys.fact_columns_key, FACT, found.facts),
                ("g", keys.event_columns_key, EVENT, found.events),
            ):
                data = np.array(items, dtype=record).tobytes()
                size = keys.SEGMENT_RECORDS * record.itemsize
                for segment, start in enumerate(range(0, len(data), size)):
                    pipe.set(
                        key(prefix, partition, experiment, segment), data[start : start + size]
                    )
                counts[column] = len(items)
            pipe.hset(keys.column_counts_key(prefix, partition, experiment), mapping=counts)
        await pipe.execute()
    return len(columns), sum(len(found.entrants) for found in columns.values())


def _rows(visitors: dict[bytes, StoredVisitor]) -> dict[tuple[str, bytes], int]:
    """Each (experiment, visitor)'s row: entry order, ties by visitor id."""
    entered = sorted(
        (entry.experiment, entry.entry_ms, visitor)
        for visitor, state in visitors.items()
        for entry in state.entries
    )
    rows: dict[tuple[str, bytes], int] = {}
    counts: dict[str, int] = {}
    for experiment, _, visitor in entered:
        rows[experiment, visitor] = counts.get(experiment, 0)
        counts[experiment] = rows[experiment, visitor] + 1
    return rows


def _add_records(
    found: _Columns,
    entry: StoredEntry,
    row: int,
    state: StoredVisitor,
    string_id: Callable[[str], int],
) -> None:
    """The records the sink appends for this entry (apply_batch.lua): the entrant; a
    fact per visit but the entry's own (one visit at the entry hour, which the entrant
    implies) and one for a multiple exposure; every settled goal event of the visitor
    that the experiment may count."""
    found.entrants[row] = (
        string_id(entry.variant),
        float(entry.entry_ms),
        entry.cell,
        entry.context,
    )
    hours = sorted(hour for _, hour in entry.visit_hours)
    if entry.entry_ms // MS_PER_HOUR in hours:  # always, for a state the sink wrote
        hours.remove(entry.entry_ms // MS_PER_HOUR)
    found.facts.extend((row, hour) for hour in hours)
    if entry.multiple_exposure:
        found.facts.append((row, MULTIPLE_EXPOSURE))
    for goal, events in state.goals:
        for event in events:
            if event.held_id is not None or event.experiment not in (None, entry.experiment):
                continue
            found.events.append(
                (
                    row,
                    string_id(goal),
                    float(event.time_ms),
                    math.nan if event.value is None else event.value,
                    event.visit,
                    0 if event.experiment is None else string_id(event.experiment),
                    event.attributes or 0,
                    event.currency or 0,
                )
            )


async def _old_keys(redis: Redis, prefix: str, partition: int) -> list[bytes]:
    """The partition's entrants lists and whole column strings of the earlier layouts
    (``x?:{experiment}``, where the segments are ``x?:{segment}:{experiment}``:
    experiment ids hold no colon)."""
    found: list[bytes] = []
    starts = [keys.legacy_entrants_key(prefix, partition, "")] + [
        keys.legacy_column_key(prefix, partition, column, "")
        for column in (keys.ENTRANT_COLUMNS, keys.FACT_COLUMNS, keys.EVENT_COLUMNS)
    ]
    for start_text in starts:
        start = start_text.encode()
        async for batch in scan_batches(redis, glob_escape(start_text) + "*", SCAN_COUNT):
            found.extend(key for key in batch if b":" not in key[len(start) :])
    return found
