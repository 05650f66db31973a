"""Results for a query: counters when they answer it exactly, else the visitor scan.

The one place where the pure query engine meets Redis; the CLI, the snapshot job and
the read API all compute results through here. A process whose event loop serves
others meanwhile (the worker's ingestion, the read API) computes through
:class:`ResultsService`, which never loads or computes on the caller's loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from datetime import date, timedelta

from worker.errors import InvalidInput
from worker.events.experiment import ExperimentDefinition
from worker.results.cell_aggregation import CellTable, aggregate_cells
from worker.results.conditions import date_mask
from worker.results.contract import ResultDocument
from worker.results.experiment_result import result_document
from worker.results.planning import counter_grain, plan_query, visitor_ids_to_read
from worker.results.query import EPOCH_ORDINAL, HOURS_PER_DAY, ResultQuery
from worker.results.query_totals import QueryTotals
from worker.results.runners import Runner
from worker.results.visitor_scan import VisitorTable, scan_visitors
from worker.store.connection import Redis
from worker.store.counter_reader import Grain, read_counters
from worker.store.sink_protocol import experiment_rules
from worker.store.visitor_columns import read_visitor_columns

Table = CellTable | VisitorTable

MAX_DAYS = 400
"""Longest daily series: more than a year of daily rows is a different question."""


async def load_table(
    redis: Redis, prefix: str, definition: ExperimentDefinition, query: ResultQuery
) -> Table:
    """The cheapest table that answers the query exactly (and the queries within its
    dates that need no finer grain: the days of a series, see :func:`_series_table_query`)."""
    if plan_query(query).source == "counters":
        grain = counter_grain(query)
        running = grain in (Grain.TOTALS, Grain.CELL_TOTALS)
        hour_range = (None, None) if running else query.hour_range()
        counters = await read_counters(redis, prefix, definition.id, grain, hour_range)
        return CellTable.from_counters(counters.cells, counters.data_hours)
    return await load_visitor_table(redis, prefix, definition, visitor_ids_to_read(query))


async def load_visitor_table(
    redis: Redis,
    prefix: str,
    definition: ExperimentDefinition,
    visitor_ids: bool | frozenset[str] = True,
) -> VisitorTable:
    """The experiment's visitors from the columnar visitor store, with their ids as
    ``read_visitor_columns`` reads them for ``visitor_ids``."""
    rules = experiment_rules(definition)
    stored = await read_visitor_columns(redis, prefix, definition.id, visitor_ids)
    return await asyncio.to_thread(VisitorTable.from_columns, definition.id, stored, None, rules)


def totals(table: Table, query: ResultQuery, goal: str, variant_ids: Sequence[str]) -> QueryTotals:
    """Per-variant (and per-segment) totals of one goal from either table."""
    if isinstance(table, CellTable):
        return aggregate_cells(table, query, goal, variant_ids)
    return scan_visitors(table, query, goal, variant_ids)


def document(
    table: Table, definition: ExperimentDefinition, query: ResultQuery, goals: Sequence[str]
) -> ResultDocument:
    """The result document (numbers and statistics) of the given goals."""
    order = query.variant_order(definition)
    return result_document(
        definition,
        {goal: totals(table, query, goal, order) for goal in goals},
        query,
        days_with_data=days_spanned(table, query),
    )


def days_spanned(table: Table, query: ResultQuery) -> float | None:
    """Days from the first to the last hour with data within the query's dates (the
    pace power turns into days); None without data."""
    hours = table.hours_with_data[date_mask(table.hours_with_data, query.hour_range())]
    if len(hours) == 0:
        return None
    return (int(hours.max()) - int(hours.min()) + 1) / HOURS_PER_DAY


async def compute_result(
    redis: Redis, prefix: str, definition: ExperimentDefinition, query: ResultQuery
) -> ResultDocument:
    """The result of every goal of the experiment for the query (a process whose loop
    serves others meanwhile computes through :class:`ResultsService` instead)."""
    table = await load_table(redis, prefix, definition, query)
    goals = [goal.key for goal in definition.goals]
    return await asyncio.to_thread(document, table, definition, query, goals)


def days_with_data(table: Table, query: ResultQuery) -> list[date]:
    """Local days from the first to the last with data, clipped to the query's dates;
    InvalidInput past :data:`MAX_DAYS`."""
    if len(table.hours_with_data) == 0:
        return []
    local_days = (table.hours_with_data + query.tz) // HOURS_PER_DAY
    first = date.fromordinal(int(local_days.min()) + EPOCH_ORDINAL)
    last = date.fromordinal(int(local_days.max()) + EPOCH_ORDINAL)
    first = max(first, query.start_date) if query.start_date else first
    last = min(last, query.end_date) if query.end_date else last
    count = (last - first).days + 1
    if count > MAX_DAYS:
        raise InvalidInput(
            f"The series would have {count} days; choose start_date and end_date at most "
            f"{MAX_DAYS} days apart."
        )
    return [first + timedelta(days=offset) for offset in range(max(count, 0))]


class ResultsService:
    """Result documents of a query: whole, per day, and cumulative per day.

    Every call loads and computes through ``runner``, never on the caller's loop: at
    a million visitors reading and parsing the visitor states is seconds of Python,
    and the caller's loop (ingestion, or an API process serving requests) must keep
    running meanwhile. The API runs its scans with :class:`worker.results.runners.Processes`,
    everything else with :class:`worker.results.runners.Threads`.
    """

    def __init__(self, prefix: str, runner: Runner) -> None:
        self._prefix = prefix
        self._runner = runner

    async def document(
        self, definition: ExperimentDefinition, query: ResultQuery
    ) -> ResultDocument:
        """The result of every goal of the experiment for the query."""
        return await self._runner.run(
            functools.partial(_document_job, self._prefix, definition, query)
        )

    async def daily(
        self, definition: ExperimentDefinition, query: ResultQuery
    ) -> list[tuple[date, ResultDocument]]:
        """One document per day (in the query's timezone) of ``query.goal`` for the
        cohort entering that day, from the first to the last day with visitors inside
        the query's dates (InvalidInput past :data:`MAX_DAYS`)."""
        goal = query.goal_key(definition)
        return await self._runner.run(
            functools.partial(_daily_job, self._prefix, definition, query, goal)
        )

    async def cumulative(
        self, definition: ExperimentDefinition, query: ResultQuery, days: Sequence[date]
    ) -> list[ResultDocument]:
        """The result of ``query.goal`` for the visitors entering up to each of ``days``."""
        goal = query.goal_key(definition)
        return await self._runner.run(
            functools.partial(_cumulative_job, self._prefix, definition, query, goal, list(days))
        )


# The jobs are module-level functions of picklable arguments: a process runner sends
# them to another process.


async def _document_job(
    prefix: str, definition: ExperimentDefinition, query: ResultQuery, redis: Redis
) -> ResultDocument:
    return await compute_result(redis, prefix, definition, query)


async def _daily_job(
    prefix: str, definition: ExperimentDefinition, query: ResultQuery, goal: str, redis: Redis
) -> list[tuple[date, ResultDocument]]:
    table = await load_table(redis, prefix, definition, _series_table_query(query))
    return [
        (day, document(table, definition, _one_day(query, day), [goal]))
        for day in days_with_data(table, query)
    ]


async def _cumulative_job(
    prefix: str,
    definition: ExperimentDefinition,
    query: ResultQuery,
    goal: str,
    days: list[date],
    redis: Redis,
) -> list[ResultDocument]:
    table = await load_table(redis, prefix, definition, _series_table_query(query))
    return [
        document(table, definition, query.model_copy(update={"end_date": day}), [goal])
        for day in days
    ]


def _series_table_query(query: ResultQuery) -> ResultQuery:
    """The query whose table answers every day of a series of ``query``. Any breakdown
    already rules out the running totals; without one, a breakdown by day of the week
    needs the same counters as the series (whole local days: UTC days at UTC, hours off
    it) and leaves the source (counters or visitors) as it was."""
    if query.breakdown is not None:
        return query
    return query.model_copy(update={"breakdown": "day_of_week"})


def _one_day(query: ResultQuery, day: date) -> ResultQuery:
    return query.model_copy(update={"start_date": day, "end_date": day})
