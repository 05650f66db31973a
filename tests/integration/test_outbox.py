"""The outboxes on the real Redis: a flush drops only what it published."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from tests.integration.harness import Namespace
from worker.store import keys
from worker.store.outbox import drop_published, oldest_entries

pytestmark = pytest.mark.integration


async def test_a_flush_that_lost_a_race_drops_nothing_queued_since(
    namespace: Namespace, redis: Redis
) -> None:
    # Two flushers of one outbox (a worker idle-flushing while a rebalance hands the
    # partition to another) read the same head; the first trims it and a batch queues
    # more. Trimming the second's count from the head would drop entries never sent.
    outbox = keys.outbox_key(namespace.settings.key_prefix, 0)
    await redis.rpush(outbox, "a", "b", "c")
    late = await oldest_entries(redis, outbox, 2)
    first = await oldest_entries(redis, outbox, 2)
    assert await drop_published(redis, outbox, first)
    await redis.rpush(outbox, "d")
    assert not await drop_published(redis, outbox, late)
    assert await redis.lrange(outbox, 0, -1) == [b"c", b"d"]
    assert await drop_published(redis, outbox, await oldest_entries(redis, outbox, 5))
    assert await redis.llen(outbox) == 0
