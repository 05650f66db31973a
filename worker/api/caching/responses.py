"""Rendered Mida result answers, kept as the bytes sent, with what they were made of.

A result answer is a pure function of the stored definition, the snapshot (default
query) or a computed document, the recorded end date, the query string and the day
(``days_running``). An entry keeps the raw stored bytes it was made from; it is served
again only while one Redis round trip (``read_state``) shows the same bytes, the
computed document is still the cached one and the day count is unchanged. So a new
snapshot or definition is served from the first request after it is stored, and
no pydantic model is built or serialised for a repeated question.

Entries are per (experiment, project of the key, raw query string): different query
strings never share an entry, and another project's key never reaches one (the key's
project must equal the path's before an entry is looked up).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from worker.api.caching.results import DEFAULT_QUERY, ResultSource, Version
from worker.api.caching.shared_reads import SharedReads
from worker.api.experiment_state import days_running, needs_ended_at
from worker.events.experiment import ExperimentDefinition
from worker.results.query import ResultQuery
from worker.store.connection import Redis
from worker.store.experiment_state import ExperimentState, read_state

RESPONSE_ENTRIES = 1024

EntryKey = tuple[str, str, bytes]
"""(project, experiment id, raw query string)."""


@dataclass(frozen=True)
class RenderedResult:
    """One answer's bytes and everything needed to tell whether it is current."""

    definition: ExperimentDefinition
    query: ResultQuery
    state: ExperimentState
    version: Version
    ended_at: datetime | None
    days_running: int
    body: bytes

    @cached_property
    def reads_snapshot(self) -> bool:
        return is_default(self.query)

    @cached_property
    def reads_ended_at(self) -> bool:
        return needs_ended_at(self.definition)


def is_default(query: ResultQuery) -> bool:
    """Whether the answer may come from the snapshot (every goal: ``goal`` ignored)."""
    return query.model_copy(update={"goal": None}) == DEFAULT_QUERY


class ResponseCache:
    """The last rendered answer per :data:`EntryKey` (least recently used dropped)."""

    def __init__(self, redis: Redis, prefix: str, results: ResultSource) -> None:
        self._redis = redis
        self._prefix = prefix
        self._results = results
        self._entries: OrderedDict[EntryKey, RenderedResult] = OrderedDict()
        self._reads: SharedReads[ExperimentState] = SharedReads()

    async def state(self, definition: ExperimentDefinition, query: ResultQuery) -> ExperimentState:
        """The stored bytes an answer of ``query`` depends on. Read it *before* making
        the answer, so an answer is never older than the state it is filed under."""
        return await self._state(definition.id, is_default(query), needs_ended_at(definition))

    def put(self, key: EntryKey, entry: RenderedResult) -> None:
        """File ``entry`` (made after ``entry.state`` was read) under ``key``."""
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > RESPONSE_ENTRIES:
            self._entries.popitem(last=False)

    async def current(self, key: EntryKey, now: datetime) -> bytes | None:
        """The body filed under ``key`` if it is still the answer, else None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        state = await self._state(entry.definition.id, entry.reads_snapshot, entry.reads_ended_at)
        if (
            state != entry.state
            or not self._results.is_current(entry.version)
            or days_running(entry.definition, entry.ended_at, now) != entry.days_running
        ):
            return None
        return entry.body

    async def _state(self, experiment_id: str, snapshot: bool, ended_at: bool) -> ExperimentState:
        # Concurrent requests share one read that started after they arrived.
        return await self._reads.read(
            (experiment_id, snapshot, ended_at),
            lambda: read_state(
                self._redis, self._prefix, experiment_id, snapshot=snapshot, ended_at=ended_at
            ),
        )
