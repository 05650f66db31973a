"""Dictionary-encoded columns: per-row codes into a short list of distinct values.

Any predicate is then evaluated once per distinct value and broadcast to the rows by
indexing, which keeps every filter operator vectorised however exotic it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from worker.results.query import HOURS_PER_DAY, TIME_FIELDS

MISSING_LABEL = "(not set)"
"""The breakdown segment of rows without a value for the dimension."""

# 1970-01-01 was a Thursday; with Monday = 0 that is day 3 of the week.
_EPOCH_WEEKDAY = 3

Codes = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Column:
    """Row values as ``codes`` into ``values``; code -1 marks a missing value."""

    codes: Codes
    values: list[object]

    def take(self, rows: Codes) -> Column:
        """The column for a derived row set, each row pointing at a row of this one."""
        return Column(self.codes[rows], self.values)

    def lookup(self, table: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Per-row ``table[code]``, where ``table`` has one entry per value plus one last
        entry for missing rows (code -1 indexes it)."""
        return table[self.codes]

    def map_values(self, function: Callable[[object | None], object]) -> list[object]:
        """``function`` of each distinct value, then of a missing value: a lookup table."""
        return [function(value) for value in self.values] + [function(None)]


def encode(values: Iterable[object | None], count: int) -> Column:
    """Encode ``count`` values; None and empty strings are missing."""
    index: dict[object, int] = {}
    distinct: list[object] = []

    def code(value: object | None) -> int:
        if value is None or value == "":
            return -1
        # True, 1 and 1.0 are equal dict keys but different values; strings, the
        # common case, need no tag.
        key = value if type(value) is str else (type(value), value)
        found = index.get(key)
        if found is None:
            found = index[key] = len(distinct)
            distinct.append(value)
        return found

    codes = np.fromiter((code(value) for value in values), dtype=np.int64, count=count)
    return Column(codes, distinct)


def distinct_column(values: Sequence[str]) -> Column:
    """``encode`` of texts that all differ (visitor ids: a row each), without its
    dictionary lookup per value; empty texts are missing."""
    present = np.fromiter(map(bool, values), dtype=bool, count=len(values))
    codes = np.cumsum(present, dtype=np.int64) - 1
    codes[~present] = -1
    return Column(codes, [value for value in values if value])


def derive(column: Column, function: Callable[[object], object | None]) -> Column:
    """The column of ``function`` of each row's value, evaluated once per distinct value;
    missing rows stay missing."""
    mapped = encode(map(function, column.values), len(column.values))
    return Column(column.lookup(np.append(mapped.codes, -1)), mapped.values)


def time_column(hours: Codes, field: str, tz: int) -> Column:
    """Day of week (0 = Monday) or hour of day of UTC hour buckets, in timezone ``tz``."""
    local = hours + tz
    if field == "hour_of_day":
        return Column(local % HOURS_PER_DAY, list(range(HOURS_PER_DAY)))
    return Column((local // HOURS_PER_DAY + _EPOCH_WEEKDAY) % 7, list(range(7)))


class Rows(Protocol):
    """A row set the filters and breakdowns run over: cells, visitors or visits."""

    @property
    def size(self) -> int: ...

    @property
    def hours(self) -> Codes:
        """Each row's UTC hour bucket (entry hour, or first-exposure hour for visits)."""

    def stored_column(self, field: str, key: str | None) -> Column:
        """A stored (non-time) field; row sets that do not keep it raise KeyError."""

    def reference_ms(self) -> npt.NDArray[np.float64]:
        """Each row's visitor entry time in epoch ms, the origin of ``days_*``."""


def resolve_column(rows: Rows, field: str, key: str | None, tz: int) -> Column:
    """A field of a row set: time fields from its hours, the others as stored."""
    if field in TIME_FIELDS:
        return time_column(rows.hours, field, tz)
    return rows.stored_column(field, key)
