"""Driving the real system from tests: namespaces, worker processes, produce, wait, read."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis
import redis.cluster
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient

from worker.config import MIN_SESSION_TIMEOUT_SECONDS, Settings, namespace_env
from worker.ingestion.topics import ensure_topics
from worker.producer import new_producer
from worker.results.contract import ResultDocument, Snapshot
from worker.services import cluster
from worker.store import connection, keys
from worker.store.connection import Redis
from worker.store.snapshots import save_snapshot


@dataclass(frozen=True)
class Namespace:
    """One test's own topics, consumer group and key prefix on the shared services."""

    name: str
    settings: Settings
    env: dict[str, str]

    @classmethod
    def create(
        cls, endpoints: Any, name: str, partitions: int = 12, timestamp_type: str = "CreateTime"
    ) -> Namespace:
        env = namespace_env(name) | {
            "KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka,
            "REDIS_URL": endpoints.redis,
            "AB_CONSUMER_GROUP": f"{name}-worker",
            "AB_PARTITIONS": str(partitions),
            "AB_WORKER_METRICS_PORT": "0",  # several workers at once: no port each
            # Tests publish with record timestamps of their own (a publish clock they
            # control, as the conversion hold runs in publish time); a test of the
            # default LogAppendTime passes it here.
            "AB_INPUT_TIMESTAMP_TYPE": timestamp_type,
        }
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            settings = Settings.from_env()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        return cls(name, settings, env)

    def with_env(self, **overrides: str) -> Namespace:
        return replace(self, env={**self.env, **overrides})


ENGINES = ["faust", "aiokafka"]
"""For `@pytest.mark.parametrize("workers", ENGINES, indirect=True)`: the core
exactly-once tests run on both ingestion engines, the others on the configured one
(AB_INGESTION_ENGINE, else the default), which keeps the suite's time in bounds."""


SHORT_SESSION = {"AB_KAFKA_SESSION_TIMEOUT_SECONDS": f"{MIN_SESSION_TIMEOUT_SECONDS:g}"}
"""For the workers of a test that SIGKILLs one: the group gives a dead worker's
partitions to the next one after the brokers' shortest session (6 s), not the default
10 s; what the test checks (exact counts after the kill) does not depend on how long."""


class WorkerProcesses:
    """`python -m worker run` subprocesses of one test; all stopped at teardown.

    `engine` picks the ingestion engine (`--engine`); None leaves it to the
    environment (AB_INGESTION_ENGINE, else the default).
    """

    def __init__(self, namespace: Namespace, log_dir: Path, engine: str | None = None) -> None:
        self._namespace = namespace
        self._log_dir = log_dir
        self._processes: list[subprocess.Popen[bytes]] = []
        self.engine = engine

    def start(self, **extra_env: str) -> subprocess.Popen[bytes]:
        index = len(self._processes)
        log = (self._log_dir / f"worker-{index}.log").open("wb")
        engine = ["--engine", self.engine] if self.engine else []
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "run", "--loglevel", "info", *engine],
            env={**os.environ, **self._namespace.env, **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._processes.append(process)
        return process

    def log_of(self, process: subprocess.Popen[bytes]) -> str:
        index = self._processes.index(process)
        return (self._log_dir / f"worker-{index}.log").read_text(errors="replace")

    def all_logs(self) -> str:
        """What every worker of this test has logged so far."""
        return "".join(self.log_of(process) for process in self._processes)

    @staticmethod
    def kill(process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    @staticmethod
    def stop(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self._processes:
            self.stop(process, timeout=30)


Message = tuple[str, bytes | None, bytes | None]  # (topic, key, value)


async def produce(
    settings: Settings,
    messages: Iterable[Message],
    partitions: dict[int, int] | None = None,
    timestamps: Sequence[int] | None = None,
    create_topics: bool = True,
) -> None:
    """Send messages in order with Kafka's default partitioner (murmur2 of the key).

    `timestamps` (ms, one per message) are the records' timestamps: their publish time
    on CreateTime topics (the broker replaces them on LogAppendTime topics). Without
    `create_topics` the topics must exist: creating them asks one broker picked at
    random, which fails while that broker is down and not yet fenced.
    """
    messages = list(messages)
    stamps = list(timestamps) if timestamps is not None else [None] * len(messages)
    assert len(stamps) == len(messages)
    if create_topics:
        await ensure_topics(settings)
    producer = new_producer(settings.kafka_bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=value, key=key, timestamp_ms=stamp)
            for (topic, key, value), stamp in zip(messages, stamps, strict=True)
        ]
        await producer.flush()
        for future in futures:
            await future
    finally:
        await producer.stop()


async def produce_to_partition(
    settings: Settings, topic: str, partition: int, key: bytes | None, value: bytes
) -> None:
    """Send one message to a chosen partition, bypassing the partitioner."""
    producer = new_producer(settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=value, key=key, partition=partition)
    finally:
        await producer.stop()


async def end_offsets(settings: Settings, topics: Sequence[str]) -> dict[TopicPartition, int]:
    """The end offset of every partition of `topics`.

    The partitions come from a client's metadata request, which tries the brokers one
    after another; an admin client's goes to one broker picked at random and fails when
    that one is down. A partition whose leader died waits for its new leader.
    """
    client = AIOKafkaClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await client.bootstrap()
    try:
        metadata = await client.fetch_all_metadata()
    finally:
        await client.close()
    partitions = [
        TopicPartition(topic, partition)
        for topic in topics
        for partition in sorted(metadata.partitions_for_topic(topic) or ())
    ]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def applied_fraction(
    settings: Settings, redis: Redis, ends: Mapping[TopicPartition, int] | None = None
) -> float:
    """Share of the input messages the sink has applied (by Redis offsets), of `ends`
    when given (end offsets read before), else of the input topics' end offsets now."""
    if ends is None:
        ends = await end_offsets(settings, settings.input_topics)
    total = sum(ends.values())
    done = 0
    for tp, end in ends.items():
        raw = await redis.hget(keys.offsets_key(settings.key_prefix, tp.partition), tp.topic)
        done += min(end, int(raw) + 1) if raw is not None else 0
    return done / total if total else 1.0


async def wait_mid_stream(
    settings: Settings,
    redis: Redis,
    produced: Mapping[TopicPartition, int],
    share: float = 0.2,
) -> float:
    """Until more than ``share`` of what was `produced` (end offsets) is applied; fails if
    the worker applied it all first. Polled every 20 ms, on Redis alone: the worker
    applies a fifth of a data set in well under a second (a poll that also read the end
    offsets, a Kafka client each time, could miss the whole stream)."""
    fraction = 0.0
    for _ in range(3000):
        fraction = await applied_fraction(settings, redis, produced)
        if fraction > share:
            break
        await asyncio.sleep(0.02)
    assert fraction < 1, f"not caught mid-stream ({fraction:.1%} applied)"
    return fraction


async def wait_until_applied(settings: Settings, redis: Redis, timeout: float = 120) -> None:
    """Until every input message (forwards included) is applied and every outbox is empty."""
    deadline = time.monotonic() + timeout
    settled = 0
    while time.monotonic() < deadline:
        ends = await end_offsets(settings, settings.input_topics)
        pending = 0
        for tp, end in ends.items():
            if end == 0:
                continue
            raw = await redis.hget(keys.offsets_key(settings.key_prefix, tp.partition), tp.topic)
            if raw is None or int(raw) < end - 1:
                pending += 1
        for partition in {tp.partition for tp in ends}:
            pending += await redis.llen(keys.outbox_key(settings.key_prefix, partition))
        settled = settled + 1 if pending == 0 else 0
        if settled >= 2:  # twice in a row: a forward may have produced a new message
            return
        # A forward is acknowledged by Kafka before its outbox entry is dropped, so the
        # second look, which reads the end offsets again, sees it whatever the pause.
        await asyncio.sleep(0.25)
    fraction = await applied_fraction(settings, redis)
    raise AssertionError(
        f"worker did not apply every message within {timeout:.0f} s ({fraction:.1%} applied)"
    )


async def apply_with_one_worker(namespace: Namespace, log_dir: Path) -> None:
    """One worker on the namespace until it applied everything produced so far."""
    workers = WorkerProcesses(namespace, log_dir)
    workers.start()
    async with connection.connect(namespace.settings) as redis:
        try:
            await wait_until_applied(namespace.settings, redis)
        finally:
            workers.stop_all()


async def read_topic(settings: Settings, topic: str) -> list[tuple[bytes | None, dict[str, Any]]]:
    """Every message of a topic, from the beginning to its current end, JSON-decoded."""
    ends = await end_offsets(settings, [topic])
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    out: list[tuple[bytes | None, dict[str, Any]]] = []
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        remaining = {tp for tp, end in ends.items() if end > 0}
        while remaining:
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, records in batches.items():
                out.extend((record.key, orjson.loads(record.value)) for record in records)
                if records and records[-1].offset >= ends[tp] - 1:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return out


async def store_as_snapshot(redis: Redis, prefix: str, document: ResultDocument) -> None:
    """Store ``document`` as the worker stores a result snapshot of it."""
    snapshot = Snapshot(
        document=document,
        applied_offsets={},
        computed_at=datetime.now(UTC),
        interval_index=0,
        computed_by="test",
    )
    await save_snapshot(redis, prefix, document.experiment_id, snapshot.model_dump(mode="json"))


def delete_topics(bootstrap: str, name: str) -> None:
    """Every topic of the namespace ``name`` (they all start with ``name.``): a broker
    keeps files open for each partition, and a long day of runs on one broker reached
    its open-file limit (20,000 partitions) and stopped it."""

    async def delete() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            topics = [topic for topic in await admin.list_topics() if topic.startswith(f"{name}.")]
            if topics:
                await admin.delete_topics(topics)
        finally:
            await admin.close()

    asyncio.run(delete())


def delete_keys(redis_url: str, prefix: str) -> None:
    """Every key of the namespace `prefix` (they all start with `prefix:`); on a Redis
    Cluster, those of every primary (the cluster client splits UNLINK by slot)."""
    client = (
        redis.cluster.RedisCluster.from_url(redis_url)
        if connection.is_cluster(redis_url)
        else redis.Redis.from_url(redis_url)
    )
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=5000):
            batch.append(key)
            if len(batch) == 5000:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def api_server(env: Mapping[str, str], log_path: Path) -> Iterator[str]:
    """``python -m worker api`` as its own process with ``env`` on top of ours; yields
    its base URL once /healthz answers, and fails the test if the server logged a
    traceback."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "api", "--port", str(port), "--log-level", "warning"],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the API server did not answer in 30 s"
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        assert "Traceback" not in log_path.read_text(), log_path.read_text()


@dataclass(frozen=True)
class RunningCluster:
    """The cluster topology of this test session (`services up --cluster`)."""

    env: dict[str, str]
    """The test process's environment, less any Kafka or Redis it names."""
    layout: cluster.ClusterLayout
    up_output: str


def cluster_services(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m worker services ... --cluster`."""
    return subprocess.run(
        [sys.executable, "-m", "worker", "services", *args, "--cluster"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
