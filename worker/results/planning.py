"""Which data answers a query: the counter cells (cheap) or the per-visitor scan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from worker.results.conditions import ID_EQUALITY_OPERATORS, id_spellings
from worker.results.query import CELL_FIELDS, TIME_FIELDS, ResultQuery
from worker.store.counter_reader import Grain

COUNTER_FIELDS = frozenset(CELL_FIELDS) | frozenset(TIME_FIELDS)
"""Fields every counter row determines: its segment cell and its hour bucket."""


@dataclass(frozen=True)
class QueryPlan:
    """``source`` answers the query; ``reasons`` say why the scan is needed (if it is)."""

    source: Literal["counters", "visitors"]
    reasons: tuple[str, ...] = ()


def plan_query(query: ResultQuery) -> QueryPlan:
    """Counters answer exactly when only cell and time fields are involved, every
    visitor with one counted event is converted and every counted event counts;
    anything else needs per-visitor state."""
    reasons = [
        f"filter on {condition.field}"
        for group in query.segment
        for condition in group
        if condition.field not in COUNTER_FIELDS
    ]
    if query.breakdown is not None and query.breakdown not in COUNTER_FIELDS:
        reasons.append(f"breakdown by {query.breakdown}")
    if query.min_count != 1:
        reasons.append("min_count above 1")
    if query.timeframe_days is not None:
        reasons.append("timeframe_days")
    if query.event_filter:
        reasons.append("event attribute filter")
    if reasons:
        return QueryPlan("visitors", tuple(dict.fromkeys(reasons)))
    return QueryPlan("counters")


def counter_grain(query: ResultQuery) -> Grain:
    """The coarsest counters that answer a query the counters answer (``plan_query``):
    without dates, the running totals (per cell with cell filters or a cell
    breakdown); UTC days (a timezone's partial edge days in hours) for dates or the day
    of the week; hours when the hour of day, or a local day of the week off UTC, is
    involved."""
    fields = {condition.field for group in query.segment for condition in group}
    if query.breakdown is not None:
        fields.add(query.breakdown)
    if "hour_of_day" in fields or (query.tz != 0 and "day_of_week" in fields):
        return Grain.HOURS
    if "day_of_week" in fields or query.start_date is not None or query.end_date is not None:
        return Grain.DAYS
    return Grain.CELL_TOTALS if fields else Grain.TOTALS


def visitor_ids_to_read(query: ResultQuery) -> bool | frozenset[str]:
    """Which visitor ids a visitor scan of ``query`` needs: none (False), every row's
    (True), or only the rows of these ids, when every condition on ``visitor_id`` is
    an ``==`` or ``!=`` whose equal ids can be listed (``conditions.id_spellings``):
    any other row's id is equal to none of the targets, whatever it is."""
    conditions = [c for group in query.segment for c in group if c.field == "visitor_id"]
    if not conditions:
        return False
    wanted: set[str] = set()
    for condition in conditions:
        if condition.operator not in ID_EQUALITY_OPERATORS or condition.value is None:
            return True
        spellings = id_spellings(condition.value)
        if spellings is None:
            return True
        wanted |= spellings
    return frozenset(wanted)
