"""The Lua sink against the real Redis: the hold runs in publish time, and a roll-back shows.

These drive `BatchSink` directly, message by message or in batches, so that the read
order of the two input topics can be chosen exactly (a worker reads them as Kafka
hands them out). The numbers are read back with the product's own results path.
"""

from __future__ import annotations

import base64
import json
import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter
from redis.asyncio import Redis

from tests.integration.harness import Namespace
from worker.cli.results_command import collect
from worker.config import Settings
from worker.events.dead_letter import (
    DeadLetter,
    DeadLetterEntry,
    SourceRecord,
    dead_letter_payload,
)
from worker.events.experiment import ExperimentDefinition
from worker.ingestion.commands import SourceMessage, plan_assignment, plan_conversion
from worker.ingestion.partitioning import partition_for
from worker.results.query import ResultQuery
from worker.store import keys
from worker.store.batch_sink import BatchSink, SinkSettings
from worker.store.sink_protocol import SinkReply

pytestmark = pytest.mark.integration

PARTITIONS = 4
HOLD_MS = 3_600_000
ASSIGNMENTS, CONVERSIONS = "assignments", "conversions"
DAY = datetime(2026, 11, 20, tzinfo=UTC)
PUBLISHED = int(datetime(2026, 11, 21, tzinfo=UTC).timestamp() * 1000)
DEFINITIONS = [
    ExperimentDefinition.model_validate(
        {
            "id": exp_id,
            "project_key": "shop",
            "name": exp_id,
            "status": "live",
            "variants": [
                {"id": "0", "name": "A", "is_control": True, "traffic_weight": 0.5},
                {"id": "1", "name": "B", "traffic_weight": 0.5},
            ],
            "goals": [{"key": "buy", "name": "Buy", "type": "revenue", "primary": True}],
        }
    )
    for exp_id in ("x1", "x2")
]
CATALOG = {definition.id: definition for definition in DEFINITIONS}


@dataclass(frozen=True)
class Record:
    """One input record: its topic, its publish time and its event."""

    topic: str
    published_ms: int
    event: dict[str, Any]

    @property
    def visitor(self) -> str:
        return str(self.event["visitor_id"])


def assignment(visitor: str, experiment: str, variant: str, at: datetime, published: int) -> Record:
    return Record(ASSIGNMENTS, published, {
        "event_id": f"a-{visitor}-{experiment}-{published}", "experiment_id": experiment,
        "variant_id": variant, "visitor_id": visitor, "timestamp": at.isoformat(),
    })  # fmt: skip


def conversion(
    visitor: str, at: datetime, published: int, value: float = 10.0, experiment: str | None = None
) -> Record:
    event = {
        "event_id": f"c-{visitor}-{published}", "visitor_id": visitor, "goal": "buy",
        "timestamp": at.isoformat(), "value": value,
    }  # fmt: skip
    if experiment is not None:
        event["experiment_id"] = experiment
    return Record(CONVERSIONS, published, event)


class Sink:
    """A namespace's sink, fed as a consumer would: per partition, offsets per topic."""

    def __init__(self, redis: Redis, settings: Settings, prefix: str) -> None:
        self.redis = redis
        self.settings = settings
        self.prefix = prefix
        self.sink = BatchSink(
            redis,
            SinkSettings(prefix, 7 * 86400, HOLD_MS, assignments_topic=ASSIGNMENTS),
        )

    async def define(self) -> None:
        await self.redis.hset(keys.meta_key(self.prefix), "partitions", PARTITIONS)
        for definition in DEFINITIONS:
            await self.redis.hset(
                keys.experiments_key(self.prefix), definition.id, definition.model_dump_json()
            )

    async def apply(
        self,
        partition: int,
        batch: list[tuple[int, Record]],
        expected: dict[str, int] | None = None,
    ) -> SinkReply:
        """Apply (offset, record) pairs of one partition in one script call."""
        commands = []
        for offset, record in batch:
            message = SourceMessage(
                record.topic,
                partition,
                offset,
                record.visitor.encode(),
                orjson.dumps(record.event),
                timestamp_ms=record.published_ms,
            )
            planner = plan_assignment if record.topic == ASSIGNMENTS else plan_conversion
            commands.append(planner(message, CATALOG, PARTITIONS).command)
        return await self.sink.apply(partition, commands, [], expected)

    async def results(self) -> dict[str, list[dict[str, Any]]]:
        settings = Settings(**{**self.settings.__dict__, "key_prefix": self.prefix})
        out = {}
        for definition in DEFINITIONS:
            result = await collect(settings, definition.id, ResultQuery(goal="buy"))
            out[definition.id] = [
                row.model_dump(include={"variant_id", "visitors", "conversions", "revenue"})
                for row in result.variants
            ]
        return out

    async def dead_letters(self) -> Counter[str]:
        """Event ids dead-lettered, from every partition's outbox."""
        found: Counter[str] = Counter()
        for partition in range(PARTITIONS):
            for raw in await self.redis.lrange(keys.outbox_key(self.prefix, partition), 0, -1):
                entry = orjson.loads(raw)
                if entry.get("kind") == "dead_letter":
                    value = entry["message"]["value"]
                    event = json.loads(base64.b64decode(value))
                    found[f"{entry['reason']}:{event['event_id']}"] += 1
        return found


@pytest.fixture
async def sink(namespace: Namespace, redis: Redis) -> Sink:
    created = Sink(redis, namespace.settings, namespace.settings.key_prefix)
    await created.define()
    return created


async def test_conversion_read_before_its_assignment_survives_other_visitors_later_assignment(
    sink: Sink,
) -> None:
    """Issue 13.2's reproduction: each record applied before the next one is published."""
    a = "visitor-a"
    partition = partition_for(a, PARTITIONS)
    b = next(
        f"visitor-b{n}"
        for n in range(1000)
        if partition_for(f"visitor-b{n}", PARTITIONS) == partition
    )
    t = DAY.replace(hour=10)
    steps = [
        conversion(a, t, PUBLISHED),
        assignment(b, "x1", "0", t + timedelta(hours=2), PUBLISHED + 1000),
        assignment(a, "x1", "1", t - timedelta(minutes=10), PUBLISHED + 2000),
    ]
    offsets = Counter[str]()
    for record in steps:
        await sink.apply(partition, [(offsets[record.topic], record)])
        offsets[record.topic] += 1
    results = await sink.results()
    assert results["x1"] == [
        {"variant_id": "0", "visitors": 1, "conversions": 0, "revenue": 0.0},
        {"variant_id": "1", "visitors": 1, "conversions": 1, "revenue": 10.0},
    ]
    assert await sink.dead_letters() == Counter()


async def test_assignment_published_minutes_after_its_conversion_counts(sink: Sink) -> None:
    visitor = "late-assigned"
    partition = partition_for(visitor, PARTITIONS)
    t = DAY.replace(hour=9)
    await sink.apply(partition, [(0, conversion(visitor, t + timedelta(minutes=1), PUBLISHED))])
    minutes = 60_000
    await sink.apply(partition, [(0, assignment(visitor, "x2", "0", t, PUBLISHED + 7 * minutes))])
    results = await sink.results()
    assert results["x2"][0] == {"variant_id": "0", "visitors": 1, "conversions": 1, "revenue": 10.0}
    assert await sink.dead_letters() == Counter()


async def test_hold_expires_only_when_assignments_are_read_past_the_deadline(sink: Sink) -> None:
    orphan, other = "orphan-visitor", "someone-else"
    partition = partition_for(orphan, PARTITIONS)
    other = next(
        f"else{n}" for n in range(1000) if partition_for(f"else{n}", PARTITIONS) == partition
    )
    held = conversion(orphan, DAY, PUBLISHED)
    await sink.apply(partition, [(0, held)])
    # published exactly at the deadline: not past it
    await sink.apply(partition, [(0, assignment(other, "x1", "0", DAY, PUBLISHED + HOLD_MS))])
    assert await sink.dead_letters() == Counter()
    await sink.apply(partition, [(1, assignment(other, "x1", "0", DAY, PUBLISHED + HOLD_MS + 1))])
    assert await sink.dead_letters() == Counter({f"no_assignment:{held.event['event_id']}": 1})
    # the orphan's assignment, published after the deadline, does not bring it back
    await sink.apply(partition, [(2, assignment(orphan, "x1", "1", DAY, PUBLISHED + HOLD_MS + 2))])
    assert (await sink.results())["x1"][1]["conversions"] == 0


async def test_the_sink_queues_an_expired_hold_as_the_planner_queues_a_dead_letter(
    sink: Sink,
) -> None:
    """apply_batch.lua writes the entry of an expired hold itself: it has the planner's
    shape (DeadLetterEntry), so the relay publishes both as the same record."""
    orphan = "orphan-shape"
    partition = partition_for(orphan, PARTITIONS)
    other = next(
        f"other{n}" for n in range(1000) if partition_for(f"other{n}", PARTITIONS) == partition
    )
    await sink.apply(partition, [(0, conversion(orphan, DAY, PUBLISHED))])
    unknown = assignment(other, "nope", "0", DAY, PUBLISHED + HOLD_MS + 1)  # planner's
    past_the_deadline = assignment(other, "x1", "0", DAY, PUBLISHED + HOLD_MS + 1)  # sink's
    await sink.apply(partition, [(0, unknown), (1, past_the_deadline)])
    raw_entries = await sink.redis.lrange(keys.outbox_key(sink.prefix, partition), 0, -1)
    entries = [orjson.loads(raw) for raw in raw_entries]
    assert sorted(entry["reason"] for entry in entries) == ["no_assignment", "unknown_experiment"]
    for entry in entries:
        TypeAdapter(DeadLetterEntry).validate_python(entry)  # every field, of its type
        assert set(entry) == set(DeadLetterEntry.__annotations__)  # and no other
        assert set(entry["message"]) <= set(SourceRecord.__annotations__)
        record = dead_letter_payload(entry["reason"], entry["detail"], entry["message"])
        assert DeadLetter.model_validate_json(record).source.partition == partition


def generated_log(seed: int) -> dict[int, dict[str, list[Record]]]:
    """Per partition, each topic's records in publish order, with every hold outcome:
    assignments published before, just after and hours after their conversions,
    conversions before entry, restricted to an experiment, and orphans."""
    rng = random.Random(seed)
    events: list[Record] = []
    clock = PUBLISHED
    for number in range(160):
        visitor = f"s{seed}-v{number}"
        entry = DAY + timedelta(minutes=rng.randrange(600))
        clock += rng.randrange(1, 60_000)
        kind = rng.random()
        delay = rng.choice((0, 1_000, 5 * 60_000, HOLD_MS - 1, HOLD_MS + 1, 3 * HOLD_MS))
        experiments = rng.sample(["x1", "x2"], rng.choice((1, 1, 2)))
        if kind > 0.1:  # not an orphan
            for experiment in experiments:
                events.append(
                    assignment(visitor, experiment, str(rng.randrange(2)), entry, clock + delay)
                )
        for n in range(rng.choice((0, 1, 1, 2, 3))):
            restricted = rng.choice([None, None, None, "x1", "x2"])
            moment = entry + timedelta(minutes=rng.randrange(-30, 120))
            events.append(
                conversion(visitor, moment, clock + n, round(rng.uniform(1, 99), 2), restricted)
            )
    log: dict[int, dict[str, list[Record]]] = {
        p: {ASSIGNMENTS: [], CONVERSIONS: []} for p in range(PARTITIONS)
    }
    for record in sorted(events, key=lambda r: r.published_ms):  # LogAppendTime: in order
        log[partition_for(record.visitor, PARTITIONS)][record.topic].append(record)
    return log


def interleaving(
    log: dict[str, list[Record]], rng: random.Random, ahead: str | None
) -> list[list[tuple[int, Record]]]:
    """Batches of one partition's records: `ahead` read whole first, else mixed at random;
    each topic stays in offset order, as a consumer reads it."""
    queues = {topic: list(enumerate(records)) for topic, records in log.items()}
    order: list[tuple[int, Record]] = []
    if ahead is not None:
        behind = CONVERSIONS if ahead == ASSIGNMENTS else ASSIGNMENTS
        order = queues[ahead] + queues[behind]
    else:
        while any(queues.values()):
            topic = rng.choice([t for t, q in queues.items() if q])
            take = rng.randrange(1, 8)
            order += queues[topic][:take]
            del queues[topic][:take]
    batches = []
    while order:
        size = rng.randrange(1, 40)
        batches.append(order[:size])
        del order[:size]
    return batches


def expected_dead(log: dict[int, dict[str, list[Record]]]) -> Counter[str]:
    """Plain Python: a conversion is dead-lettered when no assignment of its visitor (to
    the experiment it names) was published within the hold after it."""
    dead: Counter[str] = Counter()
    for topics in log.values():
        for record in topics[CONVERSIONS]:
            restricted = record.event.get("experiment_id")
            kept = any(
                a.visitor == record.visitor
                and a.published_ms <= record.published_ms + HOLD_MS
                and restricted in (None, a.event["experiment_id"])
                for a in topics[ASSIGNMENTS]
            )
            if not kept:
                dead[f"no_assignment:{record.event['event_id']}"] += 1
    return dead


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_same_log_gives_the_same_counts_whichever_topic_is_read_ahead(
    namespace: Namespace, redis: Redis, seed: int
) -> None:
    log = generated_log(seed)
    rng = random.Random(seed)
    outcomes = []
    for run, ahead in enumerate([ASSIGNMENTS, CONVERSIONS, None, None]):
        sink = Sink(redis, namespace.settings, f"{namespace.settings.key_prefix}:r{run}")
        await sink.define()
        for partition, topics in log.items():
            for batch in interleaving(topics, rng, ahead):
                await sink.apply(partition, batch)
        # a clock-advancing tail, last in every order, settles every hold
        for partition, topics in log.items():
            tail = assignment(f"tail-{partition}", "x1", "0", DAY, PUBLISHED + 100 * HOLD_MS)
            await sink.apply(partition, [(len(topics[ASSIGNMENTS]), tail)])
        outcomes.append((await sink.results(), await sink.dead_letters()))
    first_results, first_dead = outcomes[0]
    assert first_dead == expected_dead(log)
    assert sum(first_dead.values()) > 5  # the log does exercise expiry
    for results, dead in outcomes[1:]:
        assert dead == first_dead
        assert results == first_results


async def test_stored_offset_behind_the_consumer_applies_nothing_and_says_where(
    sink: Sink,
) -> None:
    visitor = "rolled"
    partition = partition_for(visitor, PARTITIONS)
    entries = [(n, assignment(visitor, "x1", "0", DAY, PUBLISHED + n)) for n in range(3)]
    await sink.apply(partition, entries)
    # The consumer applied up to offset 5, but Redis holds only up to 2 (it lost 3..5):
    # offset 6 must not land past the hole.
    later = conversion(visitor, DAY + timedelta(minutes=1), PUBLISHED + 10)
    reply = await sink.apply(
        partition,
        [(6, assignment(visitor, "x2", "1", DAY, PUBLISHED + 10)), (0, later)],
        expected={ASSIGNMENTS: 5},
    )
    assert reply == {"rollback": {ASSIGNMENTS: 2}}
    offsets = await sink.redis.hgetall(keys.offsets_key(sink.prefix, partition))
    assert offsets == {ASSIGNMENTS.encode(): b"2"}
    results = await sink.results()
    assert results["x2"][1]["visitors"] == 0
    assert results["x1"][0]["conversions"] == 0
    # Where Redis is not behind what the consumer expects, a batch applies.
    reply = await sink.apply(partition, [(0, later)], expected={ASSIGNMENTS: 2})
    assert reply["applied"] == 1
    assert (await sink.results())["x1"][0]["conversions"] == 1
