"""Every interval: the default result of each experiment, computed once, published.

Every worker runs the job; a Redis claim per experiment and interval makes exactly one
of them compute it. The snapshot goes to Redis (the API serves it) and to the
compacted `ab.results` topic; decisions go through an outbox that is filled in the
same atomic step that marks them taken, so each is published once across restarts
and workers (at-least-once only if a worker dies between publishing and trimming the
outbox: the event's `idempotency_key` lets a consumer drop that repeat).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer

from worker import relay
from worker.config import Settings
from worker.events.experiment import ExperimentDefinition, ExperimentStatus
from worker.results.contract import Snapshot
from worker.results.decisions import Decisions, DecisionState, decide
from worker.results.query import ResultQuery
from worker.results.runners import Threads
from worker.results.service import ResultsService
from worker.store import keys, snapshots
from worker.store.applied_offsets import read_applied_offsets
from worker.store.connection import Redis, connect

log = logging.getLogger(__name__)

DEFAULT_QUERY = ResultQuery()
FINAL = -1
"""The claim index of a completed experiment's one final snapshot."""
CLAIM_SECONDS = 60
"""Least time an interval's claim is kept (three intervals if longer): a worker that
read the clock in an interval claims it late when the experiments before it in the run
took long, and must still find the claim another worker made."""


class SnapshotJob:
    """Computes, stores and publishes result snapshots and the decisions they imply."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        producer: AIOKafkaProducer,
        observe_compute_seconds: Callable[[float], None],
    ) -> None:
        """``observe_compute_seconds`` is told how long each snapshot took to compute
        (the worker's histogram: its metrics belong to the process that runs the job)."""
        self._settings = settings
        self._redis = redis
        self._producer = producer
        self._observe_compute_seconds = observe_compute_seconds
        self._worker = f"{socket.gethostname()}:{os.getpid()}"
        # Off the worker's loop, which keeps ingesting meanwhile.
        self._results = ResultsService(settings.key_prefix, Threads(lambda: connect(settings)))

    async def run_once(self, definitions: list[ExperimentDefinition], now: datetime) -> int:
        """One interval for every experiment; returns how many snapshots this worker made."""
        interval = self._settings.results_interval_seconds
        index = int(now.timestamp() // interval)
        made = 0
        for definition in definitions:
            if definition.status is ExperimentStatus.DRAFT:
                continue
            completed = definition.status is ExperimentStatus.COMPLETED
            claim = FINAL if completed else index
            ttl = 30 * 86400 if completed else max(CLAIM_SECONDS, math.ceil(interval * 3))
            prefix = self._settings.key_prefix
            if not await snapshots.claim_interval(self._redis, prefix, definition.id, claim, ttl):
                continue
            await self._snapshot(definition, now, index, completed)
            made += 1
        # Every outbox, every interval: decisions a worker queued but died before
        # publishing are published by the next run, whichever worker it is.
        for definition in definitions:
            await relay.flush(
                self._redis,
                self._producer,
                keys.winners_outbox_key(self._settings.key_prefix, definition.id),
                self._settings.topic_dead_letter,
            )
        return made

    async def _snapshot(
        self, definition: ExperimentDefinition, now: datetime, index: int, completed: bool
    ) -> None:
        prefix = self._settings.key_prefix
        applied = await read_applied_offsets(self._redis, prefix)
        started = time.perf_counter()
        document = await self._results.document(definition, DEFAULT_QUERY)
        self._observe_compute_seconds(time.perf_counter() - started)
        ended_at = None
        if completed:
            recorded = await snapshots.mark_ended(
                self._redis, prefix, definition.id, now.isoformat()
            )
            ended_at = datetime.fromisoformat(recorded)
        snapshot = Snapshot(
            document=document,
            applied_offsets=applied,
            computed_at=now,
            interval_index=index,
            computed_by=self._worker,
            ended_at=ended_at,
        )
        published = snapshot.model_dump(mode="json")
        await snapshots.save_snapshot(self._redis, prefix, definition.id, published)
        await self._producer.send_and_wait(
            self._settings.topic_results, orjson.dumps(published), key=definition.id.encode()
        )
        if completed:
            return  # a frozen result takes no new decisions
        state = await load_decision_state(self._redis, prefix, definition.id)
        decisions = decide(definition, state, snapshot)
        taken = await record_decisions(self._redis, self._settings, definition.id, decisions)
        if taken:
            kinds = ", ".join(event.kind for event in decisions.events)
            log.info("%s: %d decision(s): %s", definition.id, taken, kinds)


async def load_decision_state(redis: Redis, prefix: str, experiment_id: str) -> DecisionState:
    """The state the experiment's next decisions start from."""
    stored = await snapshots.load_decision_state(redis, prefix, experiment_id)
    return DecisionState.model_validate(stored)


async def record_decisions(
    redis: Redis, settings: Settings, experiment_id: str, decisions: Decisions
) -> int:
    """Queue the events for `ab.winners` (each once, by its idempotency key), add them to
    the decision history and store the state, in one atomic step; the worker's relay
    publishes them. Returns how many were new."""
    entries = []
    for event in decisions.events:
        value = event.model_dump(mode="json")
        published = relay.publish_entry(settings.topic_winners, experiment_id, value)
        entries.append((event.idempotency_key, published, orjson.dumps(value)))
    return await snapshots.record_decisions(
        redis, settings.key_prefix, experiment_id, entries, decisions.state.model_dump(mode="json")
    )


def utc_now() -> datetime:
    return datetime.now(UTC)
