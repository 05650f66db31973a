"""Reads the columnar visitor store of one experiment (apply_batch.lua documents it).

Each partition's column segments are read whole (the one still growing up to the
records counted), every partition's in one pipeline (on a Redis Cluster each slot's
share goes to its node), and decoded with ``numpy.frombuffer``: no Python loop runs per
visitor or per event, only per distinct string.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import compress
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.store import keys
from worker.store.connection import Redis
from worker.store.meta import partition_count
from worker.store.visitor_reader import experiment_rows, looked_up_rows

ENTRANT = np.dtype([("variant", "<u4"), ("entry_ms", "<f8"), ("cell", "<u4"), ("context", "<u4")])
FACT = np.dtype([("row", "<u4"), ("hour", "<i4")])
EVENT = np.dtype(
    [
        ("row", "<u4"),
        ("goal", "<u4"),
        ("time_ms", "<f8"),
        ("value", "<f8"),
        ("visit", "<u4"),
        ("restricted", "<u4"),
        ("attributes", "<u4"),
        ("currency", "<u4"),
    ]
)
MULTIPLE_EXPOSURE = -1
"""The hour of a fact record that marks a multiple exposure rather than a visit."""
MS_PER_HOUR = 3_600_000

Codes = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Interned:
    """Per-row codes into ``values`` (-1: none)."""

    codes: Codes
    values: list[str]


@dataclass(frozen=True)
class StoredColumns:
    """The experiment's columns, every partition's rows one after the other (a visitor
    row counts from the first partition's first entrant). The facts start with each
    entrant's own visit at its entry hour, which the store implies."""

    visitor_ids: list[str] | None  # None: not asked for
    variant: Interned
    entry_ms: Codes
    cell: Interned
    context: Interned  # extended context JSON
    fact_row: Codes
    fact_hour: Codes  # MULTIPLE_EXPOSURE or the visit's first-exposure hour
    event_row: Codes
    event_goal: Interned
    event_time_ms: Codes
    event_value: npt.NDArray[np.float64]  # NaN without revenue
    event_visit: Codes  # equal within one visitor: the same visit
    event_restricted: Interned
    event_attributes: Interned  # JSON
    event_currency: Interned


@dataclass
class _Partition:
    entrants: int
    facts: int
    events: int


_COLUMNS = (
    (keys.entrant_columns_key, ENTRANT),
    (keys.fact_columns_key, FACT),
    (keys.event_columns_key, EVENT),
)


async def read_visitor_columns(
    redis: Redis, prefix: str, experiment_id: str, visitor_ids: bool | frozenset[str] = False
) -> StoredColumns:
    """The experiment's columns as of one moment per partition.

    The visitor ids come from the visitor states: every row's with ``visitor_ids``
    True (the largest read), none with False, and with a set only the rows of those
    ids, each looked up in its bucket (the other rows' ids read as "")."""
    partitions = await partition_count(redis, prefix)
    async with redis.pipeline(transaction=False) as pipe:
        for partition in range(partitions):
            # One command: the three counts of one moment (a batch writes all three).
            pipe.hmget(keys.column_counts_key(prefix, partition, experiment_id), "e", "f", "g")
        counts = await pipe.execute()
    parts = [_Partition(*(int(count or 0) for count in found)) for found in counts]
    async with redis.pipeline(transaction=False) as pipe:
        for partition, part in enumerate(parts):
            for (key, record), records in zip(
                _COLUMNS, (part.entrants, part.facts, part.events), strict=True
            ):
                for segment, size in enumerate(_segment_sizes(records)):
                    # The growing segment may hold records written after the counts.
                    pipe.getrange(
                        key(prefix, partition, experiment_id, segment),
                        0,
                        size * record.itemsize - 1,
                    )
            # After the counts: ids are only ever added, so these name every id read.
            pipe.hgetall(keys.strings_key(prefix, partition))
            pipe.hgetall(keys.cells_key(prefix, partition))
        replies = await pipe.execute()
    ids = None
    if visitor_ids is not False:
        if visitor_ids is True:
            rows = [
                await experiment_rows(redis, prefix, partition, experiment_id)
                for partition in range(partitions)
            ]
        else:
            rows = await looked_up_rows(redis, prefix, partitions, experiment_id, visitor_ids)
        ids = _visitor_ids(rows, [part.entrants for part in parts])
    return await asyncio.to_thread(_decode, parts, replies, ids)


def _segment_sizes(records: int) -> list[int]:
    """The records of each segment of a column of ``records``."""
    full, rest = divmod(records, keys.SEGMENT_RECORDS)
    return [keys.SEGMENT_RECORDS] * full + ([rest] if rest else [])


def _visitor_ids(
    rows: list[tuple[list[bytes], npt.NDArray[np.int64]]], entrants: list[int]
) -> list[str]:
    """Each row's visitor id ("" for a row of no id given), partition by partition,
    from each partition's (visitor ids, their rows); rows past ``entrants`` (entered
    after the counts) are left out."""
    ids: list[str] = []
    for (visitors, found), count in zip(rows, entrants, strict=True):
        counted = (found >= 0) & (found < count)
        named = np.full(count, "", dtype=object)
        named[found[counted]] = [visitor.decode() for visitor in compress(visitors, counted)]
        ids.extend(named.tolist())
    return ids


@dataclass
class _Replies:
    """One partition's replies: its columns as views of the GETRANGE replies (one array
    per reply, no copy) and its intern hashes as arrays of texts indexed by id."""

    entrants: list[npt.NDArray[np.void]]
    facts: list[npt.NDArray[np.void]]
    events: list[npt.NDArray[np.void]]
    strings: npt.NDArray[np.object_]
    cells: npt.NDArray[np.object_]


# The interned fields: (record, field) -> the intern hash naming its ids.
_INTERNED = {
    ("entrants", "variant"): "strings",
    ("entrants", "cell"): "cells",
    ("entrants", "context"): "strings",
    ("events", "goal"): "strings",
    ("events", "restricted"): "strings",
    ("events", "attributes"): "strings",
    ("events", "currency"): "strings",
}


def _decode(
    parts: list[_Partition], replies: list[object], visitor_ids: list[str] | None
) -> StoredColumns:
    """Columns from the pipeline's replies, in the order read_visitor_columns asked.

    Each whole-experiment column is allocated once and every reply written into its
    place: the replies are neither joined nor the partitions' pieces concatenated (at
    ten million visitors each would copy every column once more)."""
    answers = iter(replies)
    read: list[_Replies] = []
    for part in parts:
        read.append(
            _Replies(
                entrants=_records(answers, part.entrants, ENTRANT),
                facts=_records(answers, part.facts, FACT),
                events=_records(answers, part.events, EVENT),
                strings=_by_id(next(answers), skip=None),  # type: ignore[arg-type]
                cells=_by_id(next(answers), skip=b"#"),  # type: ignore[arg-type]
            )
        )
    lookups: dict[str, list[Codes]] = {}
    values: dict[str, list[str]] = {}
    for (record, name), texts in _INTERNED.items():
        lookups[name], values[name] = _intern(
            [(getattr(part, record), getattr(part, texts)) for part in read], name
        )
    entrants = _filled(read, "entrants", ("variant", "cell", "context", "entry_ms"), lookups)
    rows = entrants["entry_ms"].size
    facts = _filled(read, "facts", ("row", "hour"), lookups, leading=rows)
    facts["row"][:rows] = np.arange(rows)
    np.floor_divide(entrants["entry_ms"], MS_PER_HOUR, out=facts["hour"][:rows])
    event_fields = ("row", "goal", "time_ms", "value", "visit", "restricted", "attributes")
    events = _filled(read, "events", (*event_fields, "currency"), lookups)

    def interned(columns: dict[str, npt.NDArray[Any]], name: str) -> Interned:
        return Interned(columns[name], values[name])

    return StoredColumns(
        visitor_ids=visitor_ids,
        variant=interned(entrants, "variant"),
        entry_ms=entrants["entry_ms"],
        cell=interned(entrants, "cell"),
        context=interned(entrants, "context"),
        fact_row=facts["row"],
        fact_hour=facts["hour"],
        event_row=events["row"],
        event_goal=interned(events, "goal"),
        event_time_ms=events["time_ms"],
        event_value=events["value"],
        event_visit=events["visit"],
        event_restricted=interned(events, "restricted"),
        event_attributes=interned(events, "attributes"),
        event_currency=interned(events, "currency"),
    )


def _records(answers: Iterator[object], records: int, record: np.dtype[np.void]) -> list[Any]:
    """The replies of one column of ``records`` (one per segment), viewed as records."""
    return [np.frombuffer(next(answers), record) for _ in _segment_sizes(records)]  # type: ignore[call-overload]


def _intern(
    partitions: list[tuple[list[npt.NDArray[np.void]], npt.NDArray[np.object_]]], name: str
) -> tuple[list[Codes], list[str]]:
    """Global codes of field ``name`` of the partitions' records (each partition's record
    arrays and the texts its ids name): per partition a table id -> code (-1: none), and
    the texts in code order. Codes follow first appearance, partition by partition and
    by id; the dictionary is built in C (dict.fromkeys, map), one step per distinct id
    of a partition and none per row."""
    present: list[npt.NDArray[np.intp]] = []
    named: list[bytes | None] = []
    for arrays, texts in partitions:
        seen = np.zeros(texts.size, dtype=bool)
        for records in arrays:
            seen[records[name]] = True  # raises on an id the hash does not reach
        present.append(np.flatnonzero(seen))
        named.extend(texts[present[-1]].tolist())
    distinct = dict.fromkeys(named)
    distinct.pop(None, None)  # id 0 (none), or an id the hash lacks
    index: dict[bytes | None, int] = dict(zip(distinct, range(len(distinct)), strict=True))
    index[None] = -1
    codes = np.fromiter(map(index.__getitem__, named), dtype=np.int64, count=len(named))
    lookups: list[Codes] = []
    start = 0
    for ids, (_, texts) in zip(present, partitions, strict=True):
        lookup = np.full(texts.size, -1, dtype=np.int64)
        lookup[ids] = codes[start : start + ids.size]
        start += ids.size
        lookups.append(lookup)
    return lookups, [text.decode() for text in distinct]  # type: ignore[union-attr]


def _filled(
    read: list[_Replies],
    record: str,
    fields: tuple[str, ...],
    lookups: dict[str, list[Codes]],
    leading: int = 0,
) -> dict[str, npt.NDArray[Any]]:
    """The whole-experiment columns ``fields`` of ``record`` (float64 ``value``, int64
    the others), each reply written into its place: interned ids through the
    partition's lookup table, ``row`` from the partition's first visitor row on. The
    first ``leading`` places are left for the caller to fill."""
    size = leading + sum(records.size for part in read for records in getattr(part, record))
    columns = {
        field: np.empty(size, dtype=np.float64 if field == "value" else np.int64)
        for field in fields
    }
    start, offset = leading, 0
    for partition, part in enumerate(read):
        for records in getattr(part, record):
            end = start + records.size
            for field, column in columns.items():
                if field in lookups:
                    # mode "clip" writes straight into ``out`` ("raise" buffers); every id
                    # is within its table, _intern checked.
                    table = lookups[field][partition]
                    np.take(table, records[field], out=column[start:end], mode="clip")
                else:
                    column[start:end] = records[field]  # a float64 time truncates, as astype
                    if field == "row":
                        column[start:end] += offset
            start = end
        offset += sum(records.size for records in part.entrants)
    return columns


def _by_id(mapping: dict[bytes, bytes], skip: bytes | None) -> npt.NDArray[np.object_]:
    """An intern hash (text -> id; the reply's own dict, ``skip`` removed from it) as an
    array of texts indexed by id; None at index 0 and at ids not given."""
    mapping.pop(skip, None)  # type: ignore[arg-type]
    ids = np.fromiter(map(int, mapping.values()), dtype=np.int64, count=len(mapping))
    texts = np.empty(int(ids.max(initial=0)) + 1, dtype=object)
    texts[ids] = np.array(list(mapping), dtype=object)
    return texts
