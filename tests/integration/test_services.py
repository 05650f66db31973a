"""The foundation: the real broker and Redis answer, and the provisioner's CLI says so."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from tests.integration.services import Endpoints
from worker.producer import new_producer

pytestmark = pytest.mark.integration


async def test_kafka_json_round_trip_with_manual_commit(endpoints: Endpoints) -> None:
    topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
    group = f"{topic}-group"
    sent: list[dict[str, Any]] = [{"n": n, "visitor_id": f"v{n}"} for n in range(50)]
    producer = new_producer(endpoints.kafka)
    await producer.start()
    try:
        for event in sent:
            await producer.send_and_wait(
                topic, orjson.dumps(event), key=event["visitor_id"].encode()
            )
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=endpoints.kafka,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    received: list[dict[str, Any]] = []
    try:
        # Joining the group comes first: polls may come back empty for a while.
        deadline = time.monotonic() + 60
        while len(received) < len(sent):
            assert time.monotonic() < deadline, f"{len(received)} of {len(sent)} came back"
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                received.extend(orjson.loads(record.value) for record in records)
        await consumer.commit()
        committed = {tp: await consumer.committed(tp) for tp in consumer.assignment()}
    finally:
        await consumer.stop()
    assert sorted(received, key=lambda e: e["n"]) == sent
    assert sum(offset or 0 for offset in committed.values()) == len(sent)
    assert all(isinstance(tp, TopicPartition) for tp in committed)


async def test_redis_lua_round_trip(endpoints: Endpoints) -> None:
    client = Redis.from_url(endpoints.redis)
    key = f"roundtrip:{{{uuid.uuid4().hex[:8]}}}"
    script = client.register_script(
        "redis.call('HINCRBY', KEYS[1], 'n', ARGV[1]); return redis.call('HGET', KEYS[1], 'n')"
    )
    try:
        assert int(await script(keys=[key], args=[5])) == 5
        assert int(await script(keys=[key], args=[7])) == 12
    finally:
        await client.delete(key)
        await client.aclose()


def test_services_status_reports_both_answering(endpoints: Endpoints) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker", "services", "status"],
        env={
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka,
            "REDIS_URL": endpoints.redis,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(
        line.startswith("kafka") and line.endswith("answering") and "NOT" not in line
        for line in lines
    )
    assert any(
        line.startswith("redis") and line.endswith("answering") and "NOT" not in line
        for line in lines
    )
