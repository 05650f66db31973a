"""Snapshots and winner events from a running worker, against the real services."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.integration.harness import (
    Namespace,
    WorkerProcesses,
    end_offsets,
    produce,
    read_topic,
    wait_until_applied,
)
from worker.store import keys

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 20, 8, tzinfo=UTC)


def definition(exp_id: str, variants: int, weights: list[float] | None = None) -> dict[str, Any]:
    weights = weights or [1.0] * variants
    return {
        "id": exp_id,
        "project_key": "shop",
        "name": exp_id,
        "status": "live",
        "variants": [
            {"id": str(i), "name": f"V{i}", "is_control": i == 0, "traffic_weight": weights[i]}
            for i in range(variants)
        ],
        "goals": [{"key": "purchase", "name": "Purchase", "primary": True}],
        "stats": {"engine": "frequentist", "sequential": True, "confidence_threshold_percent": 95},
    }


def traffic(
    rng: random.Random, exp_id: str, visitors: int, split: list[float], rates: list[float]
) -> list[tuple[str, bytes, bytes]]:
    """Assignments by `split`, conversions by each variant's true rate, in time order
    (as live producers publish them; the conversion hold is measured in event time)."""
    out = []
    moments = sorted(START + timedelta(seconds=rng.randrange(6 * 3600)) for _ in range(visitors))
    for n, moment in enumerate(moments):
        visitor = f"{exp_id}-{n}"
        variant = rng.choices(range(len(split)), split)[0]
        out.append(("a", visitor.encode(), json.dumps({
            "event_id": f"{visitor}-a", "experiment_id": exp_id, "variant_id": str(variant),
            "visitor_id": visitor, "timestamp": moment.isoformat(),
        }).encode()))  # fmt: skip
        if rng.random() < rates[variant]:
            out.append(("c", visitor.encode(), json.dumps({
                "event_id": f"{visitor}-c", "visitor_id": visitor, "goal": "purchase",
                "timestamp": (moment + timedelta(minutes=5)).isoformat(),
            }).encode()))  # fmt: skip
    return out


async def send(
    namespace: Namespace,
    definitions: list[dict[str, Any]],
    messages: list[tuple[str, bytes, bytes]],
) -> None:
    settings = namespace.settings
    topics = {"a": settings.topic_assignments, "c": settings.topic_conversions}
    await produce(
        settings,
        [
            (settings.topic_experiments, d["id"].encode(), json.dumps(d).encode())
            for d in definitions
        ]
        + [(topics[kind], key, value) for kind, key, value in messages],
    )


async def decisions(namespace: Namespace) -> list[dict[str, Any]]:
    return [
        event for _, event in await read_topic(namespace.settings, namespace.settings.topic_winners)
    ]


async def snapshots(namespace: Namespace) -> list[dict[str, Any]]:
    return [
        doc for _, doc in await read_topic(namespace.settings, namespace.settings.topic_results)
    ]


async def wait_for_intervals(
    namespace: Namespace, experiment: str, count: int, timeout: float = 60
) -> None:
    """Until `count` more snapshots of the experiment were published."""
    start = len([d for d in await snapshots(namespace) if d["experiment_id"] == experiment])
    for _ in range(int(timeout * 4)):
        await asyncio.sleep(0.25)
        now = len([d for d in await snapshots(namespace) if d["experiment_id"] == experiment])
        if now - start >= count:
            return
    raise AssertionError(f"fewer than {count} new snapshots of {experiment} within {timeout} s")


async def test_winner_srm_and_aa_decisions(
    namespace: Namespace, workers: WorkerProcesses, redis: Redis
) -> None:
    rng = random.Random(7)
    definitions = [
        definition("effect", 2),
        definition("srm", 2, [0.5, 0.5]),
        definition("aa20", 20),
    ]
    effect = traffic(rng, "effect", 12000, [0.5, 0.5], [0.10, 0.13])  # +30 %
    # A big "effect", but SRM. The split must show before the effect can: with 45/55 and
    # 10 % vs 20 %, the sequential test passes at about 1,300 visitors and the SRM alarm
    # at about 1,800, so a look during ingestion could declare (and then withdraw) a
    # winner, as a CI run did. With 40/60 and +50 %, in 2,000 simulated runs looking every
    # 25 visitors the alarm always came first (by 1,500 visitors; the test passes from
    # about 2,750), and without the SRM rule every run would declare by 10,000.
    srm = traffic(rng, "srm", 10000, [0.40, 0.60], [0.10, 0.15])
    aa = traffic(rng, "aa20", 12000, [1.0] * 20, [0.10] * 20)
    # Half-second intervals: the peeks below wait for two of them per chunk.
    workers.start(AB_RESULTS_INTERVAL="0.5")
    # The A/A arrives in chunks, so it is checked at many peeks while it grows.
    await send(namespace, definitions, effect + srm)
    for chunk in range(6):
        await send(namespace, [], aa[chunk * 2000 : (chunk + 1) * 2000])
        await wait_until_applied(namespace.settings, redis)
        await wait_for_intervals(namespace, "aa20", 2)
    await wait_for_intervals(namespace, "effect", 3)

    events = await decisions(namespace)
    kinds = Counter((e["experiment_id"], e["kind"], e.get("variant_id")) for e in events)
    assert kinds[("effect", "winner_declared", "1")] == 1
    assert not [
        e for e in events if e["experiment_id"] == "effect" and e["kind"] != "winner_declared"
    ]
    assert kinds[("srm", "srm_detected", None)] == 1
    assert not [e for e in events if e["experiment_id"] == "srm" and e["kind"] == "winner_declared"]
    assert not [e for e in events if e["experiment_id"] == "aa20"]
    winner = next(e for e in events if e["kind"] == "winner_declared")
    assert winner["idempotency_key"] and winner["goal"] == "purchase"
    assert winner["rule"]["name"] == "sequential" and winner["rule"]["kameleoon"]["met"] is True

    # Each experiment's snapshot is computed once per interval.
    published = await snapshots(namespace)
    per_interval = Counter((d["experiment_id"], d["interval_index"]) for d in published)
    assert max(per_interval.values()) == 1
    # The last snapshot says it includes every message that was published.
    settings = namespace.settings
    ends = await end_offsets(settings, settings.input_topics)
    await wait_for_intervals(namespace, "effect", 1)
    last = (await snapshots(namespace))[-1]["applied_offsets"]
    assert {(topic, int(p)): o + 1 for topic, parts in last.items() for p, o in parts.items()} == {
        (tp.topic, tp.partition): end for tp, end in ends.items() if end
    }


async def test_restart_and_two_workers_publish_no_decision_twice(
    namespace: Namespace, workers: WorkerProcesses, redis: Redis
) -> None:
    rng = random.Random(8)
    first = workers.start(AB_RESULTS_INTERVAL="1")
    await send(
        namespace,
        [definition("effect", 2)],
        traffic(rng, "effect", 12000, [0.5, 0.5], [0.10, 0.13]),
    )
    await wait_until_applied(namespace.settings, redis)
    # The kill comes after the winner's publication is complete, its outbox trimmed:
    # publication is at-least-once (DESIGN 8.3), and a kill between the two would
    # rightly publish it again.
    outbox = keys.winners_outbox_key(namespace.settings.key_prefix, "effect")
    for _ in range(120):
        declared = any(e["kind"] == "winner_declared" for e in await decisions(namespace))
        if declared and await redis.llen(outbox) == 0:
            break
        await asyncio.sleep(0.5)
    assert declared, "no winner within 60 s"
    workers.kill(first)
    workers.start(AB_RESULTS_INTERVAL="1")
    workers.start(AB_RESULTS_INTERVAL="1")
    await wait_for_intervals(namespace, "effect", 4)
    events = await decisions(namespace)
    assert [(e["kind"], e["variant_id"]) for e in events] == [("winner_declared", "1")]
    published = await snapshots(namespace)
    per_interval = Counter(d["interval_index"] for d in published)
    assert max(per_interval.values()) == 1
    assert len({d["computed_by"] for d in published}) >= 2  # more than one worker computed
