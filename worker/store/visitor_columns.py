"""Reads the columnar visitor store of one experiment (apply_batch.lua documents it).

Each partition's columns are read in GETRANGEs of up to ``RANGE_BYTES``, every
partition's in one pipeline (on a Redis Cluster each slot's share goes to its node), and
decoded with ``numpy.frombuffer``: no Python loop runs per visitor or per event, only
per distinct string.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from worker.store import keys
from worker.store.connection import Redis
from worker.store.meta import partition_count

RANGE_BYTES = 8 << 20

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

# One atomic look at a partition: the entrants list and the three columns grow in the
# same script call, so lengths read together describe one moment.
_LENGTHS = """
return {redis.call('LLEN', KEYS[1]), redis.call('STRLEN', KEYS[2]),
        redis.call('STRLEN', KEYS[3]), redis.call('STRLEN', KEYS[4])}
"""

Codes = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Interned:
    """Per-row codes into ``values`` (-1: none)."""

    codes: Codes
    values: list[str]


@dataclass(frozen=True)
class StoredColumns:
    """The experiment's columns, every partition's rows one after the other (a visitor
    row counts from the first partition's first entrant)."""

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


class _Dictionary:
    """Global codes for the texts of per-partition string ids: one Python step per
    distinct id of a partition, none per row."""

    def __init__(self) -> None:
        self._texts: list[bytes] = []
        self._codes: dict[bytes, int] = {}

    @property
    def values(self) -> list[str]:
        """The texts, in code order."""
        return [text.decode() for text in self._texts]

    def recode(self, ids: npt.NDArray[np.uint32], texts: npt.NDArray[np.object_]) -> Codes:
        """Codes of ``ids`` (0: none), ``texts[id]`` naming a partition's ids (dense:
        a lookup table by id, no sort)."""
        present = np.flatnonzero(np.bincount(ids, minlength=texts.size))
        lookup = np.full(texts.size, -1, dtype=np.int64)
        lookup[present] = np.fromiter(
            map(self._code, texts[present]), dtype=np.int64, count=present.size
        )
        return lookup[ids]

    def _code(self, text: bytes | None) -> int:
        if text is None:
            return -1
        code = self._codes.get(text)
        if code is None:
            code = self._codes[text] = len(self._texts)
            self._texts.append(text)
        return code


@dataclass
class _Partition:
    entrants: int
    fact_bytes: int
    event_bytes: int


async def read_visitor_columns(
    redis: Redis, prefix: str, experiment_id: str, visitor_ids: bool = False
) -> StoredColumns | None:
    """The experiment's columns as of one moment per partition, or None when some
    partition has entrants the columns lack (written before the store existed: the
    caller reads the visitor hashes instead). The visitor ids (the entrants lists, the
    largest read) only with ``visitor_ids``."""
    partitions = await partition_count(redis, prefix)
    script = redis.register_script(_LENGTHS)
    lengths = await asyncio.gather(
        *(
            script(
                keys=[
                    keys.entrants_key(prefix, partition, experiment_id),
                    keys.entrant_columns_key(prefix, partition, experiment_id),
                    keys.fact_columns_key(prefix, partition, experiment_id),
                    keys.event_columns_key(prefix, partition, experiment_id),
                ]
            )
            for partition in range(partitions)
        )
    )
    parts: list[_Partition] = []
    for listed, entrant_bytes, fact_bytes, event_bytes in lengths:
        if int(entrant_bytes) != int(listed) * ENTRANT.itemsize:
            return None
        parts.append(_Partition(int(listed), int(fact_bytes), int(event_bytes)))
    async with redis.pipeline(transaction=False) as pipe:
        for partition, part in enumerate(parts):
            if visitor_ids:
                pipe.lrange(
                    keys.entrants_key(prefix, partition, experiment_id), 0, part.entrants - 1
                )
            for key, size in (
                (keys.entrant_columns_key, part.entrants * ENTRANT.itemsize),
                (keys.fact_columns_key, part.fact_bytes),
                (keys.event_columns_key, part.event_bytes),
            ):
                for start in range(0, size, RANGE_BYTES):
                    end = min(start + RANGE_BYTES, size) - 1
                    pipe.getrange(key(prefix, partition, experiment_id), start, end)
            # After the lengths: ids are only ever added, so these name every id read.
            pipe.hgetall(keys.strings_key(prefix, partition))
            pipe.hgetall(keys.cells_key(prefix, partition))
        replies = iter(await pipe.execute())
    return _decode(parts, replies, visitor_ids)


def _decode(parts: list[_Partition], replies: object, with_ids: bool) -> StoredColumns:
    """Columns from the pipeline's replies, in the order read_visitor_columns asked."""
    answers = iter(replies)  # type: ignore[call-overload]
    visitor_ids: list[str] | None = [] if with_ids else None
    dictionaries = {
        name: _Dictionary()
        for name in ("variant", "cell", "context", "goal", "restricted", "attributes", "currency")
    }
    columns: dict[str, list[Codes]] = {}
    values: list[npt.NDArray[np.float64]] = []
    offset = 0

    def add(name: str, codes: Codes) -> None:
        columns.setdefault(name, []).append(codes)

    for part in parts:
        # Visitor ids are [A-Za-z0-9_-]: one join, decode and split, in C, not one step each.
        listed = next(answers) if visitor_ids is not None else None
        if visitor_ids is not None and listed:
            visitor_ids.extend(b"\n".join(listed).decode().split("\n"))
        entrants = np.frombuffer(_joined(answers, part.entrants * ENTRANT.itemsize), ENTRANT)
        facts = np.frombuffer(_joined(answers, part.fact_bytes), FACT)
        events = np.frombuffer(_joined(answers, part.event_bytes), EVENT)
        strings = _by_id(next(answers), skip=None)
        cells = _by_id(next(answers), skip=b"#")
        for name, ids, texts in (
            ("variant", entrants["variant"], strings),
            ("cell", entrants["cell"], cells),
            ("context", entrants["context"], strings),
            ("goal", events["goal"], strings),
            ("restricted", events["restricted"], strings),
            ("attributes", events["attributes"], strings),
            ("currency", events["currency"], strings),
        ):
            add(name, dictionaries[name].recode(ids, texts))
        add("entry_ms", entrants["entry_ms"].astype(np.int64))
        add("fact_row", facts["row"].astype(np.int64) + offset)
        add("fact_hour", facts["hour"].astype(np.int64))
        add("event_row", events["row"].astype(np.int64) + offset)
        add("event_time_ms", events["time_ms"].astype(np.int64))
        add("event_visit", events["visit"].astype(np.int64))
        values.append(events["value"].astype(np.float64))
        offset += part.entrants

    def joined(name: str) -> Codes:
        found = columns.get(name)
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)

    def interned(name: str) -> Interned:
        return Interned(joined(name), dictionaries[name].values)

    return StoredColumns(
        visitor_ids=visitor_ids,
        variant=interned("variant"),
        entry_ms=joined("entry_ms"),
        cell=interned("cell"),
        context=interned("context"),
        fact_row=joined("fact_row"),
        fact_hour=joined("fact_hour"),
        event_row=joined("event_row"),
        event_goal=interned("goal"),
        event_time_ms=joined("event_time_ms"),
        event_value=np.concatenate(values) if values else np.zeros(0),
        event_visit=joined("event_visit"),
        event_restricted=interned("restricted"),
        event_attributes=interned("attributes"),
        event_currency=interned("currency"),
    )


def _joined(answers: object, size: int) -> bytes:
    """The ceil(size / RANGE_BYTES) GETRANGE replies of one column, joined."""
    chunks = [next(answers) for _ in range(0, size, RANGE_BYTES)]  # type: ignore[call-overload]
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)  # b"" when empty


def _by_id(mapping: dict[bytes, bytes], skip: bytes | None) -> npt.NDArray[np.object_]:
    """An intern hash (text -> id) as an array of texts indexed by id; None at index 0
    and at ids not given."""
    found = {text: id_ for text, id_ in mapping.items() if text != skip}
    ids = np.array(list(found.values()), dtype=np.bytes_).astype(np.int64)
    texts = np.empty(int(ids.max(initial=0)) + 1, dtype=object)
    texts[ids] = np.array(list(found), dtype=object)
    return texts
