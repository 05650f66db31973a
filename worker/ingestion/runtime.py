"""What every ingestion engine runs besides its consumer: connections, registry, timers.

Both engines (faust in worker/ingestion/app.py, plain aiokafka in
worker/ingestion/consumer_loop.py) start one `Runtime` and call the same two
periodic jobs, so the result snapshots and the progress log behave the same
whichever engine consumes the input topics. The runtime also serves the worker's
Prometheus metrics (AB_WORKER_METRICS_PORT, worker/ingestion/metrics.py) and runs the
monitor that probes Redis and Kafka, warns while either is unreachable and sets the
gauges (worker/ingestion/monitor.py, worker/ingestion/outage.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from worker.config import Settings
from worker.ingestion import metrics, outage
from worker.ingestion.metrics import MetricsServer
from worker.ingestion.monitor import Monitor
from worker.ingestion.outage import TRANSIENT
from worker.ingestion.pipeline import Pipeline
from worker.ingestion.registry import ExperimentRegistry
from worker.ingestion.topics import ensure_topics
from worker.producer import new_producer
from worker.results.snapshot_job import SnapshotJob, utc_now
from worker.store.connection import Redis, connect
from worker.store.meta import record_partition_count

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_SECONDS = 60.0
REMIND_INTERVAL_SECONDS = 1.0
"""How often ongoing outages are checked for their next warning (due every 10 s)."""


@dataclass
class Runtime:
    """The connections and services ingestion needs, created once the engine starts."""

    settings: Settings
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    pipeline: Pipeline | None = None
    redis: Redis | None = None
    producer: AIOKafkaProducer | None = None
    registry: ExperimentRegistry | None = None
    snapshot_job: SnapshotJob | None = None
    metrics_server: MetricsServer = field(default_factory=MetricsServer)
    monitor: Monitor | None = None
    _background: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        """Read the partition count, connect, load the definitions; then `ready` is set.

        Metrics are served and the monitor runs from here on, before the connections
        below, so a worker that waits for a service at start-up says so too.
        """
        settings = self.settings
        outage.configure(
            settings.redis_url, settings.kafka_bootstrap_servers, settings.outage_warn_seconds
        )
        self.metrics_server.start(settings.worker_metrics_port)
        partitions = await ensure_topics(settings)  # already created; this reads the count
        self.monitor = Monitor(settings, partitions)
        self._background = [
            asyncio.create_task(self.monitor.run(), name="monitor"),
            asyncio.create_task(
                every(REMIND_INTERVAL_SECONDS, _remind_outages), name="outage-warnings"
            ),
        ]
        self.redis = connect(settings)
        await record_partition_count(self.redis, settings.key_prefix, partitions)
        self.producer = new_producer(settings.kafka_bootstrap_servers)
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
        self.snapshot_job = SnapshotJob(
            settings, self.redis, self.producer, metrics.SNAPSHOT_COMPUTE_SECONDS.observe
        )
        self.ready.set()
        log.info(
            "ingestion ready: %d partitions, batches of up to %d", partitions, settings.batch_size
        )

    async def stop(self) -> None:
        """Close the registry consumer, the producer (flushing it) and Redis."""
        for task in self._background:
            task.cancel()
        if self._background:
            await asyncio.wait(self._background)
        if self.monitor is not None:
            await self.monitor.close()
        self.metrics_server.stop()
        if self.registry is not None:
            await self.registry.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.redis is not None:
            await self.redis.aclose()


async def snapshot_results(runtime: Runtime) -> None:
    """One results interval: snapshots and decisions of every defined experiment."""
    if runtime.snapshot_job is None or runtime.registry is None:
        return
    try:
        await runtime.snapshot_job.run_once(list(runtime.registry.definitions.values()), utc_now())
    except TRANSIENT as error:
        # The next interval tries again; ingestion is not affected.
        log.warning("result snapshots skipped this interval: %s", error)
        outage.tracker_for(error).failed(error, "result snapshots skipped")


async def _remind_outages() -> None:
    outage.remind_all()


async def report_progress(runtime: Runtime) -> None:
    """Log the pipeline's running totals (applied, duplicates, dead letters, ...)."""
    if runtime.pipeline is not None and runtime.pipeline.totals:
        totals = runtime.pipeline.totals
        log.info("ingested so far: %s", ", ".join(f"{k}={v}" for k, v in sorted(totals.items())))


async def every(interval: float, job: Callable[[], Awaitable[None]]) -> None:
    """Run `job` every `interval` seconds, first after one interval (as faust's timers do).

    An exception other than the transient ones `job` handles itself ends the loop, so
    the engine that awaits this task sees it and stops the process.
    """
    loop = asyncio.get_running_loop()
    next_run = loop.time() + interval
    while True:
        await asyncio.sleep(max(0.0, next_run - loop.time()))
        await job()
        # A slow run is not followed by a burst of catch-up runs.
        next_run = max(next_run + interval, loop.time())
