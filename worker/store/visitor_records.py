"""The packed visitor states of apply_batch.lua, decoded (the script's comment above
``decode_state`` gives the layout; this module reads it the same way).

A state is a value of a bucket hash ``keys.visitor_bucket_key``; names (experiments,
variants, goals) are ids of ``keys.names_key``, strings (contexts, attributes,
currencies) ids of ``keys.strings_key`` and visits ids of ``keys.visit_ids_key``. The
caller resolves what it needs; the decoder only parses.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

REVENUE, PRE = 1, 2
"""Flags of a goal's counted sums: revenue present, CUPED pre-period sums present."""
VALUE, CURRENCY, RESTRICTED, ATTRIBUTES, HELD = 1, 2, 4, 8, 16
"""Flags of a stored goal event."""


@dataclass(frozen=True)
class StoredEvent:
    """One goal event of a visitor, as the sink keeps it."""

    time_ms: int
    visit: int  # visit id
    value: float | None = None
    currency: int | None = None  # string id
    experiment: str | None = None  # the only experiment it may count for
    attributes: int | None = None  # string id of the attributes' JSON
    held_id: str | None = None  # the event id while held (counted nowhere yet)


@dataclass(frozen=True)
class GoalSums:
    """One entry's raw (uncapped) sums of one goal."""

    count: int
    revenue: float
    orders: int
    converted_visits: tuple[int, ...]
    pre_period: tuple[int, float] | None = None  # CUPED: count and revenue before entry


@dataclass(frozen=True)
class StoredEntry:
    """The visitor's entry into one experiment."""

    experiment: str
    variant: str
    entry_ms: int
    cell: int  # cell id (keys.cells_key)
    context: int  # string id of the extended context JSON, 0: none
    clock: int  # the hold clock when the entry was applied
    row: int | None  # row in the experiment's columns; None: entered before them
    visits: int
    multiple_exposure: bool
    visit_hours: tuple[tuple[int, int], ...]  # (visit id, first-exposure hour)
    sums: Mapping[int, GoalSums] = field(default_factory=dict)  # by goal position, from 1


@dataclass(frozen=True)
class StoredVisitor:
    entries: tuple[StoredEntry, ...]
    goals: tuple[tuple[str, tuple[StoredEvent, ...]], ...]  # (goal, events), first-event order


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def uint(self) -> int:
        number, shift = 0, 0
        while True:
            byte = self._data[self._at]
            self._at += 1
            number |= (byte & 0x7F) << shift
            if byte < 0x80:
                return number
            shift += 7

    def int(self) -> int:
        zigzag = self.uint()
        return zigzag >> 1 if zigzag % 2 == 0 else -((zigzag + 1) >> 1)

    def amount(self) -> float:
        code = self.uint()
        if code % 2:
            (value,) = struct.unpack_from("<d", self._data, self._at)
            self._at += 8
            return float(value)
        zigzag = code >> 1
        cents = zigzag >> 1 if zigzag % 2 == 0 else -((zigzag + 1) >> 1)
        return cents / 100

    def text(self) -> str:
        length = self.uint()
        raw = self._data[self._at : self._at + length]
        self._at += length
        return raw.decode()


def decode_visitor(data: bytes, names: Mapping[int, str]) -> StoredVisitor:
    """One packed state; ``names`` maps name ids to names (``read_names``)."""
    read = _Reader(data)
    entries = []
    for _ in range(read.uint()):
        experiment, variant, entry_ms, cell, context, clock, row = _entry_head(read)
        visits, multiple, hours, sums = _entry_rest(read, entry_ms)
        entries.append(
            StoredEntry(
                names[experiment],
                names[variant],
                entry_ms,
                cell,
                context,
                clock,
                row,
                visits,
                multiple,
                hours,
                sums,
            )
        )
    # event times are relative to the first entry (absolute without one)
    base_ms = entries[0].entry_ms if entries else 0
    goals = []
    for _ in range(read.uint()):
        goal = names[read.uint()]
        events = []
        for _ in range(read.uint()):
            flags = read.uint()
            time_ms, visit = base_ms + read.int(), read.uint()
            events.append(
                StoredEvent(
                    time_ms,
                    visit,
                    value=read.amount() if flags & VALUE else None,
                    currency=read.uint() if flags & CURRENCY else None,
                    experiment=names[read.uint()] if flags & RESTRICTED else None,
                    attributes=read.uint() if flags & ATTRIBUTES else None,
                    held_id=read.text() if flags & HELD else None,
                )
            )
        goals.append((goal, tuple(events)))
    return StoredVisitor(tuple(entries), tuple(goals))


def entry_row(data: bytes, experiment: int) -> int | None:
    """The row of the state's entry into the experiment of name id ``experiment`` (None:
    not entered, or no row), reading no more of the state than the entries before it."""
    read = _Reader(data)
    for _ in range(read.uint()):
        entered, _, entry_ms, _, _, _, row = _entry_head(read)
        if entered == experiment:
            return row
        _entry_rest(read, entry_ms)
    return None


_HEAD_VARINTS = 8
"""The varints a state with an entry starts with: the entry count, then its first
entry's experiment, variant, entry ms, cell, context, clock and row (``_entry_head``)."""
_MAX_ID_BYTES = 5
"""Varints decoded together take at most this many bytes (below 2^35: rows are
``<u4``); a larger one, or a state of another shape, takes :func:`entry_row`."""


def entry_rows(states: Sequence[bytes], experiment: int) -> npt.NDArray[np.int64]:
    """:func:`entry_row` of every state (-1 for None).

    The states whose first entry is the experiment's (every visitor of a one-experiment
    site) are decoded together with numpy: no Python step runs per state. The others,
    which entered another experiment first, take :func:`entry_row`.
    """
    rows = np.full(len(states), -1, dtype=np.int64)
    if not states:
        return rows
    data = np.frombuffer(b"".join(states), dtype=np.uint8)
    lengths = np.fromiter(map(len, states), dtype=np.int64, count=len(states))
    starts = np.cumsum(lengths) - lengths
    # The last byte of every varint, and bytes of amounts and texts that look alike: in
    # a state with an entry, those come only after the head decoded here.
    ends = np.flatnonzero(data < 0x80)
    first = np.searchsorted(ends, starts)
    last = first + _HEAD_VARINTS - 1
    # Only a state with an entry is sure to start with _HEAD_VARINTS varints: the
    # others' positions below mean nothing and are masked out by their count.
    inside = last < ends.size
    last = np.minimum(last, ends.size - 1)
    count = _varints(data, starts, ends[first], _MAX_ID_BYTES)
    entered = _varints(
        data, ends[first] + 1, ends[np.minimum(first + 1, ends.size - 1)], _MAX_ID_BYTES
    )
    row = _varints(data, ends[last - 1] + 1, ends[last], _MAX_ID_BYTES)
    head = inside & (count >= 1) & (ends[last] < starts + lengths)
    first_entry = head & (entered == experiment) & (row >= 0)
    rows[first_entry] = row[first_entry] - 1  # a stored 0: no row
    for index in np.flatnonzero(~first_entry & (count != 0)).tolist():
        later = entry_row(states[index], experiment)
        rows[index] = -1 if later is None else later
    return rows


def _varints(
    data: npt.NDArray[np.uint8],
    begins: npt.NDArray[np.int64],
    ends: npt.NDArray[np.int64],
    most: int,
) -> npt.NDArray[np.int64]:
    """The varints at [begins, ends] (inclusive); -1 where one takes more than ``most``
    bytes."""
    size = ends - begins + 1
    values = np.zeros(begins.size, dtype=np.int64)
    for shift in range(most):
        at = np.minimum(begins + shift, data.size - 1)
        values |= np.where(shift < size, (data[at] & 0x7F).astype(np.int64) << (7 * shift), 0)
    return np.where((size >= 1) & (size <= most), values, -1)


def _entry_head(read: _Reader) -> tuple[int, int, int, int, int, int, int | None]:
    """An entry's experiment and variant name ids, entry ms, cell, context, clock, row."""
    experiment, variant = read.uint(), read.uint()
    entry_ms = read.int()
    cell, context = read.uint(), read.uint()
    clock = entry_ms + read.int()
    row = read.uint()
    return experiment, variant, entry_ms, cell, context, clock, row - 1 if row else None


def _entry_rest(
    read: _Reader, entry_ms: int
) -> tuple[int, bool, tuple[tuple[int, int], ...], dict[int, GoalSums]]:
    """An entry's visits, multiple exposure, visit hours and goal sums."""
    visits = read.uint()
    multiple = read.uint() == 1
    entry_hour = entry_ms // 3_600_000
    hours = tuple((read.uint(), entry_hour + read.int()) for _ in range(read.uint()))
    sums = {}
    for _ in range(read.uint()):
        position, flags = read.uint(), read.uint()
        count = read.uint()
        revenue = read.amount() if flags & REVENUE else 0.0
        orders = read.uint()
        converted = tuple(read.uint() for _ in range(read.uint()))
        pre = (read.uint(), read.amount()) if flags & PRE else None
        sums[position] = GoalSums(count, revenue, orders, converted, pre)
    return visits, multiple, hours, sums


def name_ids(fields: Mapping[bytes | str, bytes | str]) -> dict[int, str]:
    """The ``keys.names_key`` hash's fields -> name id -> name."""
    return {
        int(_bytes(name)[1:]): _bytes(value).decode()
        for name, value in fields.items()
        if _bytes(name)[:1] == b"i"
    }


def bucket_layout(fields: Mapping[bytes | str, bytes | str]) -> tuple[int, int]:
    """The level and split pointer of a partition's linear hashing, from its
    ``keys.visitor_buckets_key`` hash (empty: level 0, split 0)."""
    values = {_bytes(name): int(value) for name, value in fields.items()}
    return values.get(b"L", 0), values.get(b"s", 0)


def bucket_count(fields: Mapping[bytes | str, bytes | str]) -> int:
    """How many visitor buckets a partition has (linear hashing: 2^L + s)."""
    level, split = bucket_layout(fields)
    return 2**level + split


def _bytes(raw: bytes | str) -> bytes:
    return raw if isinstance(raw, bytes) else raw.encode()


BUCKET_LOAD = 40
"""Visitors per bucket before apply_batch.lua splits one more (its BUCKET_LOAD)."""


def visitor_hash(visitor_id: bytes) -> int:
    """The 32 bits of a visitor id that choose its bucket (apply_batch.lua's visitor_hash)."""
    return int(hashlib.sha1(visitor_id).hexdigest()[:8], 16)


def bucket_of(visitor_id: bytes, level: int, split: int) -> int:
    """The visitor's bucket under linear hashing with this level and split pointer."""
    hashed = visitor_hash(visitor_id)
    bucket = hashed % 2**level
    return hashed % 2 ** (level + 1) if bucket < split else bucket


def level_for(visitors: int) -> int:
    """The smallest level whose 2^level buckets hold ``visitors`` without a split."""
    level = 0
    while visitors > BUCKET_LOAD * 2**level:
        level += 1
    return level


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()

    def uint(self, number: int) -> None:
        while number >= 0x80:
            self.out.append(number & 0x7F | 0x80)
            number >>= 7
        self.out.append(number)

    def int(self, number: int) -> None:
        self.uint(2 * number if number >= 0 else -2 * number - 1)

    def amount(self, value: float) -> None:
        cents = math.floor(value * 100 + 0.5)
        if cents / 100 == value and abs(cents) < 2**50:
            self.uint(4 * cents if cents >= 0 else -4 * cents - 2)
        else:
            self.uint(1)
            self.out += struct.pack("<d", value)


def encode_visitor(visitor: StoredVisitor, name_id: Callable[[str], int]) -> bytes:
    """The packed state apply_batch.lua reads (decode_visitor's inverse); ``name_id``
    gives the id of an experiment, variant or goal name."""
    write = _Writer()
    write.uint(len(visitor.entries))
    for entry in visitor.entries:
        write.uint(name_id(entry.experiment))
        write.uint(name_id(entry.variant))
        write.int(entry.entry_ms)
        write.uint(entry.cell)
        write.uint(entry.context)
        write.int(entry.clock - entry.entry_ms)
        write.uint(0 if entry.row is None else entry.row + 1)
        write.uint(entry.visits)
        write.uint(int(entry.multiple_exposure))
        write.uint(len(entry.visit_hours))
        entry_hour = entry.entry_ms // 3_600_000
        for visit, hour in entry.visit_hours:
            write.uint(visit)
            write.int(hour - entry_hour)
        write.uint(len(entry.sums))
        for position in sorted(entry.sums):
            sums = entry.sums[position]
            write.uint(position)
            write.uint((REVENUE if sums.revenue != 0 else 0) | (PRE if sums.pre_period else 0))
            write.uint(sums.count)
            if sums.revenue != 0:
                write.amount(sums.revenue)
            write.uint(sums.orders)
            write.uint(len(sums.converted_visits))
            for visit in sums.converted_visits:
                write.uint(visit)
            if sums.pre_period:
                write.uint(sums.pre_period[0])
                write.amount(sums.pre_period[1])
    base_ms = visitor.entries[0].entry_ms if visitor.entries else 0
    write.uint(len(visitor.goals))
    for goal, events in visitor.goals:
        write.uint(name_id(goal))
        write.uint(len(events))
        for event in events:
            flags = (
                (VALUE if event.value is not None else 0)
                | (CURRENCY if event.currency is not None else 0)
                | (RESTRICTED if event.experiment is not None else 0)
                | (ATTRIBUTES if event.attributes is not None else 0)
                | (HELD if event.held_id is not None else 0)
            )
            write.uint(flags)
            write.int(event.time_ms - base_ms)
            write.uint(event.visit)
            if event.value is not None:
                write.amount(event.value)
            if event.currency is not None:
                write.uint(event.currency)
            if event.experiment is not None:
                write.uint(name_id(event.experiment))
            if event.attributes is not None:
                write.uint(event.attributes)
            if event.held_id is not None:
                held = event.held_id.encode()
                write.uint(len(held))
                write.out += held
    return bytes(write.out)
