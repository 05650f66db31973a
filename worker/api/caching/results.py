"""Where the API's result documents come from.

The default query (no filter, all dates) is served from the worker's stored result
snapshot when there is one; every other query is computed on demand and kept for a
few seconds, so a dashboard polling one view costs one computation per interval. An
expired result is still served for up to ``STALE_SECONDS`` while one recomputation
runs in the background, so only the very first question waits for a computation.

Every document, cached or not (the daily and cumulative series are not), is computed
by ``worker.results.service.ResultsService``, off the serving event loop: counters
when they answer the query exactly (on a thread), the vectorised per-visitor scan
otherwise. A scan first takes a slot of ``worker.api.scans.ScanLimiter`` (or is refused
with a 503) and runs in one of as many processes of its own, where its seconds of
Python cannot hold this process's GIL; a computation from the counters never waits for
a slot. Requests that
share a computation share its slot: a request joining one already admitted is never
refused, and one joining a computation still waiting for its slot shares its outcome.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TypeVar

from pydantic import ValidationError

from worker.api.errors import bad_request
from worker.api.scans import ScanLimiter
from worker.config import Settings
from worker.errors import InvalidInput
from worker.events.experiment import ExperimentDefinition
from worker.results.contract import ResultDocument, Snapshot
from worker.results.planning import plan_query
from worker.results.query import ResultQuery
from worker.results.runners import Processes, Threads
from worker.results.service import ResultsService
from worker.store.connection import Redis, connect
from worker.store.snapshots import stored_snapshot

log = logging.getLogger(__name__)

CacheKey = tuple[str, ResultQuery]
T = TypeVar("T")

DEFAULT_QUERY = ResultQuery()
CACHE_SECONDS = 5.0
STALE_SECONDS = 60.0
"""A computed result older than ``CACHE_SECONDS`` but younger than this is still
served while one newer computation runs in the background: a computation at a
million visitors takes seconds, and every client waiting for it each time the cache
expires is what made the filtered p99 seconds long."""
CACHE_ENTRIES = 512
SCAN_NICENESS = 10
"""Scan processes yield the CPU to the API process: at the API's own priority they
took its event loop's CPU time on a busy machine (default-result p99 367 ms during a
flood, against 161 ms at niceness 10 in the next run; BENCHMARKS.md)."""


@dataclass(frozen=True)
class Version:
    """Which document an answer was made from: the snapshot (``key`` None; its stored
    bytes tell whether it is current) or one computation kept in the cache."""

    key: CacheKey | None = None
    sequence: int = 0


@dataclass(frozen=True)
class _Computed:
    at: float
    sequence: int
    document: ResultDocument
    definition: ExperimentDefinition
    query: ResultQuery


class ResultSource:
    """Result documents for the API: snapshot, brief cache, or a fresh computation;
    and the daily and cumulative series of the charts."""

    def __init__(self, redis: Redis, settings: Settings, scans: ScanLimiter) -> None:
        self._redis = redis
        self._prefix = settings.key_prefix
        self._service = ResultsService(settings.key_prefix, Threads(lambda: connect(settings)))
        self._scan_processes = Processes(settings, scans.slots, SCAN_NICENESS)
        self._scan_service = ResultsService(settings.key_prefix, self._scan_processes)
        self._scans = scans
        self._cache: OrderedDict[CacheKey, _Computed] = OrderedDict()
        self._in_flight: dict[CacheKey, asyncio.Task[_Computed]] = {}
        self._sequence = itertools.count(1)
        # The last snapshot parsed per experiment: parsing it is most of the cost of a
        # default result, and it changes once per results interval. None: unreadable.
        self._snapshots: dict[str, tuple[bytes, ResultDocument | None]] = {}

    async def document(
        self, definition: ExperimentDefinition, query: ResultQuery
    ) -> ResultDocument:
        """The result of ``query`` for every goal of the experiment (``query.goal`` is
        not used: one document serves every goal, as a snapshot does)."""
        document, _ = await self.versioned(definition, query)
        return document

    async def versioned(
        self, definition: ExperimentDefinition, query: ResultQuery
    ) -> tuple[ResultDocument, Version]:
        """The document of :meth:`document` and the version it is."""
        query = query.model_copy(update={"goal": None})
        if query == DEFAULT_QUERY:
            snapshot = _default_snapshot(await self._snapshot(definition.id), definition)
            if snapshot is not None:
                return snapshot, Version()
        # The definition is part of the key: a changed definition changes the document.
        key = (definition.model_dump_json(), query)
        cached = self._cache.get(key)
        if cached is None or not self._servable(key, cached):
            cached = await asyncio.shield(self._start(key, definition, query))
        return cached.document, Version(key, cached.sequence)

    def is_current(self, version: Version) -> bool:
        """Whether a version may still be served: a computed one while it is the one
        the cache serves (a snapshot version always: its bytes are compared by the
        caller)."""
        if version.key is None:
            return True
        cached = self._cache.get(version.key)
        return (
            cached is not None
            and cached.sequence == version.sequence
            and self._servable(version.key, cached)
        )

    def _servable(self, key: CacheKey, cached: _Computed) -> bool:
        """Fresh, or stale within ``STALE_SECONDS`` (then a recomputation is started)."""
        age = time.monotonic() - cached.at
        if CACHE_SECONDS <= age < STALE_SECONDS:
            self._start(key, cached.definition, cached.query)
        return age < STALE_SECONDS

    def _start(
        self, key: CacheKey, definition: ExperimentDefinition, query: ResultQuery
    ) -> asyncio.Task[_Computed]:
        """The computation of ``key``, started unless one runs: concurrent requests
        share it (a burst of dashboards would otherwise each read every counter)."""
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.create_task(self._compute_and_keep(key, definition, query))
            self._in_flight[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return task

    def _finished(self, key: CacheKey, task: asyncio.Task[_Computed]) -> None:
        self._in_flight.pop(key, None)
        if not task.cancelled():
            task.exception()  # a background refresh may have no waiter to see its error

    async def _compute_and_keep(
        self, key: CacheKey, definition: ExperimentDefinition, query: ResultQuery
    ) -> _Computed:
        document = await self._compute(definition, query)
        computed = _Computed(time.monotonic(), next(self._sequence), document, definition, query)
        self._cache[key] = computed
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return computed

    async def daily(
        self, definition: ExperimentDefinition, query: ResultQuery
    ) -> list[tuple[date, ResultDocument]]:
        """One document per day (in the query's timezone) of ``query.goal`` for the
        cohort entering that day, from the first to the last day with visitors inside
        the query's dates; a 400 when that is too many days."""
        try:
            return await self._computed(query, lambda service: service.daily(definition, query))
        except InvalidInput as error:
            raise bad_request(str(error)) from error

    async def cumulative(
        self, definition: ExperimentDefinition, query: ResultQuery, days: Sequence[date]
    ) -> list[ResultDocument]:
        """The result of ``query.goal`` for the visitors entering up to each of ``days``."""
        return await self._computed(
            query, lambda service: service.cumulative(definition, query, days)
        )

    def close(self) -> None:
        """Stop the scan processes once their running scans are done."""
        self._scan_processes.close()

    async def _snapshot(self, experiment_id: str) -> ResultDocument | None:
        """The stored snapshot's document, parsed once per distinct stored bytes."""
        raw = await stored_snapshot(self._redis, self._prefix, experiment_id)
        if raw is None:
            self._snapshots.pop(experiment_id, None)
            return None
        parsed = self._snapshots.get(experiment_id)
        if parsed is not None and parsed[0] == raw:
            return parsed[1]
        try:
            document: ResultDocument | None = Snapshot.model_validate_json(raw).document
        except ValidationError as error:
            # Written by a worker of another version: answered by a computation instead.
            log.warning("snapshot of %s does not validate: %s", experiment_id, error)
            document = None
        self._snapshots[experiment_id] = (raw, document)
        return document

    async def _compute(
        self, definition: ExperimentDefinition, query: ResultQuery
    ) -> ResultDocument:
        return await self._computed(query, lambda service: service.document(definition, query))

    async def _computed(
        self, query: ResultQuery, compute: Callable[[ResultsService], Awaitable[T]]
    ) -> T:
        """``compute`` with the service fit for the query: from the counters at once,
        a scan once admitted (ApiError 503 when no slot frees up in time)."""
        if plan_query(query).source == "counters":
            return await compute(self._service)
        async with self._scans.admitted():
            return await compute(self._scan_service)


def _default_snapshot(
    snapshot: ResultDocument | None, definition: ExperimentDefinition
) -> ResultDocument | None:
    """The snapshot if it answers the default query: computed for that query and
    holding every goal of the current definition."""
    if snapshot is None or snapshot.query != DEFAULT_QUERY:
        return None
    return snapshot if all(goal.key in snapshot.goals for goal in definition.goals) else None
