"""The decision history: record_decisions.lua adds each new decision event to a capped
list of the experiment, newest first, in the same atomic step that queues it."""

from __future__ import annotations

import orjson
import pytest
from redis.asyncio import Redis

from tests.integration.harness import Namespace
from worker.store import keys
from worker.store.snapshots import HISTORY_LIMIT, decision_history, record_decisions

pytestmark = pytest.mark.integration


def decision(n: int) -> tuple[str, bytes, bytes]:
    """The n-th decision: its idempotency key, outbox entry and event JSON."""
    event = {"kind": "srm_detected", "sequence": n}
    return f"exp:srm_detected:-:{n}", orjson.dumps({"value": event}), orjson.dumps(event)


async def test_only_new_events_enter_the_history_newest_first(
    namespace: Namespace, redis: Redis
) -> None:
    prefix = namespace.settings.key_prefix
    assert await decision_history(redis, prefix, "exp") == []
    assert await record_decisions(redis, prefix, "exp", [decision(1), decision(2)], {"s": 1}) == 2
    # A repeat (another worker, a restart) adds nothing; only the new third event enters.
    repeat = [decision(1), decision(2), decision(3)]
    assert await record_decisions(redis, prefix, "exp", repeat, {"s": 2}) == 1
    history = await decision_history(redis, prefix, "exp")
    assert history == [
        {"kind": "srm_detected", "sequence": 3},
        {"kind": "srm_detected", "sequence": 2},
        {"kind": "srm_detected", "sequence": 1},
    ]
    assert await redis.llen(keys.winners_outbox_key(prefix, "exp")) == 3
    assert await decision_history(redis, prefix, "other") == []


async def test_the_history_keeps_the_newest_events_up_to_its_limit(
    namespace: Namespace, redis: Redis
) -> None:
    prefix = namespace.settings.key_prefix
    total = HISTORY_LIMIT + 15
    await record_decisions(redis, prefix, "exp", [decision(n) for n in range(1, 11)], {})
    for n in range(11, total + 1):
        await record_decisions(redis, prefix, "exp", [decision(n)], {})
    history = await decision_history(redis, prefix, "exp")
    assert [event["sequence"] for event in history] == list(range(total, 15, -1))
    assert len(history) == 200
    # The outbox is the relay's to trim: every event is still queued there.
    assert await redis.llen(keys.winners_outbox_key(prefix, "exp")) == total
