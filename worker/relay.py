"""The outbox relay, Redis to Kafka: publishes what a Lua script queued, then removes it.

The scripts queue inside the atomic write they belong to: apply_batch.lua queues a
partition's dead letters and forwards with the offsets it advances, so an entry exists
exactly when its message was consumed; record_decisions.lua queues a decision in the
step that marks it taken. Publishing before removing makes delivery at-least-once (a
crash in between publishes an entry twice; a forwarded event is then de-duplicated by
its event_id, a decision by its idempotency_key). The batch pipeline and the snapshot
job both flush through here, below both of them: results/ imports nothing of ingestion/.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from worker.events.dead_letter import dead_letter_payload, unb64
from worker.store.connection import Redis
from worker.store.outbox import drop_published, oldest_entries
from worker.store.sink_protocol import PublishEntry

log = logging.getLogger(__name__)
FLUSH_CHUNK = 500


def publish_entry(topic: str, key: str, value: dict[str, Any]) -> bytes:
    """An outbox entry that publishes `value` as JSON to `topic` under `key`."""
    entry: PublishEntry = {"kind": "publish", "topic": topic, "key": key, "value": value}
    return orjson.dumps(entry)


async def flush(
    redis: Redis, producer: AIOKafkaProducer, outbox: str, dead_letter_topic: str
) -> int:
    """Publish and drop every queued entry of one outbox list; returns how many."""
    published = 0
    while True:
        raw_entries = await oldest_entries(redis, outbox, FLUSH_CHUNK)
        if not raw_entries:
            return published
        sends = [_send(producer, orjson.loads(raw), dead_letter_topic) for raw in raw_entries]
        await asyncio.gather(*[await send for send in sends])
        published += len(raw_entries)
        if not await drop_published(redis, outbox, raw_entries):
            # Another flusher published and dropped them first; what it left is its
            # to send, or the next flush's.
            return published


async def _send(producer: AIOKafkaProducer, entry: dict[str, Any], dead_letter_topic: str) -> Any:
    if entry["kind"] == "publish":
        return await producer.send(
            entry["topic"], value=orjson.dumps(entry["value"]), key=entry["key"].encode()
        )
    if entry["kind"] == "forward":
        return await producer.send(
            entry["topic"],
            value=unb64(entry["value"]),
            key=unb64(entry["key"]),
            partition=entry["partition"],
        )
    message = entry["message"]
    log.debug(
        "dead-lettered %s/%s@%s: %s (%s)",
        message["topic"], message["partition"], message["offset"], entry["reason"], entry["detail"],
    )  # fmt: skip
    return await producer.send(
        dead_letter_topic,
        value=dead_letter_payload(entry["reason"], entry["detail"], message),
        key=unb64(message.get("key")),
    )
