"""The faust ingestion engine: consumes the input topics and drives the pipeline.

Faust is used so that its known offset bugs cannot lose or double data
(DESIGN.md section 4): one agent with concurrency 1 reads batches with
`noack_take`, the pipeline writes them to Redis, and only then are the events acked,
in offset order. Redis, not Kafka's committed offset, is the truth of what was
applied, so a redelivered batch changes nothing. The runtime and the timers are shared
with the aiokafka engine (worker/ingestion/runtime.py).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faust
import mode
from faust.transport.drivers.aiokafka import Consumer as FaustKafkaConsumer
from faust.types import TP

from worker.config import Settings
from worker.ingestion.commands import SourceMessage
from worker.ingestion.pipeline import read_applied_offsets_when_up
from worker.ingestion.positions import ROLLBACK_CHECK_SECONDS, Rewind, resume_at
from worker.ingestion.runtime import (
    PROGRESS_INTERVAL_SECONDS,
    Runtime,
    report_progress,
    snapshot_results,
)

log = logging.getLogger(__name__)


class RedisRolledBack(RuntimeError):
    """Redis holds less of a partition than this process applied: read it again."""


class AssignedPositions:
    """What the consumer was positioned after at the last assignment, for the agent.

    faust positions partitions during its rebalance, which may come before the
    runtime (and its pipeline) is ready; the agent hands them on before its next batch.
    """

    def __init__(self) -> None:
        self._fresh: dict[tuple[str, int], int | None] | None = None

    def assigned(self, applied: dict[tuple[str, int], int | None]) -> None:
        self._fresh = applied

    def take(self) -> dict[tuple[str, int], int | None] | None:
        fresh, self._fresh = self._fresh, None
        return fresh


def redis_positioned(settings: Settings, positions: AssignedPositions) -> type[FaustKafkaConsumer]:
    """faust's consumer, positioned after what Redis applied at every assignment.

    faust seeks every assigned partition to its committed offset once the rebalance
    is done (`perform_seek`); this moves each partition Redis has an offset for to
    that offset + 1 instead, and reports it as the committed position, so that faust's
    own bookkeeping starts there too (DESIGN.md section 4). The committed offset is
    used only where Redis has none.
    """

    class RedisPositionedConsumer(FaustKafkaConsumer):
        async def seek_to_committed(self) -> Mapping[TP, int]:
            committed = dict(await super().seek_to_committed())
            partitions = sorted((tp.topic, tp.partition) for tp in self.assignment())
            applied = await read_applied_offsets_when_up(settings, partitions)
            for topic, partition in partitions:
                tp = TP(topic, partition)
                start = resume_at(topic, partition, applied.get(tp), committed.get(tp))
                if start is not None:
                    await self._seek(tp, start)
                    committed[tp] = start
            positions.assigned({key: applied.get(key) for key in partitions})
            return committed

    return RedisPositionedConsumer


def faust_broker_url(bootstrap: str) -> str:
    """faust wants `kafka://h1:p1;kafka://h2:p2` where Kafka clients take `h1:p1,h2:p2`."""
    return ";".join(
        f"kafka://{server.strip()}" for server in bootstrap.split(",") if server.strip()
    )


def faust_data_dir(services_dir: Path, group: str) -> Path:
    """Where faust may create its (unused) table directory: not the working directory."""
    parent = services_dir / "faust"
    parent.mkdir(parents=True, exist_ok=True)
    return parent / group


def create_app(settings: Settings) -> tuple[faust.App, Runtime]:
    """The faust app with its one ingestion agent."""
    app = faust.App(
        settings.consumer_group,
        broker=faust_broker_url(settings.kafka_bootstrap_servers),
        store="memory://",
        # faust creates its data directory even with the memory store; keep it out of
        # the working directory.
        datadir=str(faust_data_dir(settings.services_dir, settings.consumer_group)),
        web_enabled=False,
        processing_guarantee="at_least_once",
        topic_partitions=settings.partitions,
        topic_disable_leader=True,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        # faust's own default (60 s) kept a SIGKILLed worker's partitions for a minute.
        broker_session_timeout=settings.kafka_session_timeout_seconds,
        broker_heartbeat_interval=settings.kafka_session_timeout_seconds / 3,
        autodiscover=False,
    )
    runtime = Runtime(settings)
    positions = AssignedPositions()
    # The transport makes the consumer on first use, after this.
    app.transport.Consumer = redis_positioned(settings, positions)  # type: ignore[misc]
    topic = app.topic(*settings.input_topics, key_type=bytes, value_type=bytes)

    @app.task
    async def start_runtime() -> None:
        await runtime.start()

    @app.on_before_shutdown.connect
    async def stop_runtime(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await runtime.stop()

    @app.timer(interval=settings.results_interval_seconds)
    async def snapshot_timer() -> None:
        await snapshot_results(runtime)

    @app.timer(interval=ROLLBACK_CHECK_SECONDS)
    async def rollback_timer() -> None:
        # Partitions that receive records find a roll-back with their next batch; this
        # finds it in the others, and publishes what a lost trim left in an outbox.
        if runtime.pipeline is None:
            return
        rewinds = await runtime.pipeline.find_rollbacks()
        if rewinds:
            RESTART.append(True)
            await app.crash(RedisRolledBack(_describe(rewinds)))
            return
        await runtime.pipeline.flush_outboxes()

    @app.timer(interval=PROGRESS_INTERVAL_SECONDS)
    async def progress_timer() -> None:
        await report_progress(runtime)

    @app.agent(topic, concurrency=1, supervisor_strategy=mode.CrashingSupervisor)
    async def ingest(stream: faust.StreamT) -> None:
        # noack_take exists on faust's Stream but not on its StreamT interface.
        batches = stream.noack_take(  # type: ignore[attr-defined]
            settings.batch_size, within=settings.batch_within_seconds
        )
        async for events in batches:
            await runtime.ready.wait()
            assert runtime.pipeline is not None
            fresh = positions.take()
            if fresh is not None:
                for (name, partition), offset in fresh.items():
                    runtime.pipeline.positions.sought(name, partition, offset)
            rewinds = await runtime.pipeline.process(
                [
                    SourceMessage(
                        topic=event.message.topic,
                        partition=event.message.partition,
                        offset=event.message.offset,
                        key=event.message.key,
                        value=event.message.value,
                        timestamp_ms=_milliseconds(event.message.timestamp),
                    )
                    for event in events
                ]
            )
            if rewinds:
                # faust's fetcher cannot be moved back mid-stream (records it already
                # buffered would advance its read offset past the re-read ones), so the
                # process starts again, nothing acked, and seeks from Redis's offsets.
                RESTART.append(True)
                raise RedisRolledBack(_describe(rewinds))
            for event in events:
                event.ack()

    return app, runtime


RESTART: list[bool] = []
"""Set by the agent when Redis rolled back: the process runs itself again."""


def _describe(rewinds: list[Rewind]) -> str:
    lost = ", ".join(f"{r.topic}[{r.partition}] by {r.lost}" for r in rewinds if r.lost)
    return f"Redis is behind what this worker applied in {lost}"


def _milliseconds(seconds: float | None) -> int | None:
    """faust gives record timestamps in seconds (float); Kafka's are whole milliseconds."""
    return None if seconds is None else round(seconds * 1000)


def run(settings: Settings, loglevel: str) -> int:
    """Run the faust engine until a signal stops it (faust handles SIGTERM and SIGINT).

    After a Redis roll-back the worker has stopped cleanly (leaving the group); the
    same command then replaces this process, which positions itself from Redis.
    """
    app, _ = create_app(settings)
    try:
        faust.Worker(app, loglevel=loglevel).execute_from_commandline()
    except SystemExit:
        if not RESTART:
            raise
        log.warning("restarting the faust engine to read again what Redis lost")
        os.execv(sys.executable, [sys.executable, "-m", "worker", *sys.argv[1:]])
    return 0
