"""Issue 13: a real worker serves its Prometheus metrics, and says when Redis is gone."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from tests.dataset import experiment_definitions
from tests.integration.harness import (
    ENGINES,
    Namespace,
    WorkerProcesses,
    free_port,
    produce,
    wait_until_applied,
)
from worker.ingestion import outage
from worker.ingestion.monitor import Monitor

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(port: int) -> Samples:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    response.raise_for_status()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def lag_samples(samples: Samples) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["topic"], dict(labels)["partition"]): v
        for (name, labels), v in samples.items()
        if name == "ab_worker_consumer_lag"
    }


async def scrape_until(port: int, done: Callable[[Samples], bool], timeout: float = 60) -> Samples:
    deadline = time.monotonic() + timeout
    last: Samples = {}
    while time.monotonic() < deadline:
        try:
            last = await scrape(port)
        except httpx.HTTPError:
            last = {}
        if last and done(last):
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"metrics never got there; last scrape: {sorted(last.items())[:60]}")


def traffic(namespace: Namespace) -> tuple[list[tuple[str, bytes | None, bytes | None]], int]:
    """A live and a broken experiment, 30 assignments, 12 conversions and 4 poison messages."""
    settings = namespace.settings
    definition = experiment_definitions()[0]  # exp-a, live
    start = datetime.now(UTC) - timedelta(hours=1)
    messages: list[tuple[str, bytes | None, bytes | None]] = [
        (settings.topic_experiments, b"exp-a", json.dumps(definition).encode()),
        (settings.topic_experiments, b"broken", b'{"id": "broken"}'),
    ]
    for n in range(30):
        assignment = {
            "event_id": f"a{n}",
            "experiment_id": "exp-a",
            "variant_id": str(n % 2),
            "visitor_id": f"v{n}",
            "timestamp": (start + timedelta(seconds=n)).isoformat(),
        }
        messages.append(
            (settings.topic_assignments, f"v{n}".encode(), json.dumps(assignment).encode())
        )
    for n in range(12):
        conversion = {
            "event_id": f"c{n}",
            "visitor_id": f"v{n}",
            "goal": "purchase",
            "value": 10.0,
            "timestamp": (start + timedelta(minutes=5, seconds=n)).isoformat(),
        }
        messages.append(
            (settings.topic_conversions, f"v{n}".encode(), json.dumps(conversion).encode())
        )
    unknown = {
        "event_id": "x1", "experiment_id": "exp-nope", "variant_id": "0",
        "visitor_id": "v1", "timestamp": start.isoformat(),
    }  # fmt: skip
    messages += [
        (settings.topic_assignments, b"v2", b"{not json"),
        (settings.topic_conversions, b"v3", b"\xff\xfe binary"),
        (settings.topic_assignments, b"v4", json.dumps({"visitor_id": "bad id!"}).encode()),
        (settings.topic_assignments, b"v1", json.dumps(unknown).encode()),
    ]
    return messages, 30 + 12


@pytest.mark.parametrize("workers", ENGINES, indirect=True)
async def test_worker_serves_prometheus_metrics(
    namespace: Namespace, workers: WorkerProcesses, redis: Redis
) -> None:
    port = free_port()
    messages, valid = traffic(namespace)
    await produce(namespace.settings, messages)
    process = workers.start(AB_WORKER_METRICS_PORT=str(port))
    await wait_until_applied(namespace.settings, redis)
    partitions = namespace.settings.partitions
    input_topics = namespace.settings.input_topics

    def settled(samples: Samples) -> bool:
        lags = lag_samples(samples)
        return (
            value(samples, "ab_worker_events_total", outcome="applied") == valid
            and len(lags) == 2 * partitions
            and all(lag == 0 for lag in lags.values())
        )

    try:
        samples = await scrape_until(port, settled)
    except AssertionError:
        print(workers.log_of(process)[-5000:])
        raise
    assert value(samples, "ab_worker_events_total", outcome="dead_lettered") == 4
    assert value(samples, "ab_worker_events_total", outcome="duplicate") == 0
    assert value(samples, "ab_worker_dead_letters_total", reason="malformed_json") == 2
    assert value(samples, "ab_worker_dead_letters_total", reason="schema_violation") == 1
    assert value(samples, "ab_worker_dead_letters_total", reason="unknown_experiment") == 1
    assert value(samples, "ab_worker_dead_letters_total", reason="no_assignment") == 0
    assert value(samples, "ab_worker_dead_letters_total", reason="invalid_definition") == 1
    assert {topic for topic, _ in lag_samples(samples)} == set(input_topics)
    assert value(samples, "ab_worker_held_conversions") == 0
    assert value(samples, "ab_worker_dependency_up", service="redis") == 1
    assert value(samples, "ab_worker_dependency_up", service="kafka") == 1
    assert (value(samples, "ab_worker_batch_apply_seconds_count") or 0) >= 1
    assert value(samples, "ab_worker_retries_total", service="redis") == 0
    outbox = [v for (name, _), v in samples.items() if name == "ab_worker_outbox_depth"]
    assert len(outbox) == partitions and sum(outbox) == 0

    # Lag is Kafka's end minus what Redis applied: new messages show until applied.
    await produce(
        namespace.settings,
        [(namespace.settings.topic_assignments, b"v0", b"{late poison")] * 3,
    )
    samples = await scrape_until(
        port,
        lambda s: (
            value(s, "ab_worker_dead_letters_total", reason="malformed_json") == 5
            and all(lag == 0 for lag in lag_samples(s).values())
        ),
    )
    assert value(samples, "ab_worker_events_total", outcome="applied") == valid


class Proxy:
    """A TCP proxy in front of Redis that can be taken away and brought back."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def down(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        self._writers -= {writer, upstream_writer}


WARN_EVERY_SECONDS = 2
"""The worker's warning interval here (AB_OUTAGE_WARN_SECONDS; 10 s by default, whose
cadence tests/unit/test_worker_observability.py checks on a fake clock): three warnings
take seconds, not the default's 20-25."""
STOP_GRACE_SECONDS = 2
"""The worker's stop grace here (AB_STOP_GRACE_SECONDS; 10 s by default)."""
STOP_WITHOUT_REDIS_SECONDS = STOP_GRACE_SECONDS + 5


async def test_worker_warns_while_redis_is_unreachable(
    namespace: Namespace, workers: WorkerProcesses, redis: Redis
) -> None:
    target = urlsplit(namespace.settings.redis_url)
    assert target.hostname and target.port
    proxy = Proxy(target.hostname, target.port)
    await proxy.up()
    proxied = target._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
    messages, _ = traffic(namespace)
    await produce(namespace.settings, messages)
    process = workers.start(
        REDIS_URL=proxied,
        AB_OUTAGE_WARN_SECONDS=str(WARN_EVERY_SECONDS),
        AB_STOP_GRACE_SECONDS=str(STOP_GRACE_SECONDS),
    )
    await wait_until_applied(namespace.settings, redis)

    await proxy.down()
    down_at = time.monotonic()
    waiting = f"waiting for Redis at {proxied} since "
    deadline = down_at + 60
    while time.monotonic() < deadline and workers.log_of(process).count(waiting) < 3:
        await asyncio.sleep(0.5)
    seconds = time.monotonic() - down_at
    log = workers.log_of(process)
    # At once (within a probe interval, 5 s), then every WARN_EVERY_SECONDS: 3 warnings
    # within 5 + 2 * 2 s, and 10 s to spare for a loaded machine.
    assert log.count(waiting) >= 3, log[-4000:]
    assert seconds < 5 + 2 * WARN_EVERY_SECONDS + 10, seconds
    assert process.poll() is None  # waiting, not crashed

    await proxy.up()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "answers again" not in workers.log_of(process):
        await asyncio.sleep(0.5)
    assert f"Redis at {proxied} answers again" in workers.log_of(process)

    # Stopped while its consumer loop waits for an unreachable Redis, the worker leaves
    # after its stop grace: whatever it did not apply or commit is read again by the
    # next one (Redis keeps the positions). The stop waits until the idle loop's own
    # Redis calls (its roll-back check and outbox flush, at most ROLLBACK_CHECK_SECONDS
    # apart) are seen failing: a loop stopped inside Kafka's poll finishes at once,
    # needing no Redis.
    seen = len(workers.log_of(process))
    await proxy.down()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _loop_waits(workers.log_of(process)[seen:], waiting):
        await asyncio.sleep(0.2)
    assert _loop_waits(workers.log_of(process)[seen:], waiting), workers.log_of(process)[-3000:]
    stopping = time.monotonic()
    workers.stop(process, timeout=60)
    assert time.monotonic() - stopping < STOP_WITHOUT_REDIS_SECONDS, workers.log_of(process)[-3000:]
    assert process.returncode == 0, workers.log_of(process)[-3000:]
    assert f"did not finish within {STOP_GRACE_SECONDS} s of the stop request" in (
        workers.log_of(process)
    )


IDLE_LOOP_WAITS = ("applied offsets not read yet", "outboxes not flushed yet")
"""What an idle consumer loop's warning says it waits for (`Pipeline.find_rollbacks`,
`Pipeline.flush_outboxes`); the monitor's and the snapshot timer's say otherwise."""


def _loop_waits(log: str, waiting: str) -> bool:
    """Whether a warning in `log` says the idle consumer loop waits for Redis."""
    return any(
        waiting in line and any(call in line for call in IDLE_LOOP_WAITS)
        for line in log.splitlines()
    )


async def test_monitor_warns_while_kafka_is_unreachable_and_aiokafka_logs_too(
    namespace: Namespace, caplog: pytest.LogCaptureFixture
) -> None:
    # An idle consumer loop sees no error while the broker is down; the monitor's probe
    # does, and aiokafka's own connection errors reach the log as well.
    bootstrap = f"127.0.0.1:{free_port()}"
    settings = replace(namespace.settings, kafka_bootstrap_servers=bootstrap)
    outage.configure(settings.redis_url, bootstrap)
    caplog.set_level(logging.INFO)
    monitor = Monitor(settings, settings.partitions)
    try:
        await monitor.check()
    finally:
        await monitor.close()
        was_down = outage.KAFKA.down
        outage.KAFKA.recovered()
    assert was_down
    warnings = [r.getMessage() for r in caplog.records if r.name == outage.__name__]
    assert any(m.startswith(f"waiting for Kafka at {bootstrap} since ") for m in warnings), warnings
    library = [r for r in caplog.records if r.name.startswith("aiokafka")]
    assert any(r.levelno >= logging.ERROR for r in library), [r.getMessage() for r in library]
    assert REGISTRY.get_sample_value("ab_worker_dependency_up", {"service": "kafka"}) == 0
    assert REGISTRY.get_sample_value("ab_worker_dependency_up", {"service": "redis"}) == 1
