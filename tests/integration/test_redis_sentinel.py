"""A Sentinel-managed Redis (``REDIS_URL=redis+sentinel://...``): a primary, its replica
and one sentinel of the test's own, on free ports."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import redis

from tests.dataset import generate
from tests.integration.harness import (
    Namespace,
    WorkerProcesses,
    delete_topics,
    free_port,
    wait_until_applied,
)
from tests.integration.services import Endpoints
from tests.integration.test_ingestion import assert_results_exact, produce_dataset
from worker.config import Settings
from worker.services import redis_server
from worker.store import connection

pytestmark = pytest.mark.integration

SERVICE = "results"


@dataclass
class SentinelSet:
    primary: subprocess.Popen[bytes]
    replica: subprocess.Popen[bytes]
    sentinel: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        for process in (self.primary, self.replica, self.sentinel):
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)


def server(directory: Path, port: int, *args: str) -> subprocess.Popen[bytes]:
    directory.mkdir()
    log = (directory / "redis.log").open("ab")
    return subprocess.Popen(
        [redis_server.ensure_binary(), *args, "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(directory), "--appendonly", "no", "--save", ""],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def knows_a_replica(sentinel_port: int) -> bool:
    """The sentinel found the replica (from the primary's INFO, every 10 s at first), and
    the replica is in sync: only such a replica can be promoted."""
    with redis.Redis(port=sentinel_port, socket_timeout=2) as sentinel:
        replicas = sentinel.sentinel_slaves(SERVICE)
    return any(replica.get("master-link-status") == "ok" for replica in replicas)


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    primary_port, replica_port, sentinel_port = free_port(), free_port(), free_port()
    primary = server(tmp_path / "primary", primary_port)
    replica = server(
        tmp_path / "replica", replica_port, "--replicaof", "127.0.0.1", str(primary_port)
    )
    config = tmp_path / "sentinel.conf"  # Sentinel rewrites its own configuration
    config.write_text(
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
        f"sentinel failover-timeout {SERVICE} 5000\n"
    )
    sentinel = server(tmp_path / "sentinel", sentinel_port, str(config), "--sentinel")
    found = SentinelSet(
        primary, replica, sentinel, f"redis+sentinel://127.0.0.1:{sentinel_port}/{SERVICE}/0"
    )
    try:
        deadline = time.monotonic() + 20
        while not (connection.answers(found.url) and knows_a_replica(sentinel_port)):
            assert time.monotonic() < deadline, "the sentinel named no primary with a replica"
            time.sleep(0.2)
        yield found
    finally:
        found.stop()


@pytest.fixture
def sentinel_namespace(endpoints: Endpoints, sentinel_set: SentinelSet) -> Iterator[Namespace]:
    """Topics on the shared broker, keys in the test's own Redis (dropped with it)."""
    namespace = Namespace.create(
        Endpoints(endpoints.kafka, sentinel_set.url, "sentinel"), f"t{uuid.uuid4().hex[:10]}"
    )
    yield namespace
    delete_topics(namespace.settings.kafka_bootstrap_servers, namespace.name)


async def test_worker_and_readers_count_exactly_through_sentinel(
    sentinel_namespace: Namespace, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = sentinel_namespace.settings
    data = generate(seed=12, visitors=300, partitions=settings.partitions)
    workers = WorkerProcesses(sentinel_namespace, tmp_path_factory.mktemp("sentinel-worker"))
    try:
        await produce_dataset(sentinel_namespace, data)
        workers.start()
        async with connection.connect(settings) as redis:
            await wait_until_applied(settings, redis)
        await assert_results_exact(sentinel_namespace, data)
    finally:
        workers.stop_all()


async def test_after_a_failover_the_client_writes_to_the_promoted_replica(
    sentinel_set: SentinelSet,
) -> None:
    settings = replace(Settings.from_env(), redis_url=sentinel_set.url, redis_timeout_seconds=1)
    async with connection.connect(settings) as redis:
        await redis.set("before", 1)
        assert await redis.wait(1, 5000) == 1  # on the replica too: a failover keeps it
        sentinel_set.primary.send_signal(signal.SIGKILL)
        sentinel_set.primary.wait(timeout=10)
        deadline = time.monotonic() + 30
        while True:
            try:
                await redis.set("after", 2)
                break
            except connection.REDIS_UNAVAILABLE:
                assert time.monotonic() < deadline, "no replica was promoted in 30 s"
                await asyncio.sleep(0.2)
        assert (await redis.get("before"), await redis.get("after")) == (b"1", b"2")
        role = await redis.info("replication")
        assert role["role"] == "master"
