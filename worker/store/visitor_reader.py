"""Reads the per-visitor state of one experiment (for queries counters cannot answer)
from the visitor buckets."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NotRequired, Required, TypedDict

import numpy as np
import numpy.typing as npt
import orjson

from worker.errors import ConfigurationError
from worker.store import keys
from worker.store.connection import Redis
from worker.store.meta import partition_count
from worker.store.visitor_records import (
    StoredEvent,
    bucket_count,
    bucket_layout,
    bucket_of,
    decode_visitor,
    entry_rows,
    name_ids,
)

NO_VISIT = "_"
"""The visit id the sink gives an event or an assignment without one."""


class GoalEventRecord(TypedDict, total=False):
    """One stored goal event of a visitor (``visitor_records.StoredEvent`` with its ids
    resolved to texts)."""

    t: Required[int]  # event time, epoch ms
    v: str  # revenue, as text
    x: str  # the only experiment it may count for
    s: str  # visit id
    a: Mapping[str, Any]  # event attributes
    c: str  # currency, when the sink stores it
    h: int  # 1 while held: counted nowhere yet


class VisitorState(TypedDict):
    """One entered visitor of the experiment, from its packed state (visitor_records).

    ``cell`` is the text of the entry's cell id (``SegmentCell.text``, or its six
    values); ``context`` is the extended context (whose ``raw`` holds the text of
    enumerated values counted as ``other``); ``visits`` maps visit id -> first-exposure
    hour (absent: one visit at the entry hour); ``goals`` maps goal -> the visitor's
    events of it in arrival order.
    """

    visitor_id: str
    variant: str
    entry_ms: int
    cell: str | Sequence[str]
    context: NotRequired[Mapping[str, Any]]
    visits: NotRequired[Mapping[str, int]]
    multiple_exposure: NotRequired[bool]
    goals: NotRequired[Mapping[str, Sequence[GoalEventRecord]]]


async def read_visitor_states(redis: Redis, prefix: str, experiment_id: str) -> list[VisitorState]:
    """Every entered visitor of the experiment, decoded from the visitor buckets,
    partition by partition in entry order.

    This reads every visitor of the partitions, whatever experiments they entered: the
    oracle the tests hold the columnar visitor store to, and bench/read_scale.py's
    scan before that store (the API reads the columns).
    """
    partitions = await partition_count(redis, prefix)
    states: list[VisitorState] = []
    for partition in range(partitions):
        stored = await read_bucket_states(redis, prefix, partition)
        async with redis.pipeline(transaction=False) as pipe:
            # After the buckets (one slot: one node): ids are only ever added, so these
            # name every id the states refer to.
            for dictionary in (keys.names_key, keys.strings_key, keys.visit_ids_key):
                pipe.hgetall(dictionary(prefix, partition))
            pipe.hgetall(keys.cells_key(prefix, partition))
            names, strings, visits, cells = await pipe.execute()
        dictionaries = _Dictionaries(
            name_ids(names),
            {int(sid): _text(text) for text, sid in strings.items()},
            {int(vid): _text(text) for text, vid in visits.items()},
            {int(cell_id): _text(text) for text, cell_id in cells.items() if text != b"#"},
        )
        found = [
            found
            for visitor, data in stored
            if (found := _state(_text(visitor), experiment_id, data, dictionaries)) is not None
        ]
        states.extend(state for _, state in sorted(found, key=lambda pair: pair[0]))
    return states


async def experiment_rows(
    redis: Redis, prefix: str, partition: int, experiment_id: str
) -> tuple[list[bytes], npt.NDArray[np.int64]]:
    """The partition's visitor ids and each one's row in the experiment's columns
    (-1: not an entrant of it, or entered before the columns), aligned."""
    stored = await read_bucket_states(redis, prefix, partition)
    # Read after the states: a name id is given before any state refers to it.
    named = await redis.hget(keys.names_key(prefix, partition), f"t{experiment_id}")
    return _rows_of(stored, named)


def _rows_of(
    stored: list[tuple[bytes, bytes]], named: bytes | str | None
) -> tuple[list[bytes], npt.NDArray[np.int64]]:
    """The visitor ids of ``stored`` (id, packed state) and each one's row in the
    experiment of name id ``named`` (None: no state names it, every row -1)."""
    visitors = [visitor for visitor, _ in stored]
    if named is None:
        return visitors, np.full(len(visitors), -1, dtype=np.int64)
    return visitors, entry_rows([data for _, data in stored], int(named))


async def looked_up_rows(
    redis: Redis, prefix: str, partitions: int, experiment_id: str, visitor_ids: Collection[str]
) -> list[tuple[list[bytes], npt.NDArray[np.int64]]]:
    """``experiment_rows`` of just these visitors (those stored), for every partition:
    each id is looked up in its bucket of each partition, not read with the rest.

    Two round trips whatever the experiment's size: the partitions' bucket layouts,
    then the states; read again when a bucket split happened meanwhile (it can move a
    visitor out of the bucket asked).
    """
    wanted = sorted({visitor.encode() for visitor in visitor_ids})
    layout_keys = [keys.visitor_buckets_key(prefix, p) for p in range(partitions)]
    async with redis.pipeline(transaction=False) as pipe:
        for key in layout_keys:
            pipe.hgetall(key)
        layouts = await pipe.execute()
    while True:
        asked: list[list[list[bytes]]] = []
        async with redis.pipeline(transaction=False) as pipe:
            for partition, layout in enumerate(layouts):
                level, split = bucket_layout(layout)
                by_bucket: dict[int, list[bytes]] = {}
                for visitor in wanted:
                    by_bucket.setdefault(bucket_of(visitor, level, split), []).append(visitor)
                asked.append(list(by_bucket.values()))
                for bucket, visitors in by_bucket.items():
                    pipe.hmget(keys.visitor_bucket_key(prefix, partition, bucket), visitors)
                # After the states: a name id is given before any state refers to it.
                pipe.hget(keys.names_key(prefix, partition), f"t{experiment_id}")
                pipe.hgetall(layout_keys[partition])
            replies = iter(await pipe.execute())
        found: list[tuple[list[bytes], npt.NDArray[np.int64]]] = []
        afters = []
        for groups in asked:
            stored = [
                (visitor, data)
                for visitors in groups
                for visitor, data in zip(visitors, next(replies), strict=True)
                if data is not None
            ]
            named, after = next(replies), next(replies)
            afters.append(after)
            found.append(_rows_of(stored, named))
        if [bucket_count(a) for a in afters] == [bucket_count(b) for b in layouts]:
            return found
        layouts = afters


async def read_bucket_states(
    redis: Redis, prefix: str, partition: int
) -> list[tuple[bytes, bytes]]:
    """Every (visitor id, packed state) of the partition's visitor buckets.

    Read again when a bucket split happened meanwhile: a split can move a visitor into
    a bucket not read. The names, strings and visits the states refer to are read after
    this returns (ids are only ever added).
    """
    layout_key = keys.visitor_buckets_key(prefix, partition)
    layout = await redis.hgetall(layout_key)
    while True:
        async with redis.pipeline(transaction=False) as pipe:
            for bucket in range(bucket_count(layout)):
                pipe.hgetall(keys.visitor_bucket_key(prefix, partition, bucket))
            pipe.hgetall(layout_key)
            *buckets, after = await pipe.execute()
        if bucket_count(after) == bucket_count(layout):
            return [item for fields in buckets for item in fields.items()]
        layout = after


@dataclass(frozen=True)
class _Dictionaries:
    names: dict[int, str]
    strings: dict[int, str]
    visits: dict[int, str]
    cells: dict[int, str]


def _state(
    visitor_id: str, experiment_id: str, data: bytes, dictionaries: _Dictionaries
) -> tuple[int, VisitorState] | None:
    """One packed visitor state -> its row and the scan's VisitorState for the
    experiment (None: not entered)."""
    stored = decode_visitor(data, dictionaries.names)
    entry = next((e for e in stored.entries if e.experiment == experiment_id), None)
    if entry is None:
        return None
    if entry.row is None:
        raise ConfigurationError(
            f"visitor {visitor_id!r} entered {experiment_id!r} without a row in its columns: "
            "the prefix holds an earlier layout; run `python -m worker migrate`"
        )
    state: VisitorState = {
        "visitor_id": visitor_id,
        "variant": entry.variant,
        "entry_ms": entry.entry_ms,
        "cell": dictionaries.cells[entry.cell],
        "multiple_exposure": entry.multiple_exposure,
        "visits": {dictionaries.visits[visit]: hour for visit, hour in entry.visit_hours},
    }
    if entry.context:
        state["context"] = orjson.loads(dictionaries.strings[entry.context])
    if stored.goals:
        state["goals"] = {
            goal: [_record(event, dictionaries) for event in events]
            for goal, events in stored.goals
        }
    return entry.row, state


def _record(event: StoredEvent, dictionaries: _Dictionaries) -> GoalEventRecord:
    record: GoalEventRecord = {"t": event.time_ms}
    if event.visit and dictionaries.visits[event.visit] != NO_VISIT:
        record["s"] = dictionaries.visits[event.visit]
    if event.value is not None:
        record["v"] = repr(event.value)
    if event.experiment is not None:
        record["x"] = event.experiment
    if event.attributes is not None:
        record["a"] = orjson.loads(dictionaries.strings[event.attributes])
    if event.currency is not None:
        record["c"] = dictionaries.strings[event.currency]
    if event.held_id is not None:
        record["h"] = 1
    return record


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
