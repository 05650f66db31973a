"""The conversion hold runs in publish time, end to end through a real worker (both engines)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from redis.asyncio import Redis

from tests.integration.harness import (
    ENGINES,
    Namespace,
    WorkerProcesses,
    delete_keys,
    produce,
    read_topic,
    wait_until_applied,
)
from tests.integration.services import Endpoints
from worker.cli.results_command import collect
from worker.ingestion.partitioning import partition_for
from worker.results.query import ResultQuery

pytestmark = pytest.mark.integration

DEFINITION = {
    "id": "hold-exp",
    "project_key": "shop",
    "name": "Hold",
    "status": "live",
    "variants": [
        {"id": "a", "name": "A", "is_control": True, "traffic_weight": 0.5},
        {"id": "b", "name": "B", "traffic_weight": 0.5},
    ],
    "goals": [{"key": "buy", "name": "Buy", "primary": True}],
}
TEN = datetime(2026, 11, 20, 10, tzinfo=UTC)


def assignment(visitor: str, variant: str, at: datetime) -> dict[str, Any]:
    return {
        "event_id": f"a-{visitor}-{at.timestamp()}", "experiment_id": "hold-exp",
        "variant_id": variant, "visitor_id": visitor, "timestamp": at.isoformat(),
    }  # fmt: skip


def conversion(visitor: str, at: datetime) -> dict[str, Any]:
    return {
        "event_id": f"c-{visitor}-{at.timestamp()}", "visitor_id": visitor, "goal": "buy",
        "timestamp": at.isoformat(),
    }  # fmt: skip


def one_per_partition(prefix: str, partitions: int) -> list[str]:
    """Visitor ids, one in each partition."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < partitions:
        found.setdefault(partition_for(f"{prefix}{n}", partitions), f"{prefix}{n}")
        n += 1
    return [found[p] for p in range(partitions)]


def same_partition(visitor: str, prefix: str, partitions: int) -> str:
    target = partition_for(visitor, partitions)
    return next(
        f"{prefix}{n}" for n in range(10_000) if partition_for(f"{prefix}{n}", partitions) == target
    )


@pytest.fixture
def default_namespace(endpoints: Endpoints) -> Iterator[Namespace]:
    """A namespace whose input topics the worker creates as in production (LogAppendTime)."""
    namespace = Namespace.create(
        endpoints, f"t{uuid.uuid4().hex[:10]}", partitions=3, timestamp_type=""
    )
    yield namespace
    delete_keys(namespace.settings.redis_url, namespace.settings.key_prefix)


async def variant_rows(namespace: Namespace) -> list[tuple[str, int, int]]:
    result = await collect(namespace.settings, "hold-exp", ResultQuery(goal="buy"))
    return [(row.variant_id, row.visitors, row.conversions) for row in result.variants]


@pytest.mark.parametrize("engine", ENGINES)
async def test_conversion_read_first_survives_another_visitors_later_assignment(
    default_namespace: Namespace, engine: str, tmp_path: Path
) -> None:
    """Issue 13.2's reproduction, each record applied before the next is published:
    a conversion of A at 10:00, an assignment of B at 12:00, A's assignment at 09:50."""
    namespace = default_namespace
    settings = namespace.settings
    a = "visitor-a"
    b = same_partition(a, "visitor-b", settings.partitions)
    topics = {"a": settings.topic_assignments, "c": settings.topic_conversions}
    await produce(
        settings, [(settings.topic_experiments, b"hold-exp", json.dumps(DEFINITION).encode())]
    )
    workers = WorkerProcesses(namespace, tmp_path, engine)
    workers.start()
    steps = [
        ("c", a, conversion(a, TEN)),
        ("a", b, assignment(b, "a", TEN + timedelta(hours=2))),
        ("a", a, assignment(a, "b", TEN - timedelta(minutes=10))),
        # a producer bug: two days ahead of its publish time
        ("a", "visitor-z", assignment("visitor-z", "a", datetime.now(UTC) + timedelta(days=2))),
    ]
    try:
        async with Redis.from_url(settings.redis_url) as redis:
            for kind, visitor, event in steps:
                await produce(
                    settings, [(topics[kind], visitor.encode(), json.dumps(event).encode())]
                )
                await wait_until_applied(settings, redis)
        assert await variant_rows(namespace) == [("a", 1, 0), ("b", 1, 1)]
        dead = await read_topic(settings, settings.topic_dead_letter)
        assert [record["reason"] for _, record in dead] == ["timestamp_out_of_range"]
    finally:
        workers.stop_all()

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in settings.input_topics]
        )
    finally:
        await admin.close()
    types = [
        value
        for response in described
        for resource in response.resources
        for name, value, *_ in resource[4]
        if name == "message.timestamp.type"
    ]
    assert types == ["LogAppendTime", "LogAppendTime"]


async def test_assignments_published_minutes_after_their_conversions_count(
    namespace: Namespace, workers: WorkerProcesses, redis: Redis
) -> None:
    """Producers' own record timestamps (CreateTime): assignments 5 minutes late, then
    traffic 50 minutes on; under the default one-hour hold every conversion counts, and
    a conversion whose visitor is never assigned is dead-lettered once the assignments
    are read two hours on."""
    settings = namespace.settings
    topics = {"a": settings.topic_assignments, "c": settings.topic_conversions}
    now_ms = int(time.time() * 1000)
    minute = 60_000
    messages, stamps = [], []

    def add(kind: str, event: dict[str, Any], published_ms: int) -> None:
        messages.append((topics[kind], event["visitor_id"].encode(), json.dumps(event).encode()))
        stamps.append(published_ms)

    visitors = [f"late-{n}" for n in range(30)]
    for n, visitor in enumerate(visitors):
        add("c", conversion(visitor, TEN + timedelta(minutes=1)), now_ms + n)
    add("c", conversion("never-assigned", TEN), now_ms + 40)
    for n, visitor in enumerate(visitors):
        add("a", assignment(visitor, "ab"[n % 2], TEN), now_ms + 5 * minute + n)
    for n, visitor in enumerate(one_per_partition("clock-", settings.partitions)):
        add("a", assignment(visitor, "a", TEN), now_ms + 50 * minute + n)
    await produce(
        settings, [(settings.topic_experiments, b"hold-exp", json.dumps(DEFINITION).encode())]
    )
    await produce(settings, messages, timestamps=stamps)
    workers.start()
    await wait_until_applied(settings, redis)
    # 30 visitors alternating a/b, each converted once; the clock visitors are in a
    assert await variant_rows(namespace) == [("a", 15 + settings.partitions, 15), ("b", 15, 15)]
    assert await read_topic(settings, settings.topic_dead_letter) == []

    clock = [
        (topics["a"], visitor.encode(), json.dumps(assignment(visitor, "a", TEN)).encode())
        for visitor in one_per_partition("later-", settings.partitions)
    ]
    await produce(settings, clock, timestamps=[now_ms + 120 * minute] * len(clock))
    await wait_until_applied(settings, redis)
    dead = await read_topic(settings, settings.topic_dead_letter)
    assert [record["reason"] for _, record in dead] == ["no_assignment"]
