"""Moves visitor state written with one Redis key per visitor (``v:{visitor}`` hashes,
the layout before the visitor buckets) into the buckets apply_batch.lua reads.

Run with the workers stopped (``python -m worker migrate``): the script refuses a
partition that has applied offsets but no bucket layout, so a worker of this version
waits for the migration; a worker of the old version would go on writing hashes this
cannot see. Per partition it writes every bucket, then the bucket layout (from then on
the script accepts the partition), then deletes the old hashes; run again after a crash,
it writes the same states again and finishes the deletion.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from redis.typing import EncodableT, FieldT

from worker.store import keys
from worker.store.connection import Redis, scan_batches
from worker.store.meta import partition_count
from worker.store.visitor_records import (
    GoalSums,
    StoredEntry,
    StoredEvent,
    StoredVisitor,
    bucket_of,
    encode_visitor,
    level_for,
    name_ids,
)

SCAN_COUNT = 2000
Done = TypeVar("Done")


@dataclass(frozen=True)
class MovedPartition:
    partition: int
    visitors: int
    buckets: int


class Interner:
    """Ids of one partition's dictionary hash, with the ones this run adds (``new``)."""

    def __init__(self, known: Mapping[bytes, bytes], first_free: int) -> None:
        self._ids = {text: int(number) for text, number in known.items()}
        self._next = first_free
        self.new: dict[bytes, int] = {}

    def __call__(self, text: str | bytes) -> int:
        raw = text.encode() if isinstance(text, str) else text
        number = self._ids.get(raw)
        if number is None:
            number = self._ids[raw] = self.new[raw] = self._next
            self._next += 1
        return number


class NameTable:
    """Name ids of ``keys.names_key`` (fields ``t{name}``, ``i{id}``, ``#``): ``ids``
    gives (and adds) ids, ``by_id`` names the ids that were stored."""

    def __init__(self, fields: Mapping[Any, Any]) -> None:
        known = {name[1:]: number for name, number in fields.items() if name[:1] == b"t"}
        self.ids = Interner(known, int(fields.get(b"#", b"0")) + 1)
        self.by_id = name_ids(fields)

    def fields(self) -> dict[FieldT, EncodableT]:
        """What to write back: both directions of every added name, and ``#``."""
        out: dict[FieldT, EncodableT] = {}
        for name, number in self.ids.new.items():
            out[b"t" + name] = number
            out[b"i%d" % number] = name
        if self.ids.new:
            out[b"#"] = max(self.ids.new.values())
        return out


async def move_visitor_hashes(
    redis: Redis, prefix: str, progress: Callable[[MovedPartition], None] | None = None
) -> list[MovedPartition]:
    """Moves every partition's visitor hashes into buckets; returns what each partition
    moved (partitions without hashes are left out)."""
    return await each_partition(redis, prefix, _move_partition, progress)


async def each_partition(
    redis: Redis,
    prefix: str,
    step: Callable[[Redis, str, int], Awaitable[Done | None]],
    progress: Callable[[Done], None] | None,
) -> list[Done]:
    """Runs a migration ``step`` on every partition in turn; what each step did
    (None: nothing), reported to ``progress`` as it goes."""
    done = []
    for partition in range(await partition_count(redis, prefix)):
        found = await step(redis, prefix, partition)
        if found is not None:
            done.append(found)
            if progress is not None:
                progress(found)
    return done


async def _move_partition(redis: Redis, prefix: str, partition: int) -> MovedPartition | None:
    base = keys.legacy_visitor_key(prefix, partition, "")
    pattern = glob_escape(base) + "*"
    hashes: dict[bytes, dict[bytes, bytes]] = {}
    async for batch in scan_batches(redis, pattern, SCAN_COUNT):
        async with redis.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.hgetall(key)
            for key, fields in zip(batch, await pipe.execute(), strict=True):
                hashes[key[len(base) :]] = fields
    layout_key = keys.visitor_buckets_key(prefix, partition)
    if not hashes:
        # The script refuses a partition with offsets and no layout: give one to a
        # partition that never had a visitor (all its events dead-lettered, say).
        await redis.hsetnx(layout_key, "L", 0)
        return None
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.names_key(prefix, partition))
        pipe.hgetall(keys.strings_key(prefix, partition))
        pipe.hgetall(keys.visit_ids_key(prefix, partition))
        pipe.hgetall(layout_key)
        names_fields, strings, visits, layout = await pipe.execute()
    names = NameTable(names_fields)
    string_ids = Interner(strings, len(strings) + 1)
    visit_ids = Interner(visits, len(visits) + 1)
    if layout:
        # Written by an earlier run that stopped before deleting the hashes: the
        # visitors it placed are where this layout says.
        level, split = int(layout.get(b"L", b"0")), int(layout.get(b"s", b"0"))
    else:
        level, split = level_for(len(hashes)), 0
    buckets: dict[int, dict[FieldT, EncodableT]] = {}
    for visitor, fields in hashes.items():
        state = legacy_visitor(fields, string_ids, visit_ids)
        buckets.setdefault(bucket_of(visitor, level, split), {})[visitor] = encode_visitor(
            state, names.ids
        )
    async with redis.pipeline(transaction=False) as pipe:
        for dictionary, interner in (
            (keys.strings_key, string_ids),
            (keys.visit_ids_key, visit_ids),
        ):
            if interner.new:
                pipe.hset(
                    dictionary(prefix, partition),
                    mapping={text: number for text, number in interner.new.items()},
                )
        if names.ids.new:
            pipe.hset(keys.names_key(prefix, partition), mapping=names.fields())
        for bucket, states in buckets.items():
            pipe.hset(keys.visitor_bucket_key(prefix, partition, bucket), mapping=states)
        await pipe.execute()
    async with redis.pipeline(transaction=False) as pipe:
        for bucket in range(2**level + split):
            pipe.hlen(keys.visitor_bucket_key(prefix, partition, bucket))
        stored = sum(await pipe.execute())
    await redis.hset(layout_key, mapping={"L": level, "s": split, "n": stored})
    for chunk in chunks(list(hashes), 1000):
        await redis.unlink(*(base.encode() + visitor for visitor in chunk))
    return MovedPartition(partition, len(hashes), 2**level + split)


def legacy_visitor(
    fields: Mapping[bytes, bytes],
    string_id: Callable[[str | bytes], int],
    visit_id: Callable[[str | bytes], int],
) -> StoredVisitor:
    """One visitor hash of the old layout as a packed-state visitor.

    The hash named its experiments and goals by position (``kx`` "a,b", ``kg``
    "goal:n,..."); per experiment X and goal G: ``eX`` "variant|entry_ms|cell|clock"
    (no clock: 0), ``xX`` the context JSON, ``mX`` a multiple exposure, ``vX:{visit}``
    the visit's first-exposure hour, ``nX`` the visits, ``rX`` the columns row,
    ``sX:G`` "count|revenue|orders[|visits]", ``cX:G:{visit}`` a converted visit,
    ``pX:G`` "count|revenue" (CUPED), and ``kG:{n}`` the n-th event's JSON.
    """
    experiments = fields[b"kx"].split(b",") if b"kx" in fields else []
    goals = (
        [item.rpartition(b":")[0] for item in fields[b"kg"].split(b",")] if b"kg" in fields else []
    )
    entries = []
    for number, experiment in enumerate(experiments, start=1):
        variant, entry_ms, cell, *clock = fields[b"e%d" % number].split(b"|")
        context = fields.get(b"x%d" % number)
        row = fields.get(b"r%d" % number)
        sums = {}
        for position in range(1, len(goals) + 1):
            counted = fields.get(b"s%d:%d" % (number, position))
            pre = fields.get(b"p%d:%d" % (number, position))
            if counted is None and pre is None:
                continue
            count, revenue, orders = (counted or b"0|0|0").split(b"|")[:3]
            pre_count, pre_revenue = pre.split(b"|") if pre else (b"", b"")
            sums[position] = GoalSums(
                int(count),
                float(revenue),
                int(orders),
                tuple(
                    visit_id(visit) for visit in _suffixes(fields, b"c%d:%d:" % (number, position))
                ),
                (int(pre_count), float(pre_revenue)) if pre else None,
            )
        entries.append(
            StoredEntry(
                experiment=experiment.decode(),
                variant=variant.decode(),
                entry_ms=int(entry_ms),
                cell=int(cell),
                context=string_id(context) if context is not None else 0,
                clock=int(clock[0]) if clock else 0,
                row=int(row) if row is not None else None,
                visits=int(fields.get(b"n%d" % number, b"0")),
                multiple_exposure=b"m%d" % number in fields,
                visit_hours=tuple(
                    (visit_id(visit), int(fields[b"v%d:" % number + visit]))
                    for visit in _suffixes(fields, b"v%d:" % number)
                ),
                sums=sums,
            )
        )
    stored_goals = []
    for position, goal in enumerate(goals, start=1):
        numbered = sorted(
            (int(event_number), orjson.loads(fields[b"k%d:" % position + event_number]))
            for event_number in _suffixes(fields, b"k%d:" % position)
        )
        stored_goals.append(
            (goal.decode(), tuple(_event(record, string_id, visit_id) for _, record in numbered))
        )
    return StoredVisitor(tuple(entries), tuple(stored_goals))


def _event(
    record: Mapping[str, object],
    string_id: Callable[[str | bytes], int],
    visit_id: Callable[[str | bytes], int],
) -> StoredEvent:
    value, currency, experiment = record.get("v"), record.get("c"), record.get("x")
    attributes, held = record.get("a"), record.get("i")
    return StoredEvent(
        time_ms=int(str(record["t"])),
        visit=visit_id(str(record.get("s") or "_")),
        value=float(str(value)) if value is not None else None,
        currency=string_id(str(currency)) if currency is not None else None,
        experiment=str(experiment) if experiment is not None else None,
        attributes=string_id(orjson.dumps(attributes)) if attributes is not None else None,
        held_id=str(held) if record.get("h") and held is not None else None,
    )


def _suffixes(fields: Mapping[bytes, bytes], start: bytes) -> Iterator[bytes]:
    return (name[len(start) :] for name in fields if name.startswith(start))


def chunks(items: list[bytes], size: int) -> Iterator[list[bytes]]:
    """``items`` in lists of ``size`` (the last shorter): keys to UNLINK a few at a time."""
    return (items[start : start + size] for start in range(0, len(items), size))


def glob_escape(text: str) -> str:
    """``text`` matched literally by SCAN's MATCH (prefixes may hold glob characters)."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)
