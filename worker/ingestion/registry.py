"""The experiment definitions, read from the compacted `ab.experiments` topic.

Every worker reads the whole topic (no consumer group) and keeps the latest
definition of each experiment in memory; it also writes them to Redis, where the
CLI and the read API find them. `sync()` waits until everything published before
the call has been read, so an event naming an experiment defined a moment earlier
is never dead-lettered as unknown. An update that would change how a live experiment
counts (a goal's type or cap, stats.cuped_days) is dead-lettered `immutable_while_live`
and the old definition kept. A Redis or Kafka outage stalls the follower (with
warnings, worker/ingestion/outage.py) rather than ending it; if it ends anyway, `sync`
raises instead of waiting for ever.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from worker.events.dead_letter import Reason, dead_letter_payload, source_message
from worker.events.experiment import ExperimentDefinition, ExperimentStatus
from worker.ingestion import metrics, outage
from worker.ingestion.outage import TRANSIENT
from worker.store.connection import Redis
from worker.store.definitions import (
    claim_invalid_definition,
    delete_definition,
    load_accepted_definition,
    release_invalid_definition,
    save_definition,
)

log = logging.getLogger(__name__)


class ExperimentRegistry:
    """In-memory definitions kept current by a background consumer task."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        redis: Redis,
        prefix: str,
        producer: AIOKafkaProducer,
        dead_letter_topic: str,
    ) -> None:
        self._bootstrap = bootstrap
        self._producer = producer
        self._dead_letter_topic = dead_letter_topic
        self._topic = topic
        self._redis = redis
        self._prefix = prefix
        self._definitions: dict[str, ExperimentDefinition] = {}
        self._consumer: AIOKafkaConsumer | None = None
        # End offsets are asked on a connection of their own: on the follower's, the
        # request waits behind its long-polling fetch (fetch_max_wait_ms, 500 ms), which
        # made every sync take about 450 ms.
        self._ends_client: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Condition()
        self._positions: dict[TopicPartition, int] = {}

    @property
    def definitions(self) -> dict[str, ExperimentDefinition]:
        return self._definitions

    def frozen(self) -> list[str]:
        """Completed experiments: their counts no longer change."""
        return [
            experiment.id
            for experiment in self._definitions.values()
            if experiment.status is ExperimentStatus.COMPLETED
        ]

    async def start(self) -> None:
        """Read the topic from the beginning up to its current end, then keep following."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        self._ends_client = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, enable_auto_commit=False, group_id=None
        )
        await self._ends_client.start()
        # The producer's partitions_for waits for metadata; the consumer's only reads a cache.
        partitions = await self._producer.partitions_for(self._topic)
        self._partitions = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        consumer.assign(self._partitions)
        await consumer.seek_to_beginning(*self._partitions)
        self._consumer = consumer
        self._task = asyncio.create_task(self._follow(), name="experiment-registry")
        await self.sync()
        log.info("experiment registry ready: %d definitions", len(self._definitions))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._ends_client is not None:
            await self._ends_client.stop()

    async def sync(self) -> None:
        """Return once every definition published before this call has been read."""
        assert self._ends_client is not None
        ends = await self._ends_client.end_offsets(self._partitions)
        async with self._progress:
            await self._progress.wait_for(
                lambda: (
                    self._stopped() or all(self._position(tp) >= end for tp, end in ends.items())
                )
            )
        task = self._task
        if task is not None and task.done() and not task.cancelled() and task.exception():
            raise RuntimeError("the experiment registry stopped following") from task.exception()

    def _stopped(self) -> bool:
        return self._task is not None and self._task.done()

    def _position(self, tp: TopicPartition) -> int:
        return self._positions.get(tp, 0)

    async def _follow(self) -> None:
        try:
            while True:
                await self._follow_once()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the experiment registry stopped following %s", self._topic)
            raise
        finally:
            # Wake every sync(): it raises now rather than waiting for ever.
            async with self._progress:
                self._progress.notify_all()

    async def _follow_once(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        batches = await outage.retry_transient(
            lambda: consumer.getmany(timeout_ms=200),
            TRANSIENT,
            f"experiment definitions of {self._topic} not read",
        )
        for tp, records in batches.items():
            for record in records:
                # Retried until stored: the consumer has moved past these records.
                await outage.retry_transient(
                    partial(self._apply, record.key, record.value, tp.partition, record.offset),
                    TRANSIENT,
                    f"experiment definition {tp.topic}[{tp.partition}]@{record.offset} not stored",
                )
                self._positions[tp] = record.offset + 1
        for tp in self._partitions:
            # position() also moves past compacted-away and transaction-marker offsets.
            position: int = await outage.retry_transient(
                partial(consumer.position, tp),
                TRANSIENT,
                f"position in {tp.topic}[{tp.partition}] not known",
            )
            self._positions[tp] = max(self._position(tp), position)
        async with self._progress:
            self._progress.notify_all()

    async def _apply(
        self, key: bytes | None, value: bytes | None, partition: int, offset: int
    ) -> None:
        if value is None:
            if key:
                self._definitions.pop(key.decode(), None)
                await delete_definition(self._redis, self._prefix, key.decode())
            return
        try:
            definition = ExperimentDefinition.model_validate_json(value)
        except ValidationError as error:
            await self._dead_letter(
                key, value, partition, offset, Reason.INVALID_DEFINITION, str(error)[:1000]
            )
            return
        unfixed = definition.unfixed_caps()
        if unfixed:
            detail = (
                f"experiment {definition.id!r} is live with goal(s) {', '.join(unfixed)} "
                "capped by cap_percentile but no cap: publish it with `python -m worker "
                "experiments apply`, which fixes the cap at launch, or set cap"
            )
            await self._dead_letter(
                key, value, partition, offset, Reason.INVALID_DEFINITION, detail
            )
            return
        previous = self._definitions.get(definition.id) or await self._accepted_before(
            definition.id, offset
        )
        if previous is not None and previous.status is not ExperimentStatus.DRAFT:
            changes = previous.counting_rule_changes(definition)
            if changes:
                self._definitions[previous.id] = previous
                detail = (
                    f"experiment {previous.id!r} is live: {', '.join(changes)} would count "
                    "its visitors by two rules (create a new experiment instead)"
                )
                await self._dead_letter(
                    key, value, partition, offset, Reason.IMMUTABLE_WHILE_LIVE, detail
                )
                return
        self._definitions[definition.id] = definition
        await save_definition(self._redis, self._prefix, definition, offset)

    async def _accepted_before(
        self, experiment_id: str, offset: int
    ) -> ExperimentDefinition | None:
        """The definition accepted last, from Redis, if it was read before ``offset``.

        After a restart the compacted topic may no longer hold the accepted definition,
        only a later update that was refused: Redis still has it. A record at or below
        the stored offset is history being read again, not an update of what is stored.
        (One key is one partition of the topic, so offsets of one id compare.)
        """
        stored = await load_accepted_definition(self._redis, self._prefix, experiment_id)
        if stored is None:
            return None
        definition, stored_offset = stored
        return definition if stored_offset is None or stored_offset < offset else None

    async def _dead_letter(
        self,
        key: bytes | None,
        value: bytes,
        partition: int,
        offset: int,
        reason: Reason,
        detail: str,
    ) -> None:
        # Every worker reads the whole topic at every start: report each bad record once.
        if not await claim_invalid_definition(self._redis, self._prefix, partition, offset):
            return
        log.warning(
            "experiment definition at %s/%d@%d refused (%s): %s",
            self._topic,
            partition,
            offset,
            reason.value,
            detail,
        )
        message = source_message(self._topic, partition, offset, key, value)
        payload = dead_letter_payload(reason, detail, message)
        try:
            await self._producer.send_and_wait(self._dead_letter_topic, value=payload, key=key)
        except BaseException:
            # Not sent: release the claim, so that the retry (or another worker) sends it.
            await release_invalid_definition(self._redis, self._prefix, partition, offset)
            raise
        metrics.DEAD_LETTERS.labels(reason.value).inc()
