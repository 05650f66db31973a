"""The faust ingestion engine: consumes the input topics and drives the pipeline.

Faust is used so that its known offset bugs cannot lose or double data
(DESIGN.md section 4): one agent with concurrency 1 reads batches with
`noack_take`, the pipeline writes them to Redis, and only then are the events acked,
in offset order. Redis, not Kafka's committed offset, is the truth of what was
applied, so a redelivered batch changes nothing. The runtime and the timers are shared
with the aiokafka engine (worker/ingestion/runtime.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
import mode

from worker.config import Settings
from worker.ingestion.commands import SourceMessage
from worker.ingestion.runtime import (
    PROGRESS_INTERVAL_SECONDS,
    Runtime,
    report_progress,
    snapshot_results,
)


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
    async def snapshot_timer() -> None:
        await snapshot_results(runtime)

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


def run(settings: Settings, loglevel: str) -> int:
    """Run the faust engine until a signal stops it (faust handles SIGTERM and SIGINT)."""
    app, _ = create_app(settings)
    faust.Worker(app, loglevel=loglevel).execute_from_commandline()
    return 0
