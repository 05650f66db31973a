"""Reads an experiment's counters from every partition and sums them per cell."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from redis.asyncio import Redis

from worker.events.segment_cell import SegmentCell
from worker.store import keys
from worker.store.meta import partition_count

VISITOR_METRICS = ("n", "visits", "me", "vc", "vc2")
"""Positions in a cell's packed visitor metrics (apply_batch.lua's VISITOR_METRICS)."""
GOAL_METRICS = (
    "cv", "cvis", "ev", "ev2", "ord", "rev", "rev2",
    "cvis2", "vcvis", "vev", "vrev", "ord2", "revord", "x", "x2", "xy",
)  # fmt: skip
"""Positions in a cell's packed metrics of one goal (apply_batch.lua's GOAL_METRICS)."""


class CellKey(NamedTuple):
    """One counter cell: variant x entry hour x segment cell; metric names its number.

    A named tuple, not a frozen dataclass: a read builds one per cell (359,016 at a
    million visitors), and a dataclass' __init__ took a third of the read's time.
    """

    variant: str
    hour: int
    cell: SegmentCell


async def read_counters(
    redis: Redis, prefix: str, experiment_id: str
) -> dict[CellKey, dict[str, float]]:
    """All counters of the experiment, summed over partitions.

    Metrics are named after VISITOR_METRICS and `g:{goal}:{name}` after GOAL_METRICS
    (apply_batch.lua says what each sums); a metric that was never counted in a cell
    may be absent or 0.
    """
    partitions = await partition_count(redis, prefix)
    async with redis.pipeline(transaction=False) as pipe:
        for partition in range(partitions):
            pipe.smembers(keys.counter_hours_key(prefix, partition, experiment_id))
        hour_sets = await pipe.execute()
    hours = [sorted(int(hour) for hour in hour_set) for hour_set in hour_sets]
    async with redis.pipeline(transaction=False) as pipe:
        for partition in range(partitions):
            for hour in hours[partition]:
                pipe.hgetall(keys.counters_key(prefix, partition, experiment_id, hour))
        # After the counters: the sink may intern a cell while we read, and ids are only
        # ever added, so cells read last name every id the counters read before use.
        for partition in range(partitions):
            pipe.hgetall(keys.cells_key(prefix, partition))
        counter_replies = await pipe.execute()
    cell_hashes = counter_replies[len(counter_replies) - partitions :]
    replies = iter(counter_replies)  # the hours' hashes, in the order requested
    # Summed in one vectorised pass: per stored field only a dictionary lookup runs in
    # Python. A field name is parsed once per partition into a code naming its
    # (variant, cell text) pair and its first metric (_FieldCodes); the numbers of all
    # fields are then parsed and summed by numpy (_sum_packed).
    codes = _FieldCodes()
    field_codes: list[int] = []
    field_hours: list[int] = []
    reply_sizes: list[int] = []
    packed: list[bytes] = []
    for partition in range(partitions):
        partition_codes = codes.for_partition(cell_hashes[partition])
        for hour in hours[partition]:
            reply = next(replies)
            field_codes.extend(map(partition_codes.__getitem__, reply))
            packed.extend(reply.values())
            field_hours.append(hour)
            reply_sizes.append(len(reply))
    if not packed:
        return {}
    code_array = np.array(field_codes, dtype=np.int64)
    hour_array = np.repeat(np.array(field_hours, dtype=np.int64), reply_sizes)
    # one row per (variant, cell text, hour): the cell of the result
    cells, rows = np.unique((code_array // _METRIC_SLOTS) << 32 | hour_array, return_inverse=True)
    row_metrics: list[dict[str, float]] = [{} for _ in range(cells.size)]
    for row, metrics in _sum_packed(rows, code_array % _METRIC_SLOTS, packed, codes.names):
        row_metrics[row] = metrics
    cell_keys = [
        CellKey(variant, hour, cell)
        for (variant, cell), hour in zip(
            map(codes.pairs.__getitem__, (cells >> 32).tolist()),
            (cells & 0xFFFFFFFF).tolist(),
            strict=True,
        )
    ]
    return dict(zip(cell_keys, row_metrics, strict=True))


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
        self.pairs: list[tuple[str, SegmentCell]] = []
        self._pair_ids: dict[tuple[str, bytes], int] = {}
        self._goal_first: dict[str, int] = {}

    def for_partition(self, cells: dict[bytes, bytes]) -> dict[bytes, int]:
        """A mapping field name -> code for one partition, given its cells hash."""
        cell_texts = {cell_id: text for text, cell_id in cells.items() if text != b"#"}
        owner = self

        class Codes(dict[bytes, int]):
            def __missing__(self, field: bytes) -> int:
                code = self[field] = owner._code(field, cell_texts)
                return code

        return Codes()

    def _code(self, field: bytes, cell_texts: dict[bytes, bytes]) -> int:
        """`{cell_id}:{variant}[:{goal}]` -> its code."""
        cell_id, variant, *goal = field.decode().split(":")
        text = cell_texts[cell_id.encode()]
        pair = self._pair_ids.get((variant, text))
        if pair is None:
            pair = self._pair_ids[(variant, text)] = len(self.pairs)
            self.pairs.append((variant, SegmentCell.parse(text.decode())))
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
) -> Iterator[tuple[int, dict[str, float]]]:
    """(row, {metric name: sum}) of all fields' comma-separated numbers; nonzero sums only.

    Field i holds the metrics first_metrics[i], first_metrics[i] + 1, ... of row rows[i].
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
    if rows.size and (int(rows.max()) + 1) * len(names) <= _DENSE_LIMIT:
        totals = np.bincount(flat, weights=numbers)  # no sort: a slot per (row, metric)
        unique = np.flatnonzero(totals)
        totals = totals[unique]
    else:
        unique, inverse = np.unique(flat, return_inverse=True)
        totals = np.bincount(inverse, weights=numbers)
        nonzero = totals != 0
        unique, totals = unique[nonzero], totals[nonzero]
    # sorted by row: one dict per run of equal rows
    unique_rows = unique // len(names)
    ends = [*(np.flatnonzero(np.diff(unique_rows)) + 1).tolist(), unique.size]
    metric_names = np.array(names, dtype=object)[unique % len(names)].tolist()
    total_list = totals.tolist()
    start = 0
    for row, end in zip(unique_rows[np.array(ends) - 1].tolist(), ends, strict=True):
        yield row, dict(zip(metric_names[start:end], total_list[start:end], strict=True))
        start = end
