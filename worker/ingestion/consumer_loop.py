"""The aiokafka ingestion engine: a plain `getmany` loop drives the same pipeline.

faust's per-event machinery bounded ingestion (issue #8); this engine hands the
pipeline whole `getmany` batches instead. The offset discipline is the one of
DESIGN.md section 4: a batch is applied by the pipeline (one atomic Lua call per
partition, filtering per message by offset), and only then are the next offsets
committed. Redis, not the committed offset, is the truth of what was applied, so a
commit lost to a crash or a rebalance only means a replay that changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterable, Mapping, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from worker.config import Settings
from worker.ingestion.commands import SourceMessage
from worker.ingestion.runtime import (
    PROGRESS_INTERVAL_SECONDS,
    Runtime,
    every,
    report_progress,
    snapshot_results,
)

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 200
"""How long `getmany` waits for records: also how quickly a stop request is seen."""

FETCH_BYTES_PER_PARTITION = 4 * 1024 * 1024
"""Larger fetches than aiokafka's 1 MiB default, so a full batch is usually buffered."""


def to_messages(
    batches: Mapping[TopicPartition, Sequence[ConsumerRecord]], owned: set[TopicPartition]
) -> list[SourceMessage]:
    """The records of the partitions this consumer still owns, as pipeline messages.

    Records of a partition revoked since `getmany` returned are left to its new owner,
    which starts from the committed offset; applying them here too would be harmless
    (Redis filters by offset) but is wasted work.
    """
    return [
        SourceMessage(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
        )
        for tp, records in batches.items()
        if tp in owned
        for record in records
    ]


def next_offsets(messages: Iterable[SourceMessage]) -> dict[TopicPartition, int]:
    """The offset to commit per topic-partition: one past the highest applied."""
    out: dict[TopicPartition, int] = {}
    for message in messages:
        tp = TopicPartition(message.topic, message.partition)
        out[tp] = max(out.get(tp, 0), message.offset + 1)
    return out


class ConsumerLoop:
    """Reads batches, applies them through the runtime's pipeline, commits after each."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        # Held while a batch is applied and committed: a revocation waits for it, so
        # the next owner of a partition starts after everything this one applied.
        self._in_flight = asyncio.Lock()
        self._uncommitted: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self.batches = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then commit what was applied and leave the group."""
        settings = self._settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=FETCH_BYTES_PER_PARTITION,
        )
        self._consumer = consumer
        consumer.subscribe(list(settings.input_topics), listener=_Listener(self))
        await consumer.start()
        log.info(
            "aiokafka engine consuming %s as group %s",
            settings.input_topics,
            settings.consumer_group,
        )
        try:
            while not stop.is_set():
                batches = await consumer.getmany(
                    timeout_ms=POLL_TIMEOUT_MS, max_records=settings.batch_size
                )
                if batches:
                    await self._apply(batches)
            async with self._in_flight:
                await self._commit()
        finally:
            # stop() leaves the group without calling on_partitions_revoked.
            await consumer.stop()
            log.info("aiokafka consumer closed after %d batches", self.batches)

    async def _apply(self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        consumer = self._consumer
        pipeline = self._runtime.pipeline
        assert consumer is not None and pipeline is not None
        async with self._in_flight:
            messages = to_messages(batches, consumer.assignment())
            if not messages:
                return
            # Retries transient failures itself; anything else propagates and ends the
            # process without committing, so the batch is consumed again, never skipped.
            await pipeline.process(messages)
            self.batches += 1
            self._uncommitted.update(next_offsets(messages))
            await self._commit()

    async def _commit(self) -> None:
        """Commit the applied offsets of owned partitions; a failed commit is only logged.

        Must be called with `_in_flight` held. A commit fails when the group is
        rebalancing; the offsets stay pending for the next commit, and if this consumer
        loses the partition its new owner replays from the older offset, which Redis
        turns into no-ops.
        """
        consumer = self._consumer
        assert consumer is not None
        owned = consumer.assignment()
        offsets = {tp: offset for tp, offset in self._uncommitted.items() if tp in owned}
        self._uncommitted = offsets
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as error:  # CommitFailedError while rebalancing, among others
            log.warning("offset commit deferred (%s); Redis keeps what was applied", error)
            return
        self._uncommitted = {}

    async def on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        """Wait for the batch in flight, then commit before the partitions move on."""
        async with self._in_flight:
            await self._commit()
        log.info("partitions revoked: %s", _describe(revoked))


class _Listener(ConsumerRebalanceListener):
    def __init__(self, loop: ConsumerLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._loop.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        # Positions come from the committed offsets (or the earliest); Redis skips
        # whatever of that range was applied already.
        log.info("partitions assigned: %s", _describe(assigned))


def _describe(partitions: Iterable[TopicPartition]) -> str:
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return "; ".join(f"{t} {sorted(p)}" for t, p in sorted(by_topic.items())) or "none"


async def serve(settings: Settings) -> None:
    """Run the engine with the snapshot and progress timers until SIGTERM or SIGINT.

    A fatal error in the consumer loop or a timer propagates (after the loop stopped
    and the connections closed), so the process exits non-zero and Kafka redelivers.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _request_stop, stop, signum)
    runtime = Runtime(settings)
    try:
        await runtime.start()
        consumer_loop = asyncio.create_task(ConsumerLoop(runtime).run(stop), name="consumer")
        timers = [
            asyncio.create_task(
                every(settings.results_interval_seconds, lambda: snapshot_results(runtime)),
                name="result-snapshots",
            ),
            asyncio.create_task(
                every(PROGRESS_INTERVAL_SECONDS, lambda: report_progress(runtime)),
                name="progress",
            ),
        ]
        tasks = [consumer_loop, *timers]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        # Whatever ended first (a stop request, or an error in any task), the consumer
        # loop finishes its batch and commits before the timers go.
        stop.set()
        await asyncio.wait([consumer_loop])
        for timer in timers:
            timer.cancel()
        await asyncio.wait(timers)
        errors = [t.exception() for t in tasks if not t.cancelled() and t.exception()]
        if errors:
            raise errors[0]  # type: ignore[misc]
        await report_progress(runtime)
    finally:
        await runtime.stop()
        log.info("aiokafka engine stopped: producer, registry and Redis closed")


def _request_stop(stop: asyncio.Event, signum: int) -> None:
    log.info(
        "%s received: finishing the batch in flight, committing, closing",
        signal.Signals(signum).name,
    )
    stop.set()


def run(settings: Settings) -> int:
    """Run the aiokafka engine in this process; returns the exit code."""
    try:
        asyncio.run(serve(settings))
    except Exception:
        log.exception("aiokafka engine failed")
        return 1
    return 0
