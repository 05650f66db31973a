"""Publishes what a Lua script queued (dead letters, forwards, decisions), then removes it.

The script queues inside the same atomic write that advances the offsets, so an
entry exists exactly when its message was consumed; publishing before removing
makes delivery at-least-once (a crash in between publishes an entry twice, and a
forwarded event is then de-duplicated by its event_id).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from worker.events.dead_letter import dead_letter_payload, unb64

log = logging.getLogger(__name__)
FLUSH_CHUNK = 500


def publish_entry(topic: str, key: str, value: dict[str, Any]) -> bytes:
    """An outbox entry that publishes `value` as JSON to `topic` under `key`."""
    return orjson.dumps({"kind": "publish", "topic": topic, "key": key, "value": value})


async def flush(
    redis: Redis, producer: AIOKafkaProducer, outbox: str, dead_letter_topic: str
) -> int:
    """Publish and drop every queued entry of one outbox list; returns how many."""
    published = 0
    while True:
        raw_entries = await redis.lrange(outbox, 0, FLUSH_CHUNK - 1)
        if not raw_entries:
            return published
        sends = [_send(producer, orjson.loads(raw), dead_letter_topic) for raw in raw_entries]
        await asyncio.gather(*[await send for send in sends])
        await redis.ltrim(outbox, len(raw_entries), -1)
        published += len(raw_entries)


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
