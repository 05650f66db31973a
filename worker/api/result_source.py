"""Where the API's result documents come from.

The default query (no filter, all dates) is served from the worker's stored result
snapshot when there is one; every other query is computed on demand and kept for a
few seconds, so a dashboard polling one view costs one computation per interval.

Computations go through ``worker.results.service``: counters when they answer the
query exactly, the vectorised per-visitor scan otherwise.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from datetime import date, timedelta
from typing import Any

from redis.asyncio import Redis

from worker.api.errors import bad_request
from worker.config import Settings
from worker.events.experiment import ExperimentDefinition
from worker.results.query import EPOCH_ORDINAL, HOURS_PER_DAY, ResultQuery
from worker.results.service import Table, compute_result, document, load_table
from worker.store.snapshots import load_snapshot

Document = dict[str, Any]

DEFAULT_QUERY = ResultQuery()
CACHE_SECONDS = 5.0
CACHE_ENTRIES = 512
MAX_DAYS = 400
"""Longest timeseries: more than a year of daily rows is a different question."""


class ResultSource:
    """Result documents for the API: snapshot, brief cache, or a fresh computation."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._prefix = settings.key_prefix
        self._cache: OrderedDict[tuple[str, ResultQuery], tuple[float, Document]] = OrderedDict()
        self._in_flight: dict[tuple[str, ResultQuery], asyncio.Task[Document]] = {}

    async def document(self, definition: ExperimentDefinition, query: ResultQuery) -> Document:
        """The result of ``query`` for every goal of the experiment (``query.goal`` is
        not used: one document serves every goal, as a snapshot does)."""
        query = query.model_copy(update={"goal": None})
        if query == DEFAULT_QUERY:
            stored = await load_snapshot(self._redis, self._prefix, definition.id)
            snapshot = _default_snapshot(stored, definition)
            if snapshot is not None:
                return snapshot
        # The definition is part of the key: a changed definition changes the document.
        key = (definition.model_dump_json(), query)
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        # Concurrent requests for the same query share one computation: without this a
        # burst of dashboards would each read every counter hash at once.
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.create_task(self._compute(definition, query))
            self._in_flight[key] = task
            task.add_done_callback(lambda _: self._in_flight.pop(key, None))
        document = await asyncio.shield(task)
        self._remember(key, document)
        return document

    async def daily(
        self, definition: ExperimentDefinition, query: ResultQuery
    ) -> list[tuple[date, Document]]:
        """One document per day (in the query's timezone) of ``query.goal`` for the
        cohort entering that day, from the first to the last day with visitors inside
        the query's dates."""
        table = await self._cell_table(definition, query)
        days = _days(table, query)
        goal = query.goal_key(definition)

        def documents() -> list[tuple[date, Document]]:
            return [
                (day, document(table, definition, _one_day(query, day), [goal])) for day in days
            ]

        return await asyncio.to_thread(documents)

    def _remember(self, key: tuple[str, ResultQuery], document: Document) -> None:
        self._cache[key] = (time.monotonic(), document)
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)

    async def _compute(self, definition: ExperimentDefinition, query: ResultQuery) -> Document:
        return await compute_result(self._redis, self._prefix, definition, query)

    async def _cell_table(self, definition: ExperimentDefinition, query: ResultQuery) -> Table:
        return await load_table(self._redis, self._prefix, definition, query)


def _default_snapshot(
    snapshot: Document | None, definition: ExperimentDefinition
) -> Document | None:
    """The snapshot if it answers the default query: computed for that query and
    holding every goal of the current definition."""
    if snapshot is None or snapshot.get("query") != DEFAULT_QUERY.model_dump(mode="json"):
        return None
    goals = snapshot.get("goals") or {}
    return snapshot if all(goal.key in goals for goal in definition.goals) else None


def _days(table: Table, query: ResultQuery) -> list[date]:
    """Local days from the first to the last with data, clipped to the query's dates."""
    if len(table.hours) == 0:
        return []
    local_days = (table.hours + query.tz) // HOURS_PER_DAY
    first = date.fromordinal(int(local_days.min()) + EPOCH_ORDINAL)
    last = date.fromordinal(int(local_days.max()) + EPOCH_ORDINAL)
    first = max(first, query.start_date) if query.start_date else first
    last = min(last, query.end_date) if query.end_date else last
    count = (last - first).days + 1
    if count > MAX_DAYS:
        raise bad_request(
            f"The series would have {count} days; choose start_date and end_date at most "
            f"{MAX_DAYS} days apart."
        )
    return [first + timedelta(days=offset) for offset in range(max(count, 0))]


def _one_day(query: ResultQuery, day: date) -> ResultQuery:
    return query.model_copy(update={"start_date": day, "end_date": day})
