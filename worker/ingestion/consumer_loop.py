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
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from worker.config import Settings
from worker.ingestion.commands import SourceMessage
from worker.ingestion.pipeline import PreparedBatch
from worker.ingestion.positions import ROLLBACK_CHECK_SECONDS, Rewind, resume_at
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


LOOP_TURNS_TO_SEND = 8
"""Event-loop turns a new apply task gets before the next batch is planned.

Planning is CPU work that never yields, and getmany returns buffered records without
yielding either: without these turns the task would not even have sent its script
call before planning ended, and nothing would overlap. Starting the task, its
per-partition calls, the connection checkout and the socket write take about four
turns. Planning and applying 200k events in one process (records already read):
0 turns 31.6k events/s, 4 turns 40.2k, 8 turns 42.5k. Fewer turns only lose
overlap, never correctness.
"""


async def let_run(turns: int) -> None:
    """Yield to the event loop `turns` times, so that ready tasks make progress."""
    for _ in range(turns):
        await asyncio.sleep(0)


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
            timestamp_ms=record.timestamp,
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


def group_options(settings: Settings) -> dict[str, int]:
    """The consumer group's session timeout and heartbeat (a third of it, Kafka's rule of
    thumb), as aiokafka takes them."""
    session_ms = round(settings.kafka_session_timeout_seconds * 1000)
    return {"session_timeout_ms": session_ms, "heartbeat_interval_ms": session_ms // 3}


class ConsumerLoop:
    """Reads batches, applies them through the runtime's pipeline, commits after each.

    Two batches overlap: while one is applied in Redis (and its offsets committed),
    the next is read and planned here. Batches are still applied strictly one after
    another, in consumption order, so each partition's offsets reach the sink in order.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self._consumer: AIOKafkaConsumer | None = None
        # The batch being applied and committed; a revocation or a stop waits for it.
        self._in_flight: asyncio.Task[None] | None = None
        self._committing: asyncio.Task[None] | None = None
        self._commit_lock = asyncio.Lock()
        self._uncommitted: dict[TopicPartition, int] = {}
        # Seeks owed after Redis was found behind this consumer (a roll-back).
        self._rewinds: list[Rewind] = []
        self._rollbacks_checked = 0.0
        self.batches = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then commit what was applied and leave the group."""
        settings = self._settings
        pipeline = self._runtime.pipeline
        assert pipeline is not None
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=FETCH_BYTES_PER_PARTITION,
            # Range assignment gives a consumer the same partition numbers of both
            # (co-partitioned) input topics, so one process owns each visitor, as with
            # faust; aiokafka's default round-robin would split them.
            partition_assignment_strategy=(RangePartitionAssignor,),
            **group_options(settings),
        )
        self._consumer = consumer
        consumer.subscribe(list(settings.input_topics), listener=_Listener(self))
        await consumer.start()
        log.info(
            "consuming %s as group %s", ", ".join(settings.input_topics), settings.consumer_group
        )
        try:
            while not stop.is_set():
                batches = await consumer.getmany(
                    timeout_ms=POLL_TIMEOUT_MS, max_records=settings.batch_size
                )
                messages = to_messages(batches, consumer.assignment())
                if not messages:
                    await self.settle(commit=True)
                    await self._look_for_rollbacks()
                    self._seek_back([])
                    continue
                # Planned while the previous batch is still in Redis.
                prepared = await pipeline.prepare(messages)
                await self.settle(commit=False)
                if self._rewinds:
                    # Planned past a hole Redis lost: read it again from the hole on.
                    self._seek_back(pipeline.set_aside(prepared))
                    continue
                self._in_flight = asyncio.create_task(
                    self._apply(prepared, next_offsets(messages)), name="apply-batch"
                )
                await let_run(LOOP_TURNS_TO_SEND)
            await self.settle(commit=True)
        finally:
            # Only after an error: whatever was not committed is consumed again.
            for task in (self._in_flight, self._committing):
                if task is not None and not task.done():
                    task.cancel()
            # stop() leaves the group without calling on_partitions_revoked.
            await consumer.stop()
            log.info("consumer closed after %d batches", self.batches)

    async def settle(self, commit: bool) -> None:
        """Wait for the batch in flight; with `commit`, also commit all that is applied.

        A failed batch raises here: the caller stops without committing it, so it is
        consumed again, never skipped. Between batches the commit runs in the
        background (`commit=False`): it is not on the path of the next batch.
        """
        task = self._in_flight
        if task is not None:
            # A failed task stays in place, so that every later settle (the main loop's
            # after a revocation's) raises too and no later batch is applied past it.
            await task
            if self._in_flight is task:
                self._in_flight = None
        committing = self._committing
        if committing is not None and committing.done():
            self._committing = None
            committing.result()  # a bug in _commit surfaces here, not in a lost task
        if commit:
            if committing is not None:
                await committing
            await self._commit()

    async def _look_for_rollbacks(self) -> None:
        """While idle, at most every ROLLBACK_CHECK_SECONDS: has Redis lost what was
        applied, or the trim of a flushed outbox?"""
        pipeline = self._runtime.pipeline
        assert pipeline is not None
        now = asyncio.get_running_loop().time()
        if now - self._rollbacks_checked < ROLLBACK_CHECK_SECONDS:
            return
        self._rollbacks_checked = now
        self._rewinds.extend(await pipeline.find_rollbacks())
        await pipeline.flush_outboxes()

    def _seek_back(self, set_aside: list[Rewind]) -> None:
        """Seek to what must be read again: a batch set aside, then rolled-back partitions."""
        if not self._rewinds and not set_aside:
            return
        consumer = self._consumer
        pipeline = self._runtime.pipeline
        assert consumer is not None and pipeline is not None
        owned = consumer.assignment()
        rewinds = [*set_aside, *self._rewinds]  # a roll-back's seek is made last, so it wins
        self._rewinds = []
        for rewind in rewinds:
            tp = TopicPartition(rewind.topic, rewind.partition)
            if tp in owned:
                consumer.seek(tp, rewind.offset)
        pipeline.positions.reposition(rewinds)

    async def _apply(self, batch: PreparedBatch, offsets: dict[TopicPartition, int]) -> None:
        pipeline = self._runtime.pipeline
        assert pipeline is not None
        # Retries transient failures itself; anything else ends the process.
        rewinds = await pipeline.apply(batch)
        self.batches += 1
        for rewind in rewinds:
            # Not applied: nothing of that partition is committed from this batch.
            offsets.pop(TopicPartition(rewind.topic, rewind.partition), None)
        self._rewinds.extend(rewinds)
        for tp, offset in offsets.items():
            self._uncommitted[tp] = max(offset, self._uncommitted.get(tp, 0))
        # Commit after each applied batch, without waiting for it; while a commit is
        # under way, newer offsets wait for the next batch (or the final settle).
        if self._committing is None:
            self._committing = asyncio.create_task(self._commit(), name="commit")

    async def _commit(self) -> None:
        """Commit the applied offsets of owned partitions; a failed commit is only logged.

        A commit fails when the group is rebalancing; the offsets stay pending for the
        next commit, and if this consumer loses the partition its new owner replays
        from the older offset, which Redis turns into no-ops.
        """
        consumer = self._consumer
        assert consumer is not None
        async with self._commit_lock:
            owned = consumer.assignment()
            # A partition no longer owned is its new owner's to commit.
            self._uncommitted = {
                tp: offset for tp, offset in self._uncommitted.items() if tp in owned
            }
            offsets = dict(self._uncommitted)  # a copy: a batch may add offsets meanwhile
            if not offsets:
                return
            try:
                await consumer.commit(offsets)
            except KafkaError as error:  # CommitFailedError while rebalancing, among others
                log.warning("offset commit deferred (%s); Redis keeps what was applied", error)
                return
            for tp, offset in offsets.items():
                if self._uncommitted.get(tp) == offset:
                    del self._uncommitted[tp]

    async def on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        """Wait for the batch in flight, then commit before the partitions move on."""
        await self.settle(commit=True)
        pipeline = self._runtime.pipeline
        assert pipeline is not None
        pipeline.positions.forget((tp.topic, tp.partition) for tp in revoked)
        log.info("partitions revoked: %s", _describe(revoked))

    async def on_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        """Position each partition after what Redis applied (DESIGN.md section 4).

        Redis, not the committed offset, is the truth of what was applied: after a
        roll-back (a restored snapshot, a promoted replica, a power cut) it is behind,
        and the lost range is read again. The committed offset is used only where
        Redis has no offset for the partition.
        """
        consumer = self._consumer
        pipeline = self._runtime.pipeline
        assert consumer is not None and pipeline is not None
        partitions = sorted(assigned)
        # Seeks owed by partitions this consumer had are superseded by these.
        self._rewinds = []
        applied = await pipeline.applied_offsets(partitions)
        for tp in partitions:
            offset = applied.get(tp)
            pipeline.positions.sought(tp.topic, tp.partition, offset)
            if offset is None:
                continue  # Kafka's committed position stands
            start = resume_at(tp.topic, tp.partition, offset, await consumer.committed(tp))
            if start is not None:
                consumer.seek(tp, start)
        log.info("partitions assigned: %s", _describe(partitions))


class _Listener(ConsumerRebalanceListener):
    def __init__(self, loop: ConsumerLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._loop.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._loop.on_assigned(assigned)


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
        stopping = asyncio.create_task(stop.wait(), name="stop-request")
        await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        # Whatever ended first (a stop request, or an error in any task), the consumer
        # loop finishes its batch and commits before the timers go, within the grace
        # time: a loop waiting for an unreachable Redis is left unfinished, which loses
        # nothing (the next worker reads again from Redis's applied offsets).
        stop.set()
        await asyncio.wait([consumer_loop], timeout=settings.stop_grace_seconds)
        if not consumer_loop.done():
            log.warning(
                "the consumer loop did not finish within %g s of the stop request (Redis or "
                "Kafka unreachable?): leaving without it; what it did not apply or commit "
                "is read again by the next worker",
                settings.stop_grace_seconds,
            )
            consumer_loop.cancel()
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
