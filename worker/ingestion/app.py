"""The faust worker: consumes the input topics and drives the pipeline.

Faust is used so that its known offset bugs cannot lose or double data
(DESIGN.md section 4): one agent with concurrency 1 reads batches with
`noack_take`, the pipeline writes them to Redis, and only then are the events acked,
in offset order. Redis, not Kafka's committed offset, is the truth of what was
applied, so a redelivered batch changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import mode
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from worker.config import Settings
from worker.ingestion.commands import SourceMessage
from worker.ingestion.pipeline import TRANSIENT, Pipeline
from worker.ingestion.registry import ExperimentRegistry
from worker.ingestion.topics import ensure_topics
from worker.results.snapshot_job import SnapshotJob, utc_now
from worker.store import keys

log = logging.getLogger(__name__)


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


@dataclass
class Runtime:
    """The connections and services the agent needs, created once the app starts."""

    settings: Settings
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    pipeline: Pipeline | None = None
    redis: Redis | None = None
    producer: AIOKafkaProducer | None = None
    registry: ExperimentRegistry | None = None
    snapshot_job: SnapshotJob | None = None

    async def start(self) -> None:
        settings = self.settings
        partitions = await ensure_topics(settings)  # already created; this reads the count
        self.redis = Redis.from_url(settings.redis_url)
        await self.redis.hset(keys.meta_key(settings.key_prefix), "partitions", partitions)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True
        )
        await self.producer.start()
        self.registry = ExperimentRegistry(
            settings.kafka_bootstrap_servers,
            settings.topic_experiments,
            self.redis,
            settings.key_prefix,
            self.producer,
            settings.topic_dead_letter,
        )
        await self.registry.start()
        self.pipeline = Pipeline(settings, self.redis, self.producer, self.registry, partitions)
        self.snapshot_job = SnapshotJob(settings, self.redis, self.producer)
        self.ready.set()
        log.info(
            "ingestion ready: %d partitions, batches of up to %d", partitions, settings.batch_size
        )

    async def stop(self) -> None:
        if self.registry is not None:
            await self.registry.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.redis is not None:
            await self.redis.aclose()


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
        autodiscover=False,
    )
    runtime = Runtime(settings)
    topic = app.topic(*settings.input_topics, key_type=bytes, value_type=bytes)

    @app.task
    async def start_runtime() -> None:
        await runtime.start()

    @app.on_before_shutdown.connect
    async def stop_runtime(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await runtime.stop()

    @app.timer(interval=settings.results_interval_seconds)
    async def snapshot_results() -> None:
        if runtime.snapshot_job is None or runtime.registry is None:
            return
        try:
            await runtime.snapshot_job.run_once(
                list(runtime.registry.definitions.values()), utc_now()
            )
        except TRANSIENT as error:
            # The next interval tries again; ingestion is not affected.
            log.warning("result snapshots skipped this interval: %s", error)

    @app.timer(interval=60.0)
    async def report_progress() -> None:
        if runtime.pipeline is not None and runtime.pipeline.totals:
            totals = runtime.pipeline.totals
            log.info(
                "ingested so far: %s", ", ".join(f"{k}={v}" for k, v in sorted(totals.items()))
            )

    @app.agent(topic, concurrency=1, supervisor_strategy=mode.CrashingSupervisor)
    async def ingest(stream: faust.StreamT) -> None:
        # noack_take exists on faust's Stream but not on its StreamT interface.
        batches = stream.noack_take(  # type: ignore[attr-defined]
            settings.batch_size, within=settings.batch_within_seconds
        )
        async for events in batches:
            await runtime.ready.wait()
            assert runtime.pipeline is not None
            await runtime.pipeline.process(
                [
                    SourceMessage(
                        topic=event.message.topic,
                        partition=event.message.partition,
                        offset=event.message.offset,
                        key=event.message.key,
                        value=event.message.value,
                    )
                    for event in events
                ]
            )
            for event in events:
                event.ack()

    return app, runtime
