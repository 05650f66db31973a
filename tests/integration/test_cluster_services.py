"""The cluster topology (`services up --cluster`): three brokers and a Redis Cluster.

Marked `cluster`: it uses the session's cluster topology (conftest.py's
`cluster_topology`: three JVMs and six Redis servers on ports of their own), and its
last test stops it (marked `stops_cluster`, so it runs after every other test).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from redis import Redis

from tests.integration.harness import RunningCluster
from tests.integration.harness import cluster_services as services
from worker.config import Settings, namespace_env
from worker.ingestion.topics import ensure_topics
from worker.services import kafka_server, processes

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


@pytest.fixture
def running(cluster_topology: RunningCluster) -> RunningCluster:
    return cluster_topology


def exported(output: str) -> dict[str, str]:
    pairs = (
        line.strip().removeprefix("export ").split("=", 1)
        for line in output.splitlines()
        if line.strip().startswith("export ")
    )
    return {name: value for name, value in pairs}


def test_up_prints_the_environment_of_the_cluster(running: RunningCluster) -> None:
    assert exported(running.up_output) == {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:29092,127.0.0.1:29094,127.0.0.1:29096",
        "REDIS_URL": "redis://127.0.0.1:26379/0",
        "AB_REPLICATION_FACTOR": "3",
        "AB_REDIS_CLUSTER": "1",
    }


async def test_kafka_metadata_lists_three_brokers(running: RunningCluster) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=running.layout.bootstrap)
    await admin.start()
    try:
        described = await admin.describe_cluster()
    finally:
        await admin.close()
    assert sorted((b["host"], b["port"]) for b in described["brokers"]) == [
        ("127.0.0.1", 29092),
        ("127.0.0.1", 29094),
        ("127.0.0.1", 29096),
    ]


def test_every_redis_node_reports_cluster_state_ok(running: RunningCluster) -> None:
    roles = []
    for node in running.layout.redis:
        with Redis(host=node.host, port=node.port) as client:
            info = client.execute_command("CLUSTER INFO")  # parsed into a dict by redis-py
            assert (info["cluster_state"], info["cluster_known_nodes"]) == ("ok", "6"), info
            roles.append(client.info("replication")["role"])
    assert sorted(roles) == ["master"] * 3 + ["slave"] * 3


def test_status_shows_each_node_and_its_role(running: RunningCluster) -> None:
    result = services(running.env, "status")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    kafka = [line for line in lines if line.startswith("kafka")]
    redis = [line for line in lines if line.startswith("redis")]
    assert len(kafka) == 3 and len(redis) == 6, result.stdout
    assert all(line.endswith(" answering") for line in kafka + redis), result.stdout
    assert all("broker+controller" in line for line in kafka)
    assert sum("primary, slots" in line for line in redis) == 3
    assert sum("replica of 127.0.0.1:" in line for line in redis) == 3


async def test_topics_on_the_cluster_are_replicated_and_counted_at_once(
    running: RunningCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broker asked right after the controller created a topic may not know its
    # partitions yet: ensure_topics must still return the real count, never zero.
    for name, value in (
        running.layout.environment() | namespace_env(f"c{uuid.uuid4().hex[:8]}")
    ).items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert await ensure_topics(settings) == settings.partitions
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    # Any broker may answer these, and one that has not caught up with the controller
    # yet knows no partitions or configs of the topic: ask again, a bounded number of times.
    try:
        for _ in range(50):
            described = await admin.describe_topics([settings.topic_assignments])
            configs = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, settings.topic_assignments)]
            )
            resource: Any = configs[0].resources[0]
            if described[0]["partitions"] and resource[0] == 0:
                break
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    assert [len(p["replicas"]) for p in described[0]["partitions"]] == [3] * settings.partitions
    assert resource[0] == 0, resource
    entries = {entry[0]: entry[1] for entry in resource[4]}
    assert entries["min.insync.replicas"] == "2"


def alive(pid: int) -> bool:
    """The process runs: it exists and is not a zombie (one that init has yet to reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.mark.stops_cluster
def test_down_stops_exactly_what_up_started(running: RunningCluster) -> None:
    layout = running.layout
    pid_files = [n.pid_file for n in layout.kafka] + [n.pid_file for n in layout.redis]
    pids = [processes.read_pid(pid_file) for pid_file in pid_files]
    assert all(pid is not None for pid in pids)
    result = services(running.env, "down")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": stopped") == 9, result.stdout
    assert not any(alive(pid) for pid in pids if pid is not None)
    assert not any(kafka_server.answers(node.bootstrap) for node in running.layout.kafka)
    assert not any(pid_file.exists() for pid_file in pid_files)
