"""Exact, effectively-once counting from Kafka into Redis, against the real services."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.dataset import GOALS, LIVE, Dataset, generate
from tests.integration.harness import (
    ENGINES,
    SHORT_SESSION,
    Message,
    Namespace,
    WorkerProcesses,
    applied_fraction,
    end_offsets,
    produce,
    produce_to_partition,
    read_topic,
    wait_mid_stream,
    wait_until_applied,
)
from worker import relay
from worker.cli.results_command import collect
from worker.ingestion.partitioning import partition_for
from worker.results.query import ResultQuery
from worker.store import keys
from worker.store.connection import Redis as AnyRedis

pytestmark = pytest.mark.integration


def messages_for(namespace: Namespace, data: Dataset) -> list[tuple[str, bytes | None, bytes]]:
    topics = {
        "assignments": namespace.settings.topic_assignments,
        "conversions": namespace.settings.topic_conversions,
    }
    definitions = [
        (namespace.settings.topic_experiments, d["id"].encode(), json.dumps(d).encode())
        for d in data.definitions
    ]
    return definitions + [(topics[kind], key, value) for kind, key, value in data.messages]


TimedMessage = tuple[Message, int]
"""A message and its record timestamp (ms)."""


def timed_messages(namespace: Namespace, data: Dataset) -> list[TimedMessage]:
    """The definitions, then the data set's messages with its publish clock (from now)."""
    messages = messages_for(namespace, data)
    now_ms = int(time.time() * 1000)
    definitions = len(messages) - len(data.messages)
    stamps = [now_ms] * definitions + data.publish_times(now_ms)
    return list(zip(messages, stamps, strict=True))


async def produce_timed(
    namespace: Namespace, timed: list[TimedMessage], create_topics: bool = True
) -> None:
    """Send the messages in order, each with its timestamp (harness.produce)."""
    messages = [message for message, _ in timed]
    stamps = [stamp for _, stamp in timed]
    await produce(namespace.settings, messages, timestamps=stamps, create_topics=create_topics)


async def produce_dataset(namespace: Namespace, data: Dataset) -> None:
    """The definitions, then the data set's messages with its publish clock (from now)."""
    await produce_timed(namespace, timed_messages(namespace, data))


async def assert_results_exact(namespace: Namespace, data: Dataset) -> None:
    # timeframe_days forces the per-visitor scan: both paths must give the oracle's numbers.
    queries = [ResultQuery(goal=goal) for goal in GOALS]
    queries += [ResultQuery(goal=goal, timeframe_days=3650) for goal in GOALS]
    for experiment in LIVE:
        for query in queries:
            goal = query.goal
            assert goal is not None
            result = await collect(namespace.settings, experiment, query)
            actual = result.model_dump(mode="json")["variants"]
            expected = data.expected(experiment, goal)
            for full, want in zip(actual, expected, strict=True):
                got = {name: full[name] for name in want}
                for name in ("revenue", "revenue_sum_squares"):
                    assert math.isclose(
                        got.pop(name), want.pop(name), rel_tol=1e-9, abs_tol=1e-6
                    ), (experiment, query, name)
                assert got == want, (experiment, query)


async def dead_letter_reasons(namespace: Namespace) -> Counter[str]:
    records = await read_topic(namespace.settings, namespace.settings.topic_dead_letter)
    return Counter(record["reason"] for _, record in records)


@pytest.mark.parametrize("workers", ENGINES, indirect=True)
async def test_generated_traffic_is_counted_exactly(
    namespace: Namespace, workers: WorkerProcesses, redis: Redis
) -> None:
    data = generate(seed=11, visitors=1500, partitions=namespace.settings.partitions, poison=40)
    duplicates = len(data.messages) - len({value for _, _, value in data.messages})
    assert duplicates > 20  # the data set does exercise de-duplication
    await produce_dataset(namespace, data)
    workers.start()
    await wait_until_applied(namespace.settings, redis)
    await assert_results_exact(namespace, data)
    assert await dead_letter_reasons(namespace) == data.expected_dead


async def test_outbox_entries_a_roll_back_left_are_published_when_idle(
    namespace: Namespace, workers: WorkerProcesses, redis: Redis
) -> None:
    # A replica promoted without the primary's last writes may hold a batch's outbox
    # entries and offsets but not the trim of the flush that published them: only the
    # partition's next batch would flush them again, and none may come. Here the traffic
    # (assignments only) dead-letters nothing, and once it is applied every partition's
    # outbox gets such an entry.
    settings = namespace.settings
    data = generate(seed=14, visitors=300, partitions=settings.partitions)
    await produce_dataset(
        namespace, replace(data, messages=[m for m in data.messages if m[0] == "assignments"])
    )
    workers.start()
    await wait_until_applied(settings, redis)
    for partition in range(settings.partitions):
        entry = relay.publish_entry(
            settings.topic_dead_letter, f"left-{partition}", {"reason": "left in the outbox"}
        )
        await redis.rpush(keys.outbox_key(settings.key_prefix, partition), entry)
    await wait_until_applied(settings, redis, timeout=30)
    assert await dead_letter_reasons(namespace) == {"left in the outbox": settings.partitions}


async def test_results_cli_prints_the_counts(
    namespace: Namespace, workers: WorkerProcesses, redis: Redis
) -> None:
    data = generate(seed=12, visitors=200, partitions=namespace.settings.partitions)
    await produce_dataset(namespace, data)
    workers.start()
    await wait_until_applied(namespace.settings, redis)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "results", "exp-b", "--goal", "signup", "--json",
        env={**os.environ, **namespace.env},
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, _ = await process.communicate()
    assert process.returncode == 0
    variants = json.loads(stdout)["variants"]
    expected = data.expected("exp-b", "signup")
    assert [(v["visitors"], v["conversions"], v["goal_events"]) for v in variants] == [
        (e["visitors"], e["conversions"], e["goal_events"]) for e in expected
    ]


async def sigkill_mid_stream_and_restart(
    namespace: Namespace, workers: WorkerProcesses, redis: AnyRedis, visitors: int
) -> None:
    """A worker SIGKILLed with a fifth or more applied, a new one started: exact."""
    data = generate(seed=21, visitors=visitors, partitions=namespace.settings.partitions, poison=50)
    await produce_dataset(namespace, data)
    produced = await end_offsets(namespace.settings, namespace.settings.input_topics)
    first = workers.start(AB_BATCH_SIZE="100", **SHORT_SESSION)
    await wait_mid_stream(namespace.settings, redis, produced)
    workers.kill(first)
    killed_at = await applied_fraction(namespace.settings, redis, produced)
    assert 0 < killed_at < 1, f"kill did not land mid-stream ({killed_at:.1%} applied)"
    workers.start(AB_BATCH_SIZE="100", **SHORT_SESSION)
    await wait_until_applied(namespace.settings, redis, timeout=240)
    await assert_results_exact(namespace, data)
    reasons = await dead_letter_reasons(namespace)
    # Dead letters are at-least-once: a kill between publishing and trimming the
    # outbox may repeat one, never lose one.
    assert all(reasons[reason] >= count for reason, count in data.expected_dead.items())
    assert set(reasons) == set(data.expected_dead)


async def two_workers_and_a_rebalance(
    namespace: Namespace, workers: WorkerProcesses, redis: AnyRedis, visitors: int
) -> None:
    """A second worker joins at a tenth applied, the first leaves at half: exact."""
    data = generate(seed=31, visitors=visitors, partitions=namespace.settings.partitions, poison=30)
    await produce_dataset(namespace, data)
    produced = await end_offsets(namespace.settings, namespace.settings.input_topics)
    first = workers.start(AB_BATCH_SIZE="100")
    await wait_mid_stream(namespace.settings, redis, produced, share=0.1)
    second = workers.start(AB_BATCH_SIZE="100")  # joins the group: a rebalance
    for _ in range(600):
        await asyncio.sleep(0.1)
        if await applied_fraction(namespace.settings, redis, produced) > 0.5:
            break
    workers.stop(first)  # leaves the group: another rebalance, the second takes over
    assert first.returncode == 0, workers.log_of(first)  # SIGTERM is a clean stop
    await wait_until_applied(namespace.settings, redis, timeout=240)
    assert second.poll() is None, workers.log_of(second)
    await assert_results_exact(namespace, data)
    reasons = await dead_letter_reasons(namespace)
    assert all(reasons[reason] >= count for reason, count in data.expected_dead.items())


@pytest.mark.parametrize("workers", ENGINES, indirect=True)
async def test_sigkill_mid_stream_and_restart_stays_exact(
    namespace: Namespace, workers: WorkerProcesses, redis: Redis
) -> None:
    await sigkill_mid_stream_and_restart(namespace, workers, redis, visitors=4000)


@pytest.mark.parametrize("workers", ENGINES, indirect=True)
async def test_two_workers_and_a_rebalance_stay_exact(
    namespace: Namespace, workers: WorkerProcesses, redis: Redis
) -> None:
    await two_workers_and_a_rebalance(namespace, workers, redis, visitors=3000)


async def test_poison_messages_are_dead_lettered_and_never_stall(
    namespace: Namespace, workers: WorkerProcesses, redis: Redis
) -> None:
    data = generate(seed=41, visitors=1000, partitions=namespace.settings.partitions, poison=1000)
    await produce_dataset(namespace, data)
    workers.start()
    await wait_until_applied(namespace.settings, redis)
    await assert_results_exact(namespace, data)
    records = await read_topic(namespace.settings, namespace.settings.topic_dead_letter)
    assert Counter(record["reason"] for _, record in records) == data.expected_dead
    sources = {
        (r["source"]["topic"], r["source"]["partition"], r["source"]["offset"]) for _, r in records
    }
    assert len(sources) == len(records)  # each poison message once, with where it came from
    sample = next(r for _, r in records if r["reason"] == "schema_violation")
    assert sample["value_base64"] and sample["detail"]


async def test_misrouted_event_is_forwarded_and_counted_once(
    namespace: Namespace, workers: WorkerProcesses, redis: Redis
) -> None:
    settings = namespace.settings
    data = generate(seed=51, visitors=50, partitions=settings.partitions)
    await produce_dataset(namespace, data)
    visitor = "misrouted-visitor"
    right = partition_for(visitor, settings.partitions)
    wrong = (right + 1) % settings.partitions
    event: dict[str, Any] = {
        "event_id": "misrouted-1",
        "experiment_id": "exp-a",
        "variant_id": "1",
        "visitor_id": visitor,
        "timestamp": "2026-11-20T09:00:00+00:00",
    }
    await produce_to_partition(
        settings, settings.topic_assignments, wrong, b"other-key", json.dumps(event).encode()
    )
    workers.start()
    await wait_until_applied(settings, redis)
    before = (await collect(settings, "exp-a", ResultQuery())).model_dump(mode="json")["variants"]
    expected = data.expected("exp-a", "purchase")
    assert before[1]["visitors"] == expected[1]["visitors"] + 1
    assert before[0]["visitors"] == expected[0]["visitors"]
    stats = await redis.hgetall(keys.partition_stats_key(settings.key_prefix, wrong))
    assert int(stats[b"forwarded"]) == 1
