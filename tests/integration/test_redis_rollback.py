"""Redis restored from an older snapshot: the worker reads the lost range again.

A Redis of this test's own (no AOF, RDB only), so that it can be killed and restored
without touching the shared one. The worker keeps running throughout, as it would
through a failover or a restore in production.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from tests.dataset import generate
from tests.integration.harness import (
    ENGINES,
    Namespace,
    WorkerProcesses,
    delete_keys,
    end_offsets,
    free_port,
    produce,
    wait_until_applied,
)
from tests.integration.services import Endpoints
from tests.integration.test_ingestion import assert_results_exact
from worker.config import Settings
from worker.services import redis_server
from worker.store import connection

pytestmark = pytest.mark.integration


@dataclass
class SnapshotRedis:
    """redis-server with RDB snapshots only (SAVE on request), on a free port."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [redis_server.ensure_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--appendonly", "no", "--save", ""],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while not connection.answers(self.url):
            assert time.monotonic() < deadline, "the test's redis-server did not start"
            time.sleep(0.1)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


async def wait_until_committed(settings: Settings, timeout: float = 30) -> None:
    """Until the worker's group has committed every input partition to its end offset
    (the engines commit on their own schedules: faust every few seconds)."""
    ends = {tp: end for tp, end in (await end_offsets(settings, settings.input_topics)).items()}
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            committed = await admin.list_consumer_group_offsets(settings.consumer_group)
            behind = {
                tp: end
                for tp, end in ends.items()
                if end and (tp not in committed or committed[tp].offset < end)
            }
            if not behind:
                return
            assert time.monotonic() < deadline, f"not committed in {timeout:.0f} s: {behind}"
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


@pytest.fixture
def snapshot_redis(tmp_path: Path) -> Iterator[SnapshotRedis]:
    server = SnapshotRedis(tmp_path, free_port())
    server.start()
    yield server
    server.kill()


@pytest.mark.parametrize(
    ("engine", "restarted"),
    [*((engine, False) for engine in ENGINES), ("aiokafka", True)],
    ids=[*(f"{engine}-running" for engine in ENGINES), "aiokafka-restarted"],
)
async def test_redis_restored_from_an_older_snapshot_is_exact(
    endpoints: Endpoints,
    snapshot_redis: SnapshotRedis,
    tmp_path_factory: pytest.TempPathFactory,
    engine: str,
    restarted: bool,
) -> None:
    """Issue 13.1: RDB saved halfway, more applied and committed, Redis killed and
    restored from the save. The worker keeps running through it (it finds the roll-back
    itself), or is restarted after it (it seeks from Redis's offsets on assignment)."""
    private = Endpoints(endpoints.kafka, snapshot_redis.url, "test's own redis")
    namespace = Namespace.create(private, f"t{uuid.uuid4().hex[:10]}")
    settings = namespace.settings
    data = generate(seed=71, visitors=1500, partitions=settings.partitions)
    topics = {"assignments": settings.topic_assignments, "conversions": settings.topic_conversions}
    messages = [(topics[kind], key, value) for kind, key, value in data.messages]
    stamps = data.publish_times(int(time.time() * 1000))
    half = len(messages) // 2
    workers = WorkerProcesses(namespace, tmp_path_factory.mktemp("rollback-worker"), engine)
    try:
        await produce(settings, [
            (settings.topic_experiments, d["id"].encode(), json.dumps(d).encode())
            for d in data.definitions
        ])  # fmt: skip
        await produce(settings, messages[:half], timestamps=stamps[:half])
        workers.start()
        async with Redis.from_url(snapshot_redis.url) as redis:
            await wait_until_applied(settings, redis)
            await redis.save()
        saved = snapshot_redis.directory / "snapshot.rdb"
        shutil.copy(snapshot_redis.directory / "dump.rdb", saved)

        await produce(settings, messages[half:], timestamps=stamps[half:])
        async with Redis.from_url(snapshot_redis.url) as redis:
            await wait_until_applied(settings, redis)
        await wait_until_committed(settings)  # the offsets past the snapshot

        if restarted:
            workers.stop_all()
        snapshot_redis.kill()
        shutil.copy(saved, snapshot_redis.directory / "dump.rdb")
        snapshot_redis.start()
        if restarted:
            workers.start()
        async with Redis.from_url(snapshot_redis.url) as redis:
            await wait_until_applied(settings, redis, timeout=180)
        await assert_results_exact(namespace, data)
        assert "Redis rolled back" in workers.all_logs()
    finally:
        workers.stop_all()
        delete_keys(snapshot_redis.url, settings.key_prefix)
