"""One batch of input messages -> one atomic sink call per partition -> outbox flushed.

This is the consumer-agnostic core: the faust agent (worker/ingestion/app.py) hands it
a batch and acks the batch's events only after `process` returned. A batch that
fails on a transient error is retried whole, which is safe because the sink skips
offsets it applied before.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import redis.exceptions
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.asyncio import Redis

from worker.config import Settings
from worker.events.experiment import ExperimentDefinition
from worker.ingestion import outbox
from worker.ingestion.commands import Plan, SourceMessage, plan_assignment, plan_conversion
from worker.ingestion.registry import ExperimentRegistry
from worker.store import keys
from worker.store.batch_sink import BatchSink, SinkSettings

log = logging.getLogger(__name__)

TRANSIENT = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, KafkaError, OSError)
Planner = Callable[[SourceMessage, dict[str, ExperimentDefinition], int], Plan]


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
        """Apply a batch, retrying transient failures with capped backoff until it lands."""
        delay = 0.1
        while True:
            try:
                await self._process_once(messages)
                return
            except TRANSIENT as error:
                log.warning(
                    "batch of %d not applied yet (%s); retrying in %.1f s",
                    len(messages),
                    error,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _process_once(self, messages: Sequence[SourceMessage]) -> None:
        plans = self._plan(messages)
        if any(plan.registry_miss for plan in plans):
            # The definition may have been published a moment ago: catch up, plan again.
            await self._registry.sync()
            plans = self._plan(messages)
        by_partition: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for message, plan in zip(messages, plans, strict=True):
            by_partition[message.partition].append(plan.command)
        frozen = self._registry.frozen()
        batch_totals: Counter[str] = Counter()
        for partition, commands in by_partition.items():
            result = await self._sink.apply(partition, commands, frozen)
            batch_totals.update({name: value for name, value in result.items() if name != "outbox"})
            if result["outbox"]:
                await outbox.flush(
                    self._redis,
                    self._producer,
                    keys.outbox_key(self._settings.key_prefix, partition),
                    self._settings.topic_dead_letter,
                )
        self.totals.update(batch_totals)
        notable = {
            name: value for name, value in batch_totals.items() if value and name != "applied"
        }
        if notable:
            log.info(
                "batch of %d: %s",
                len(messages),
                ", ".join(f"{k}={v}" for k, v in sorted(notable.items())),
            )

    def _plan(self, messages: Sequence[SourceMessage]) -> list[Plan]:
        catalog = self._registry.definitions
        return [
            self._planners[message.topic](message, catalog, self._partitions)
            for message in messages
        ]
