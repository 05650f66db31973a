"""Segment and event-attribute filters evaluated to boolean row masks.

One scalar predicate per operator defines what a condition means; it runs once per
distinct value of a column (see ``columns``), so cells, visitors, visits and goal
events are all filtered by the same code.
"""

from __future__ import annotations

import math
import operator as op
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import product

import numpy as np
import numpy.typing as npt
from numpy.dtypes import StringDType

from worker.results.columns import Column, Mask, Rows, resolve_column
from worker.results.query import DAYS_OPERATORS, Condition, EventFilter, SegmentFilter, Value

MS_PER_DAY = 86_400_000

_ORDER: dict[str, Callable[[float, float], bool]] = {
    ">": op.gt, ">=": op.ge, "<": op.lt, "<=": op.le,
    "days_gt": op.gt, "days_gte": op.ge, "days_lt": op.lt, "days_lte": op.le,
}  # fmt: skip


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).casefold()


def _number(value: object) -> float | None:
    """A finite number, from a number or numeric text; booleans are not numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def epoch_ms(value: object) -> float | None:
    """An ISO 8601 date or datetime as epoch ms (naive means UTC), else None."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() * 1000.0


def _equal(left: object, right: Value) -> bool:
    left_number, right_number = _number(left), _number(right)
    if left_number is not None and right_number is not None:
        return left_number == right_number
    return _text(left) == _text(right)


def _ordered(left: object, right: Value, compare: Callable[[float, float], bool]) -> bool:
    """Numbers compare as numbers, dates as instants; anything else never satisfies."""
    left_number, right_number = _number(left), _number(right)
    if left_number is not None and right_number is not None:
        return compare(left_number, right_number)
    left_ms, right_ms = epoch_ms(left), epoch_ms(right)
    return left_ms is not None and right_ms is not None and compare(left_ms, right_ms)


def scalar_predicate(operator: str, target: Value | None) -> Callable[[object | None], bool]:
    """What ``value operator target`` means for one value (None = missing)."""
    if operator == "exists":
        return lambda value: value is not None
    if operator == "not_exists":
        return lambda value: value is None
    assert target is not None  # the query model requires a value for the rest
    if operator == "==":
        return lambda value: value is not None and _equal(value, target)
    if operator == "!=":
        return lambda value: value is None or not _equal(value, target)
    if operator in ("contains", "not_contains"):
        needle = _text(target)
        wanted = operator == "contains"
        return lambda value: (value is not None and needle in _text(value)) == wanted
    compare = _ORDER[operator]
    return lambda value: value is not None and _ordered(value, target, compare)


def column_mask(column: Column, operator: str, target: Value | None) -> Mask:
    """Rows of ``column`` that satisfy the condition."""
    table = np.array(column.map_values(scalar_predicate(operator, target)), dtype=bool)
    return column.lookup(table).astype(bool, copy=False)


ID_EQUALITY_OPERATORS = frozenset({"==", "!="})
"""Operators on visitor ids answered by comparing whole ids: by numpy string functions
here (``visitor_id_mask``), and by a lookup of the targets' spellings in the store
(``id_spellings``, ``planning.visitor_ids_to_read``)."""
_NUMBER_CHARACTERS = "0123456789-_eE"
"""The characters of a visitor id that a finite number's text may hold: an id with any
other character is never a number (``float`` reads no other letters but those of
``inf`` and ``nan``, which are not finite)."""


def visitor_id_mask(column: Column, operator: str, target: Value) -> Mask:
    """``column_mask`` of a column of visitor ids for ``==`` and ``!=``, by numpy string
    functions instead of a Python call per id.

    Every visitor is its own value here, so the per-value predicate would run once per
    visitor (``contains`` runs as fast that way: it is left to ``column_mask``). The
    answer is the scalar predicate's because visitor ids are ASCII letters, digits,
    ``_`` and ``-`` (``VisitorId``), whose ``casefold`` is ``lower``; an id that may be
    a number, against a number, takes the scalar predicate itself.
    """
    texts = np.array(column.values, dtype=StringDType())
    table = np.asarray(np.strings.lower(texts) == _text(target), dtype=bool)
    if _number(target) is not None:
        numbers = np.strings.str_len(np.strings.strip(texts, _NUMBER_CHARACTERS)) == 0
        for index in np.flatnonzero(numbers).tolist():
            table[index] = _equal(column.values[index], target)
    if operator == "!=":
        table = ~table
    missing = scalar_predicate(operator, target)(None)
    return column.lookup(np.append(table, missing)).astype(bool, copy=False)


MAX_ID_SPELLINGS = 256
"""Most spellings of one target that a visitor-id lookup tries (a target of eight
letters has 256); one with more letters is answered by reading every id."""
_FOLDED_ID = re.compile(r"[a-z0-9_\-]{1,80}")
"""A visitor id (``VisitorId``) folded to lower case."""


def id_spellings(target: Value) -> frozenset[str] | None:
    """Every visitor id that ``visitor_id == target`` holds for, or None when they are
    too many to list (more than MAX_ID_SPELLINGS, or a numeric target, which ``042``
    and ``42`` both equal) or the target cannot be an id's text.

    An id equals a non-numeric target when its case-folded texts are equal (the
    scalar predicate); an id is ASCII, so its folded text is its lower case, and the
    ids that fold to one text are that text's upper- and lower-case spellings.
    """
    if _number(target) is not None:
        return None
    folded = _text(target)
    if not _FOLDED_ID.fullmatch(folded):
        return None
    letters = sum(character.isalpha() for character in folded)
    if 2**letters > MAX_ID_SPELLINGS:
        return None
    choices = [(c, c.upper()) if c.isalpha() else (c,) for c in folded]
    return frozenset("".join(spelling) for spelling in product(*choices))


def _days_mask(
    column: Column, operator: str, target: Value | None, reference_ms: npt.NDArray[np.float64]
) -> Mask:
    """Days from the field's date to the row's entry, compared with ``target``."""
    limit = _number(target)
    if limit is None:
        return np.zeros(column.codes.size, dtype=bool)
    instants = np.array(column.map_values(epoch_ms), dtype=float)  # None becomes NaN
    days = (reference_ms - column.lookup(instants)) / MS_PER_DAY
    with np.errstate(invalid="ignore"):  # NaN (no date) compares False, as wanted
        return np.asarray(_ORDER[operator](days, limit), dtype=bool)


def condition_mask(condition: Condition, rows: Rows, tz: int) -> Mask:
    """Rows that satisfy one segment condition."""
    column = resolve_column(rows, condition.field, condition.key, tz)
    if condition.field == "visitor_id" and condition.operator in ID_EQUALITY_OPERATORS:
        assert condition.value is not None  # the query model requires one for these
        return visitor_id_mask(column, condition.operator, condition.value)
    if condition.operator in DAYS_OPERATORS:
        return _days_mask(column, condition.operator, condition.value, rows.reference_ms())
    return column_mask(column, condition.operator, condition.value)


def segment_mask(segment: SegmentFilter, rows: Rows, tz: int) -> Mask:
    """Rows in the segment: every OR group has at least one condition that holds."""
    return _combine(
        [[condition_mask(condition, rows, tz) for condition in group] for group in segment],
        outer=np.logical_and,
        inner=np.logical_or,
        size=rows.size,
    )


def event_mask(event_filter: EventFilter, attribute: Callable[[str], Column], size: int) -> Mask:
    """Events that match: all conditions of at least one AND group hold; no filter = all."""
    return _combine(
        [
            [column_mask(attribute(item.key), item.operator, item.value) for item in group]
            for group in event_filter
        ],
        outer=np.logical_or,
        inner=np.logical_and,
        size=size,
    )


def _combine(
    groups: Sequence[Sequence[Mask]],
    outer: np.ufunc,
    inner: np.ufunc,
    size: int,
) -> Mask:
    if not groups:  # no filter selects everything
        return np.ones(size, dtype=bool)
    combined = [inner.reduce(np.stack(group)) for group in groups]
    return np.asarray(outer.reduce(np.stack(combined)), dtype=bool)


def date_mask(hours: npt.NDArray[np.int64], hour_range: tuple[int | None, int | None]) -> Mask:
    """Rows whose hour bucket lies in [first, end); None leaves a side open."""
    first, end = hour_range
    mask = np.ones(hours.size, dtype=bool)
    if first is not None:
        mask &= hours >= first
    if end is not None:
        mask &= hours < end
    return mask
