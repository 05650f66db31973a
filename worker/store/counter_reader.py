"""Reads an experiment's counters (running totals, day rollups or hours) from every
partition and sums them per cell."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from worker.events.segment_cell import SegmentCell
from worker.store import keys
from worker.store.connection import Redis
from worker.store.meta import partition_count

VISITOR_METRICS = ("n", "visits", "me", "vc", "vc2")
"""Positions in a cell's packed visitor metrics (apply_batch.lua's VISITOR_METRICS)."""
GOAL_METRICS = (
    "cv", "cvis", "ev", "ev2", "ord", "rev", "rev2",
    "cvis2", "vcvis", "vev", "vrev", "ord2", "revord", "x", "x2", "xy",
)  # fmt: skip
"""Positions in a cell's packed metrics of one goal (apply_batch.lua's GOAL_METRICS)."""


class CellKey(NamedTuple):
    """One counter cell: variant x hour x segment cell; metric names its number.

    A row of the day rollups has the first hour of its UTC day; a row of the running
    totals has no segment cell (None) and hour 0 (it spans every hour).

    A named tuple, not a frozen dataclass: a read builds one per cell (359,016 at a
    million visitors), and a dataclass' __init__ took a third of the read's time.
    """

    variant: str
    hour: int
    cell: SegmentCell | None


class Grain(StrEnum):
    """Which counters a read sums (DESIGN.md section 4, "read cost must not grow with
    history"); each gives the same numbers as the hours for the queries it serves."""

    TOTALS = "totals"
    """The running totals per variant (and goal): one hash per partition, no cells, no
    hours; for queries without dates, filters or breakdown."""
    CELL_TOTALS = "cell_totals"
    """The running totals per segment cell and variant (and goal): one hash per
    partition, no hours; for cell filters and breakdowns without dates."""
    DAYS = "days"
    """The UTC days inside the hour range from the day rollups, and the hours of the
    range's edge days (a timezone's partial days) from the hours."""
    HOURS = "hours"
    """Every hour in the range (hour-of-day, or a local day of week off UTC)."""


@dataclass(frozen=True)
class Counters:
    """Counter cells summed over partitions, and ``data_hours``: hours that have
    counters, among them the first and the last of every hash read (a day or the totals
    keeps its own, fields ``<`` and ``>``), so the first and last hour with data in any
    range the read serves are exact."""

    cells: dict[CellKey, dict[str, float]]
    data_hours: list[int]


HourRange = tuple[int | None, int | None]
"""UTC hours [first, end); None leaves a side open."""


class HashRead(NamedTuple):
    """One counters hash a read sums: a day rollup (``day``) or an hour, number
    ``number`` since the epoch, added (sign 1) or subtracted (-1) into the rows of
    ``row_hour``. A day that is not ``whole`` is read less its hours outside the range:
    its own first and last hour may lie outside it."""

    day: bool
    number: int
    row_hour: int
    sign: int = 1
    whole: bool = True


class _Hash(NamedTuple):
    key: str
    row_hour: int
    sign: int = 1
    spans: bool = True  # its `<`/`>` fields name hours with counters the read serves


_SPAN_FIELDS = (b"<", b">")
"""First and last hour with counters, in day and totals hashes (apply_batch.lua)."""

_HOURS_PER_DAY = 24


async def read_counters(
    redis: Redis,
    prefix: str,
    experiment_id: str,
    grain: Grain = Grain.HOURS,
    hour_range: HourRange = (None, None),
) -> Counters:
    """The experiment's counters at ``grain`` within ``hour_range``, summed over
    partitions (TOTALS take no range).

    Metrics are named after VISITOR_METRICS and `g:{goal}:{name}` after GOAL_METRICS
    (apply_batch.lua says what each sums); a metric that was never counted in a cell
    may be absent or 0.
    """
    partitions = await partition_count(redis, prefix)
    if grain in (Grain.TOTALS, Grain.CELL_TOTALS):
        if hour_range != (None, None):
            raise ValueError("the running totals span every hour: they take no range")
        key = keys.totals_key if grain is Grain.TOTALS else keys.cell_totals_key
        totals = [[_Hash(key(prefix, p, experiment_id), 0)] for p in range(partitions)]
        return await _sum_hashes(redis, prefix, totals, with_cells=grain is Grain.CELL_TOTALS)
    set_key = keys.counter_hours_key if grain is Grain.HOURS else keys.counter_days_key
    async with redis.pipeline(transaction=False) as pipe:
        for partition in range(partitions):
            pipe.smembers(set_key(prefix, partition, experiment_id))
        members = await pipe.execute()
    hashes: list[list[_Hash]] = []
    extent: list[int] = []  # listed hours: each has counters
    ends: list[tuple[str, bytes]] = []  # days' fields naming a listed hour
    probes: list[tuple[str, list[int]]] = []  # hour sets, and hours that may be in them
    for partition, member_set in enumerate(members):
        listed = sorted(int(member) for member in member_set)
        if not listed:
            hashes.append([])
            continue
        if grain is Grain.HOURS:
            extent += [listed[0], listed[-1]]
            hours = [hour for hour in listed if _within(hour, hour_range)]
            hashes.append(
                [_Hash(keys.counters_key(prefix, partition, experiment_id, h), h) for h in hours]
            )
        else:
            ends.append((keys.day_counters_key(prefix, partition, experiment_id, listed[0]), b"<"))
            ends.append((keys.day_counters_key(prefix, partition, experiment_id, listed[-1]), b">"))
            reads = plan_day_reads(listed, hour_range)
            hashes.append([_hash_of(prefix, partition, experiment_id, read) for read in reads])
            probed = probed_hours(reads)
            if probed:
                probes.append((keys.counter_hours_key(prefix, partition, experiment_id), probed))
    return await _sum_hashes(redis, prefix, hashes, True, ends, extent, probes)


def _within(hour: int, hour_range: HourRange) -> bool:
    first, end = hour_range
    return (first is None or hour >= first) and (end is None or hour < end)


def plan_day_reads(days: list[int], hour_range: HourRange) -> list[HashRead]:
    """The hashes that sum the listed days' counters within the range: each day wholly
    inside as its rollup; a day the range cuts (a timezone's edge day) as its hours
    inside, or as its rollup less its hours outside when that reads fewer hashes
    (a local day at UTC+2 keeps 22 hours of its last UTC day: 3 reads, not 22).
    Absent hours read empty."""
    reads = []
    for day in days:
        day_first = day * _HOURS_PER_DAY
        hours = range(day_first, day_first + _HOURS_PER_DAY)
        inside = [hour for hour in hours if _within(hour, hour_range)]
        if len(inside) == _HOURS_PER_DAY:
            reads.append(HashRead(True, day, day_first))
        elif 1 + _HOURS_PER_DAY - len(inside) < len(inside):
            # One row for the whole part inside: it lies in one local day of the range.
            row = inside[0]
            reads.append(HashRead(True, day, row, whole=False))
            reads += [HashRead(False, h, row, -1) for h in hours if not _within(h, hour_range)]
        else:
            reads += [HashRead(False, hour, hour) for hour in inside]
    return reads


def probed_hours(reads: Sequence[HashRead]) -> list[int]:
    """The hours inside the range of the days read less their outside hours: which of
    them have counters is asked of the hours set (the day's own first and last hour may
    lie outside the range)."""
    probed = []
    for read in reads:
        if read.day and not read.whole:
            outside = {r.number for r in reads if r.sign < 0 and r.row_hour == read.row_hour}
            day_first = read.number * _HOURS_PER_DAY
            hours = range(day_first, day_first + _HOURS_PER_DAY)
            probed += [hour for hour in hours if hour not in outside]
    return probed


def _hash_of(prefix: str, partition: int, experiment_id: str, read: HashRead) -> _Hash:
    key = (
        keys.day_counters_key(prefix, partition, experiment_id, read.number)
        if read.day
        else keys.counters_key(prefix, partition, experiment_id, read.number)
    )
    # Only a hash that is added whole names hours with counters inside the range.
    return _Hash(key, read.row_hour, read.sign, spans=read.sign > 0 and read.whole)


async def _sum_hashes(
    redis: Redis,
    prefix: str,
    hashes: list[list[_Hash]],
    with_cells: bool,
    ends: Sequence[tuple[str, bytes]] = (),
    listed_hours: Sequence[int] = (),
    probes: Sequence[tuple[str, list[int]]] = (),
) -> Counters:
    """Every partition's hashes read and summed, each with its sign, by (variant, cell
    text, row hour); ``with_cells``: fields start with a cell id (hours, days).
    ``ends`` (key, field) name hours with counters outside the hashes read: the first
    and last of the whole history, kept in ``data_hours`` with ``listed_hours``;
    ``probes`` (hours set, hours) name hours that have counters if they are members."""
    partitions = len(hashes)
    async with redis.pipeline(transaction=False) as pipe:
        for key, field in ends:
            pipe.hget(key, field)
        for key, hours in probes:
            pipe.smismember(key, hours)
        for partition_hashes in hashes:
            for read in partition_hashes:
                pipe.hgetall(read.key)
        # After the counters: the sink may intern a cell while we read, and ids are only
        # ever added, so cells read last name every id the counters read before use.
        if with_cells:
            for partition in range(partitions):
                pipe.hgetall(keys.cells_key(prefix, partition))
        counter_replies = await pipe.execute()
    cell_hashes = counter_replies[len(counter_replies) - partitions :] if with_cells else []
    replies = iter(counter_replies)  # the ends, then the hashes, in the order requested
    data_hours = set(listed_hours)
    data_hours.update(int(hour) for hour in itertools.islice(replies, len(ends)) if hour)
    for (_, hours), members in zip(probes, itertools.islice(replies, len(probes)), strict=True):
        data_hours.update(hour for hour, member in zip(hours, members, strict=True) if member)
    # Summed in one vectorised pass: per stored field only a dictionary lookup runs in
    # Python. A field name is parsed once per partition into a code naming its
    # (variant, cell text) pair and its first metric (_FieldCodes); the numbers of all
    # fields are then parsed and summed by numpy (_sum_packed).
    codes = _FieldCodes()
    field_codes: list[int] = []
    field_hours: list[int] = []
    field_signs: list[int] = []
    reply_sizes: list[int] = []
    packed: list[bytes] = []
    for partition, partition_hashes in enumerate(hashes):
        partition_codes = codes.for_partition(cell_hashes[partition] if with_cells else None)
        for read in partition_hashes:
            reply = next(replies)
            spans = [reply.pop(field, None) for field in _SPAN_FIELDS]
            if not reply:
                continue
            if read.spans:
                data_hours.update(int(span) for span in spans if span is not None)
                if spans[0] is None:  # an hour's hash
                    data_hours.add(read.row_hour)
            field_codes.extend(map(partition_codes.__getitem__, reply))
            packed.extend(reply.values())
            field_hours.append(read.row_hour)
            field_signs.append(read.sign)
            reply_sizes.append(len(reply))
    if not packed:
        return Counters({}, sorted(data_hours))
    code_array = np.array(field_codes, dtype=np.int64)
    hour_array = np.repeat(np.array(field_hours, dtype=np.int64), reply_sizes)
    sign_array = np.repeat(np.array(field_signs, dtype=np.int8), reply_sizes)
    # one row per (variant, cell text, hour): the cell of the result
    cells, rows = np.unique((code_array // _METRIC_SLOTS) << 32 | hour_array, return_inverse=True)
    row_metrics: list[dict[str, float]] = [{} for _ in range(cells.size)]
    first_metrics = code_array % _METRIC_SLOTS
    for row, metrics in _sum_packed(rows, first_metrics, packed, codes.names, sign_array):
        row_metrics[row] = metrics
    cell_keys = [
        CellKey(variant, hour, cell)
        for (variant, cell), hour in zip(
            map(codes.pairs.__getitem__, (cells >> 32).tolist()),
            (cells & 0xFFFFFFFF).tolist(),
            strict=True,
        )
    ]
    # A row whose every sum cancelled (a day less hours that held all of it) is no row.
    cells_read = {
        key: metrics for key, metrics in zip(cell_keys, row_metrics, strict=True) if metrics
    }
    return Counters(cells_read, sorted(data_hours))


_CANCELLED = 1e-12
"""A signed sum this small against the sum of its terms' magnitudes is rounding."""

_DENSE_LIMIT = 1 << 24
"""Up to this many (cell, metric) slots (128 MB of sums) are summed without sorting."""

_METRIC_SLOTS = 1 << 12
"""Field codes are pair * _METRIC_SLOTS + first metric: room for 255 goals."""


class _FieldCodes:
    """Numbers stored field names across partitions (whose cell ids differ).

    A code is `pair * _METRIC_SLOTS + metric`: `pairs[pair]` is the (variant, segment
    cell) of the field, `names[metric]` the name of its first packed number; the
    metrics of one goal have consecutive numbers.
    """

    def __init__(self) -> None:
        self.names: list[str] = list(VISITOR_METRICS)
        self.pairs: list[tuple[str, SegmentCell | None]] = []
        self._pair_ids: dict[tuple[str, bytes], int] = {}
        self._goal_first: dict[str, int] = {}
        # (cell text, field without its cell id) -> code: every partition stores the same
        # fields under its own cell ids, so each is parsed once, not once per partition.
        self._codes: dict[tuple[bytes, bytes], int] = {}

    def for_partition(self, cells: dict[bytes, bytes] | None) -> dict[bytes, int]:
        """A mapping field name -> code for one partition, given its cells hash (None:
        fields name no cell, as in the running totals)."""
        cell_texts = (
            None
            if cells is None
            else {cell_id: text for text, cell_id in cells.items() if text != b"#"}
        )
        owner = self

        class Codes(dict[bytes, int]):
            def __missing__(self, field: bytes) -> int:
                code = self[field] = owner._code(field, cell_texts)
                return code

        return Codes()

    def _code(self, field: bytes, cell_texts: dict[bytes, bytes] | None) -> int:
        """`{cell_id}:{variant}[:{goal}]` (without cell texts `{variant}[:{goal}]`) ->
        its code."""
        if cell_texts is None:
            text, rest = b"", field
        else:
            cell_id, _, rest = field.partition(b":")
            text = cell_texts[cell_id]
        code = self._codes.get((text, rest))
        if code is None:
            code = self._codes[(text, rest)] = self._new_code(text, rest, cell_texts is not None)
        return code

    def _new_code(self, text: bytes, rest: bytes, with_cell: bool) -> int:
        variant, *goal = rest.decode().split(":")
        pair = self._pair_ids.get((variant, text))
        if pair is None:
            pair = self._pair_ids[(variant, text)] = len(self.pairs)
            cell = SegmentCell.parse(text.decode()) if with_cell else None
            self.pairs.append((variant, cell))
        return pair * _METRIC_SLOTS + (self._goal_metric(goal[0]) if goal else 0)

    def _goal_metric(self, goal: str) -> int:
        first = self._goal_first.get(goal)
        if first is None:
            if len(self.names) + len(GOAL_METRICS) > _METRIC_SLOTS:
                raise ValueError("too many goals in one experiment's counters")
            first = self._goal_first[goal] = len(self.names)
            self.names.extend(f"g:{goal}:{name}" for name in GOAL_METRICS)
        return first


def _sum_packed(
    rows: npt.NDArray[np.int64],
    first_metrics: npt.NDArray[np.int64],
    packed: list[bytes],
    names: list[str],
    signs: npt.NDArray[np.int8],
) -> Iterator[tuple[int, dict[str, float]]]:
    """(row, {metric name: sum}) of all fields' comma-separated numbers, each field added
    with its sign; nonzero sums only.

    Field i holds the metrics first_metrics[i], first_metrics[i] + 1, ... of row rows[i].
    A sum whose terms cancel to within float rounding of their magnitudes (a day less
    the hours that held it: (0.1 + 0.2) + 0.3 - 0.3 - 0.3 is 5.6e-17) is zero.
    """
    # All numbers parsed in C at once; a field's count of numbers is its commas + 1.
    joined = b";".join(packed)
    characters = np.frombuffer(joined, dtype=np.uint8)
    commas_before = np.cumsum(characters == ord(","))
    field_ends = np.append(np.flatnonzero(characters == ord(";")), characters.size)
    commas_through_end = commas_before[field_ends - 1]
    counts = np.diff(commas_through_end, prepend=0) + 1
    numbers = np.fromstring(joined.replace(b";", b","), sep=",")
    if numbers.size != counts.sum():
        raise ValueError("a counter field does not hold comma-separated numbers")
    starts = np.cumsum(counts) - counts
    positions = np.arange(numbers.size) - np.repeat(starts, counts)
    metrics = np.repeat(first_metrics, counts) + positions
    flat = np.repeat(rows, counts) * len(names) + metrics
    subtracted = bool((signs < 0).any())
    if subtracted:
        numbers = numbers * np.repeat(signs, counts)
    if rows.size and (int(rows.max()) + 1) * len(names) <= _DENSE_LIMIT:
        slots = flat  # no sort: a slot per (row, metric)
        unique = None
    else:
        unique, slots = np.unique(flat, return_inverse=True)
    totals = np.bincount(slots, weights=numbers)
    if subtracted:
        magnitudes = np.bincount(slots, weights=np.abs(numbers))
        totals[np.abs(totals) <= _CANCELLED * magnitudes] = 0.0
    nonzero = np.flatnonzero(totals)
    unique = nonzero if unique is None else unique[nonzero]
    totals = totals[nonzero]
    # sorted by row: one dict per run of equal rows
    unique_rows = unique // len(names)
    ends = [*(np.flatnonzero(np.diff(unique_rows)) + 1).tolist(), unique.size]
    metric_names = np.array(names, dtype=object)[unique % len(names)].tolist()
    total_list = totals.tolist()
    start = 0
    for row, end in zip(unique_rows[np.array(ends) - 1].tolist(), ends, strict=True):
        yield row, dict(zip(metric_names[start:end], total_list[start:end], strict=True))
        start = end
