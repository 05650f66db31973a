"""Which data answers a query: the counter cells (cheap) or the per-visitor scan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from worker.results.query import CELL_FIELDS, TIME_FIELDS, ResultQuery

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
