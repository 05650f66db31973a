"""One batch of input messages -> one atomic sink call per partition -> outbox flushed.

This is the consumer-agnostic core: an engine (the faust agent in
worker/ingestion/app.py, or the aiokafka loop in worker/ingestion/consumer_loop.py)
hands it a batch and acks or commits the batch's offsets only after `process`
returned. A batch that
fails on a transient error is retried whole, which is safe because the sink skips
offsets it applied before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar, cast

from aiokafka import AIOKafkaProducer

from worker import relay
from worker.config import Settings
from worker.events.experiment import ExperimentDefinition
from worker.ingestion import metrics, outage
from worker.ingestion.commands import (
    Plan,
    SourceMessage,
    plan_assignment,
    plan_conversion,
    sink_rules,
)
from worker.ingestion.outage import TRANSIENT
from worker.ingestion.positions import (
    BatchSpan,
    ReadPositions,
    Rewind,
    roll_back,
    set_aside,
    warn_lost,
)
from worker.ingestion.registry import ExperimentRegistry
from worker.store import keys
from worker.store.applied_offsets import read_partition_offsets
from worker.store.batch_sink import BatchSink, SinkSettings
from worker.store.connection import Redis, connect
from worker.store.sink_protocol import ExperimentRules, SinkCommand, SinkReply

log = logging.getLogger(__name__)

T = TypeVar("T")
Planner = Callable[[SourceMessage, dict[str, ExperimentDefinition], int], Plan]

REGISTRY_SYNC_SECONDS = 5.0
"""How long an experiment id that was not found stays looked up: events naming it in
that time are dead-lettered without waiting for another registry sync."""


@dataclass(frozen=True)
class PreparedBatch:
    """A planned batch: the sink commands of each partition, in offset order."""

    size: int
    by_partition: dict[int, list[SinkCommand]]
    span: BatchSpan


async def _retrying(waiting: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """Run `attempt` until it succeeds, backing off (capped) after transient failures.

    While Redis or Kafka is unreachable, a warning names it and says since when, at
    once and then every 10 s (worker/ingestion/outage.py); each retry is counted.
    """
    return await outage.retry_transient(lambda: metrics.timed(attempt), TRANSIENT, waiting)


class Pipeline:
    """Plans, applies and publishes; owns no consumer, so any consumer loop can drive it."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        producer: AIOKafkaProducer,
        registry: ExperimentRegistry,
        partitions: int,
    ) -> None:
        self._settings = settings
        self._redis = redis
        self._producer = producer
        self._registry = registry
        self._partitions = partitions
        self._sink = BatchSink(
            redis,
            SinkSettings(
                prefix=settings.key_prefix,
                dedup_window_seconds=settings.dedup_window_days * 86400,
                conversion_hold_ms=settings.conversion_hold_seconds * 1000,
                assignments_topic=settings.topic_assignments,
            ),
        )
        skew_ms = settings.max_future_skew_seconds * 1000
        self._planners: dict[str, Planner] = {
            settings.topic_assignments: partial(plan_assignment, max_future_skew_ms=skew_ms),
            settings.topic_conversions: partial(plan_conversion, max_future_skew_ms=skew_ms),
        }
        # experiment id -> when the registry was last synced because of it
        self._synced_for: dict[str, float] = {}
        # One flush of a partition's outbox at a time: two would both publish the same
        # head entries, and the second trim would drop entries queued in between unsent.
        self._outbox_locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.positions = ReadPositions()
        self.totals: Counter[str] = Counter()

    async def process(self, messages: Sequence[SourceMessage]) -> list[Rewind]:
        """Plan and apply a batch, retrying transient failures until it lands."""
        return await self.apply(await self.prepare(messages))

    async def prepare(self, messages: Sequence[SourceMessage]) -> PreparedBatch:
        """Plan a batch (CPU only, unless a definition must be fetched first).

        An engine may prepare the next batch while the previous one is being applied:
        planning reads only the experiment definitions, never what `apply` writes.
        Each batch of a partition's records must be prepared in consumption order.
        """
        by_partition = await _retrying(
            f"batch of {len(messages)} not planned yet", lambda: self._prepare_once(messages)
        )
        return PreparedBatch(len(messages), by_partition, self.positions.span(messages))

    async def apply(self, batch: PreparedBatch) -> list[Rewind]:
        """Apply a planned batch, retrying transient failures with capped backoff.

        Batches must be applied one after another, in consumption order. Returns the
        seeks the engine must make before reading on: empty unless Redis was found
        behind this consumer's position in some partition (a roll-back), in which case
        none of that partition's records were applied and they are to be read again.
        """
        return await _retrying(
            f"batch of {batch.size} not applied yet", lambda: self._apply_once(batch)
        )

    async def applied_offsets(
        self, partitions: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        """What Redis applied last per (topic, partition), waiting out a Redis outage."""
        return await _retrying(
            "applied offsets not read yet",
            lambda: read_partition_offsets(self._redis, self._settings.key_prefix, partitions),
        )

    async def find_rollbacks(self) -> list[Rewind]:
        """Seeks for the partitions whose Redis offsets fell behind what was applied.

        The sink finds a roll-back when the next batch of a partition arrives; this
        finds it in partitions that receive nothing (an engine calls it when idle).
        """
        known = self.positions.known_applied()
        stored = await self.applied_offsets(sorted(known))
        rewinds = []
        for (topic, partition), applied in sorted(known.items()):
            # None stored is behind too: Redis lost every offset of the partition.
            offset = stored.get((topic, partition), -1)
            if offset < applied:
                rewinds.append(Rewind(topic, partition, offset + 1, offset, applied - offset))
        warn_lost(rewinds)
        return rewinds

    @staticmethod
    def set_aside(batch: PreparedBatch) -> list[Rewind]:
        """A prepared batch that will not be applied: the seeks that read it again.

        The engine makes them, then hands them to `positions.reposition`.
        """
        return set_aside(batch.span)

    def _sync_due(self, missed: set[str]) -> bool:
        """Whether an id not found was not looked up lately (and mark them all looked up).

        A sync waits for the registry's consumer to reach the definitions topic's end;
        traffic naming an experiment that does not exist would otherwise pay that wait
        in every batch.
        """
        now = time.monotonic()
        due = any(
            now - self._synced_for.get(name, -REGISTRY_SYNC_SECONDS) >= REGISTRY_SYNC_SECONDS
            for name in missed
        )
        if due:
            if len(self._synced_for) > 10_000:
                self._synced_for = {
                    name: at
                    for name, at in self._synced_for.items()
                    if now - at < REGISTRY_SYNC_SECONDS
                }
            self._synced_for.update(dict.fromkeys(missed, now))
        return due

    async def _prepare_once(
        self, messages: Sequence[SourceMessage]
    ) -> dict[int, list[SinkCommand]]:
        plans = self._plan(messages)
        missed = {plan.missed_experiment for plan in plans if plan.missed_experiment is not None}
        if missed and self._sync_due(missed):
            # The definition may have been published a moment ago: catch up once, plan
            # again the messages that missed.
            await self._registry.sync()
            catalog = self._registry.definitions
            plans = [
                self._planners[message.topic](message, catalog, self._partitions)
                if plan.registry_miss
                else plan
                for message, plan in zip(messages, plans, strict=True)
            ]
        by_partition: dict[int, list[SinkCommand]] = defaultdict(list)
        for message, plan in zip(messages, plans, strict=True):
            by_partition[message.partition].append(plan.command)
        return dict(by_partition)

    async def _apply_once(self, batch: PreparedBatch) -> list[Rewind]:
        by_partition = batch.by_partition
        frozen = self._registry.frozen()
        rules = sink_rules(self._registry.definitions)
        # Keys of different partitions are independent, so their script calls run
        # concurrently: one partition's round trip and Lua run overlap the next one's
        # encoding here. Every call is awaited before the batch counts as applied.
        outcomes = await asyncio.gather(
            *(
                self._apply_partition(
                    partition, commands, frozen, rules, batch.span.expected(partition)
                )
                for partition, commands in by_partition.items()
            ),
            return_exceptions=True,
        )
        raise_first_failure(outcomes)
        batch_totals: Counter[str] = Counter()
        rewinds: list[Rewind] = []
        for partition, outcome in zip(by_partition, outcomes, strict=True):
            assert isinstance(outcome, dict)
            reply = cast(SinkReply, outcome)
            if "rollback" in reply:
                rewinds.extend(roll_back(batch.span, partition, reply["rollback"]))
                continue
            batch_totals.update(
                {
                    name: value
                    for name, value in reply.items()
                    if isinstance(value, int) and name != "outbox"
                }
            )
        self.positions.applied(batch.span, {rewind.partition for rewind in rewinds})
        warn_lost(rewinds)
        self.totals.update(batch_totals)
        metrics.observe_batch(by_partition, outcomes, metrics.attempt_seconds())
        notable = {
            name: value for name, value in batch_totals.items() if value and name != "applied"
        }
        if notable:
            log.info(
                "batch of %d: %s",
                batch.size,
                ", ".join(f"{k}={v}" for k, v in sorted(notable.items())),
            )
        return rewinds

    async def _apply_partition(
        self,
        partition: int,
        commands: list[SinkCommand],
        frozen: list[str],
        rules: dict[str, ExperimentRules],
        expected: dict[str, int],
    ) -> SinkReply:
        result = await self._sink.apply(partition, commands, frozen, expected, rules)
        if result.get("outbox"):
            await self._flush_outbox(partition)
        return result

    async def _flush_outbox(self, partition: int) -> int:
        async with self._outbox_locks[partition]:
            return await relay.flush(
                self._redis,
                self._producer,
                keys.outbox_key(self._settings.key_prefix, partition),
                self._settings.topic_dead_letter,
            )

    async def flush_outboxes(self) -> int:
        """Publish what is left in the outboxes of the partitions this consumer applied;
        returns how many entries.

        A batch flushes its partition's outbox, but a roll-back can lose the flush's
        trim while keeping the batch (a replica promoted without the primary's last
        writes): the entries, published already, would wait for the partition's next
        batch, which may never come. Engines call this when idle. At-least-once, as
        every flush: they are published again.
        """
        partitions = sorted({partition for _, partition in self.positions.known_applied()})

        async def flush_all() -> int:
            counts = await asyncio.gather(*(self._flush_outbox(p) for p in partitions))
            return sum(counts)

        return await _retrying("outboxes not flushed yet", flush_all)

    def _plan(self, messages: Sequence[SourceMessage]) -> list[Plan]:
        catalog = self._registry.definitions
        return [
            self._planners[message.topic](message, catalog, self._partitions)
            for message in messages
        ]


async def read_applied_offsets_when_up(
    settings: Settings, partitions: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """What Redis applied last per (topic, partition), on a connection of its own,
    waiting out a Redis outage (for an engine that positions before the runtime is up)."""

    async def attempt() -> dict[tuple[str, int], int]:
        async with connect(settings) as redis:
            return await read_partition_offsets(redis, settings.key_prefix, partitions)

    return await _retrying("applied offsets not read yet", attempt)


def raise_first_failure(outcomes: Sequence[object]) -> None:
    """Re-raise a fatal error before a transient one, so a retry never hides a bug.

    `outcomes` is what `asyncio.gather(..., return_exceptions=True)` returned: waiting
    for every partition before raising means a retry never overlaps a call still
    running from the failed attempt.
    """
    errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    fatal = [error for error in errors if not isinstance(error, TRANSIENT)]
    if errors:
        raise (fatal or errors)[0]
