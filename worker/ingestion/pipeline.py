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
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.exceptions
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.asyncio import Redis

from worker.config import Settings
from worker.events.experiment import ExperimentDefinition
from worker.ingestion import metrics, outage, outbox
from worker.ingestion.commands import Plan, SourceMessage, plan_assignment, plan_conversion
from worker.ingestion.registry import ExperimentRegistry
from worker.store import keys
from worker.store.batch_sink import BatchSink, SinkSettings

log = logging.getLogger(__name__)

TRANSIENT = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, KafkaError, OSError)
T = TypeVar("T")
Planner = Callable[[SourceMessage, dict[str, ExperimentDefinition], int], Plan]


@dataclass(frozen=True)
class PreparedBatch:
    """A planned batch: the sink commands of each partition, in offset order."""

    size: int
    by_partition: dict[int, list[dict[str, Any]]]


async def _retrying(size: int, attempt: Callable[[], Awaitable[T]]) -> T:
    """Run `attempt` until it succeeds, backing off (capped) after transient failures.

    While Redis or Kafka is unreachable, a warning names it and says since when, at
    once and then every 10 s (worker/ingestion/outage.py); each retry is counted.
    """
    return await outage.retry_transient(
        lambda: metrics.timed(attempt), TRANSIENT, f"batch of {size} not applied yet"
    )


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
            ),
        )
        self._planners: dict[str, Planner] = {
            settings.topic_assignments: plan_assignment,
            settings.topic_conversions: plan_conversion,
        }
        self.totals: Counter[str] = Counter()

    async def process(self, messages: Sequence[SourceMessage]) -> None:
        """Plan and apply a batch, retrying transient failures until it lands."""
        await self.apply(await self.prepare(messages))

    async def prepare(self, messages: Sequence[SourceMessage]) -> PreparedBatch:
        """Plan a batch (CPU only, unless a definition must be fetched first).

        An engine may prepare the next batch while the previous one is being applied:
        planning reads only the experiment definitions, never what `apply` writes.
        """
        return await _retrying(len(messages), lambda: self._prepare_once(messages))

    async def apply(self, batch: PreparedBatch) -> None:
        """Apply a planned batch, retrying transient failures with capped backoff.

        Batches must be applied one after another, in consumption order.
        """
        await _retrying(batch.size, lambda: self._apply_once(batch))

    async def _prepare_once(self, messages: Sequence[SourceMessage]) -> PreparedBatch:
        # Planning is pure CPU (JSON, pydantic, murmur2). On a worker thread it leaves
        # the event loop free, so a batch already handed to `apply` sends its script
        # call and Redis runs it while this one is planned (the GIL is released while
        # the loop waits on its sockets). It reads only the experiment definitions,
        # whose dict the loop replaces entry by entry.
        plans = self._plan(messages)
        if any(plan.registry_miss for plan in plans):
            # The definition may have been published a moment ago: catch up, plan again.
            await self._registry.sync()
            plans = self._plan(messages)
        by_partition: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for message, plan in zip(messages, plans, strict=True):
            by_partition[message.partition].append(plan.command)
        return PreparedBatch(len(messages), dict(by_partition))

    async def _apply_once(self, batch: PreparedBatch) -> None:
        by_partition = batch.by_partition
        frozen = self._registry.frozen()
        # Keys of different partitions are independent, so their script calls run
        # concurrently: one partition's round trip and Lua run overlap the next one's
        # encoding here. Every call is awaited before the batch counts as applied.
        outcomes = await asyncio.gather(
            *(
                self._apply_partition(partition, commands, frozen)
                for partition, commands in by_partition.items()
            ),
            return_exceptions=True,
        )
        raise_first_failure(outcomes)
        batch_totals: Counter[str] = Counter()
        for outcome in outcomes:
            assert isinstance(outcome, dict)
            batch_totals.update(
                {name: value for name, value in outcome.items() if name != "outbox"}
            )
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

    async def _apply_partition(
        self, partition: int, commands: list[dict[str, Any]], frozen: list[str]
    ) -> dict[str, int]:
        result = await self._sink.apply(partition, commands, frozen)
        if result["outbox"]:
            await outbox.flush(
                self._redis,
                self._producer,
                keys.outbox_key(self._settings.key_prefix, partition),
                self._settings.topic_dead_letter,
            )
        return result

    def _plan(self, messages: Sequence[SourceMessage]) -> list[Plan]:
        catalog = self._registry.definitions
        return [
            self._planners[message.topic](message, catalog, self._partitions)
            for message in messages
        ]


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
