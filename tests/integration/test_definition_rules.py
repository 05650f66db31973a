"""A live experiment's counting rules (goal types and caps, stats.cuped_days) are fixed:
the registry dead-letters an update that changes them and keeps counting by the old one.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from tests.integration.harness import Namespace, produce, read_topic
from worker.events.experiment import ExperimentDefinition
from worker.ingestion.registry import ExperimentRegistry
from worker.producer import new_producer
from worker.store.definitions import load_definition, save_definition

pytestmark = pytest.mark.integration


def definition(status: str = "live", cap: float | None = 100.0, **changes: Any) -> dict[str, Any]:
    return {
        "id": "fixed", "project_key": "shop", "name": "Fixed", "status": status,
        "variants": [{"id": "a", "name": "A", "is_control": True}, {"id": "b", "name": "B"}],
        "goals": [{"key": "buy", "name": "Buy", "type": "revenue", "primary": True, "cap": cap}],
    } | changes  # fmt: skip


async def follow(namespace: Namespace, redis: Redis, prefix: str) -> ExperimentRegistry:
    """A registry of `namespace`'s definitions topic, storing under `prefix`; started."""
    settings = namespace.settings
    producer = new_producer(settings.kafka_bootstrap_servers)
    await producer.start()
    registry = ExperimentRegistry(
        settings.kafka_bootstrap_servers,
        settings.topic_experiments,
        redis,
        prefix,
        producer,
        settings.topic_dead_letter,
    )
    await registry.start()
    await registry.stop()
    await producer.stop()
    return registry


async def publish(namespace: Namespace, *values: dict[str, Any]) -> None:
    topic = namespace.settings.topic_experiments
    await produce(namespace.settings, [(topic, b"fixed", orjson.dumps(v)) for v in values])


async def reasons(namespace: Namespace) -> list[tuple[str, str]]:
    letters = await read_topic(namespace.settings, namespace.settings.topic_dead_letter)
    return [(letter["reason"], letter["detail"]) for _, letter in letters]


async def test_a_live_experiments_cap_type_and_cuped_days_do_not_change(
    namespace: Namespace, redis: Redis
) -> None:
    prefix = namespace.settings.key_prefix
    await publish(
        namespace,
        definition("draft", cap=50.0),  # not live yet: anything may change
        definition(cap=100.0),
        definition(cap=200.0),
        definition(cap=100.0, stats={"cuped_days": 7}),
        definition(cap=100.0, name="Renamed"),  # only the name: accepted
    )
    registry = await follow(namespace, redis, prefix)
    kept = ExperimentDefinition.model_validate(definition(cap=100.0, name="Renamed"))
    assert registry.definitions["fixed"] == kept
    assert await load_definition(redis, prefix, "fixed") == kept
    assert await reasons(namespace) == [
        (
            "immutable_while_live",
            "experiment 'fixed' is live: goal 'buy' cap 100.0 -> 200.0 would count its "
            "visitors by two rules (create a new experiment instead)",
        ),
        (
            "immutable_while_live",
            "experiment 'fixed' is live: stats.cuped_days 14 -> 7 would count its "
            "visitors by two rules (create a new experiment instead)",
        ),
    ]


async def test_the_stored_definition_decides_when_the_topic_lost_the_older_one(
    namespace: Namespace, redis: Redis
) -> None:
    """Compaction keeps only a key's latest record: after a restart, the update that
    was refused may be the only one the topic still has."""
    prefix = namespace.settings.key_prefix
    live = ExperimentDefinition.model_validate(definition())
    await save_definition(redis, prefix, live)
    await publish(namespace, definition(goals=[{"key": "buy", "name": "Buy", "primary": True}]))
    registry = await follow(namespace, redis, prefix)
    assert registry.definitions == {"fixed": live}
    assert await load_definition(redis, prefix, "fixed") == live
    assert await reasons(namespace) == [
        (
            "immutable_while_live",
            "experiment 'fixed' is live: goal 'buy' type revenue -> conversion, goal 'buy' "
            "cap 100.0 -> None would count its visitors by two rules (create a new "
            "experiment instead)",
        )
    ]


async def test_a_restart_reading_the_history_again_refuses_nothing(
    namespace: Namespace, redis: Redis
) -> None:
    """The draft before launch had no cap (a percentile cap is fixed at launch): read
    again at a restart, it is history, not an update of the live definition stored."""
    prefix = namespace.settings.key_prefix
    await publish(namespace, definition("draft", cap=None), definition(cap=412.0))
    await follow(namespace, redis, prefix)
    restarted = await follow(namespace, redis, prefix)
    live = ExperimentDefinition.model_validate(definition(cap=412.0))
    assert restarted.definitions == {"fixed": live}
    assert await load_definition(redis, prefix, "fixed") == live
    assert await reasons(namespace) == []


async def test_a_live_percentile_cap_never_fixed_is_refused(
    namespace: Namespace, redis: Redis
) -> None:
    prefix = namespace.settings.key_prefix
    goal = {"key": "buy", "name": "Buy", "type": "revenue", "primary": True, "cap_percentile": 99}
    await publish(namespace, definition("draft", goals=[goal]), definition(goals=[goal]))
    registry = await follow(namespace, redis, prefix)
    assert registry.definitions["fixed"].status.value == "draft"
    assert await reasons(namespace) == [
        (
            "invalid_definition",
            "experiment 'fixed' is live with goal(s) buy capped by cap_percentile but no "
            "cap: publish it with `python -m worker experiments apply`, which fixes the cap "
            "at launch, or set cap",
        )
    ]
