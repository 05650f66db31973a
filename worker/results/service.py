"""Results for a query: counters when they answer it exactly, else the visitor scan.

The one place where the pure query engine meets Redis; the CLI, the snapshot job and
the read API all compute results through here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from worker.events.experiment import ExperimentDefinition
from worker.results.cell_aggregation import CellTable, aggregate_cells
from worker.results.contract import ResultDocument
from worker.results.experiment_result import result_document
from worker.results.planning import plan_query
from worker.results.query import ResultQuery
from worker.results.query_totals import QueryTotals
from worker.results.visitor_scan import VisitorTable, scan_visitors
from worker.store.connection import Redis
from worker.store.counter_reader import read_counters
from worker.store.visitor_reader import read_visitor_states

Table = CellTable | VisitorTable


async def load_table(
    redis: Redis, prefix: str, definition: ExperimentDefinition, query: ResultQuery
) -> Table:
    """The cheapest table that answers the query exactly."""
    if plan_query(query).source == "counters":
        return CellTable.from_counters(await read_counters(redis, prefix, definition.id))
    states = await read_visitor_states(redis, prefix, definition.id)
    return await asyncio.to_thread(VisitorTable.build, definition.id, states)


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
        definition, {goal: totals(table, query, goal, order) for goal in goals}, query
    )


async def compute_result(
    redis: Redis, prefix: str, definition: ExperimentDefinition, query: ResultQuery
) -> ResultDocument:
    """The result of every goal of the experiment for the query."""
    table = await load_table(redis, prefix, definition, query)
    goals = [goal.key for goal in definition.goals]
    return await asyncio.to_thread(document, table, definition, query, goals)


async def compute_result_off_loop(
    connect: Callable[[], Redis], prefix: str, definition: ExperimentDefinition, query: ResultQuery
) -> ResultDocument:
    """``compute_result`` on a thread of its own, with its own event loop and a new
    client from ``connect`` (a client belongs to the loop it was made on): at a million
    visitors reading and parsing the counters is seconds of Python, and the caller's
    loop (ingestion, or an API process serving requests) must keep running meanwhile.
    """

    async def compute() -> ResultDocument:
        async with connect() as redis:
            return await compute_result(redis, prefix, definition, query)

    def run() -> ResultDocument:
        # The coroutine is made on the thread too: cancelled before the thread starts,
        # none is left never awaited.
        return asyncio.run(compute())

    return await asyncio.to_thread(run)
