"""The Lua sink against the real Redis: the hold runs in publish time, and a roll-back shows.

These drive `BatchSink` directly, message by message or in batches, so that the read
order of the two input topics can be chosen exactly (a worker reads them as Kafka
hands them out). The numbers are read back with the product's own results path, and
every per-variant total is checked against plain Python over the same events.
"""

from __future__ import annotations

import base64
import json
import random
from collections import Counter
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter
from redis.asyncio import Redis

from tests.integration.harness import Namespace
from worker.config import Settings
from worker.events.dead_letter import (
    DeadLetter,
    DeadLetterEntry,
    SourceRecord,
    dead_letter_payload,
)
from worker.events.experiment import ExperimentDefinition, Goal, GoalType
from worker.ingestion.commands import (
    SourceMessage,
    plan_assignment,
    plan_conversion,
    sink_rules,
)
from worker.ingestion.partitioning import partition_for
from worker.results.query import ResultQuery
from worker.results.service import Table, load_table, totals
from worker.results.variant_totals import VariantTotals
from worker.results.visitor_scan import VisitorTable
from worker.store import keys
from worker.store.batch_sink import BatchSink, SinkSettings
from worker.store.sink_protocol import SinkReply, experiment_rules
from worker.store.visitor_reader import read_visitor_states

pytestmark = pytest.mark.integration

PARTITIONS = 4
HOLD_MS = 3_600_000
ASSIGNMENTS, CONVERSIONS = "assignments", "conversions"
DAY = datetime(2026, 11, 20, tzinfo=UTC)
PUBLISHED = int(datetime(2026, 11, 21, tzinfo=UTC).timestamp() * 1000)
DAY_MS = 86_400_000
# x1 caps revenue and events and takes one day before entry as the CUPED covariate;
# x2 caps only events and has CUPED off.
GOALS = {
    "x1": [
        {"key": "buy", "name": "Buy", "type": "revenue", "primary": True, "cap": 120.0},
        {"key": "view", "name": "View", "type": "count", "cap": 2},
        {"key": "signup", "name": "Sign-up", "type": "conversion"},
    ],
    "x2": [
        {"key": "buy", "name": "Buy", "type": "revenue", "primary": True},
        {"key": "view", "name": "View", "type": "count", "cap": 3},
        {"key": "signup", "name": "Sign-up", "type": "conversion"},
    ],
}
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
            "goals": goals,
            "stats": {"cuped_days": 1 if exp_id == "x1" else 0},
        }
    )
    for exp_id, goals in GOALS.items()
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


def assignment(
    visitor: str,
    experiment: str,
    variant: str,
    at: datetime,
    published: int,
    visit: str | None = None,
) -> Record:
    event = {
        "event_id": f"a-{visitor}-{experiment}-{published}", "experiment_id": experiment,
        "variant_id": variant, "visitor_id": visitor, "timestamp": at.isoformat(),
    }  # fmt: skip
    if visit is not None:
        event["visit_id"] = visit
    return Record(ASSIGNMENTS, published, event)


def conversion(
    visitor: str,
    at: datetime,
    published: int,
    value: float | None = 10.0,
    experiment: str | None = None,
    goal: str = "buy",
    visit: str | None = None,
) -> Record:
    event: dict[str, Any] = {
        "event_id": f"c-{visitor}-{goal}-{published}", "visitor_id": visitor, "goal": goal,
        "timestamp": at.isoformat(),
    }  # fmt: skip
    for name, given in (("value", value), ("experiment_id", experiment), ("visit_id", visit)):
        if given is not None:
            event[name] = given
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
        return await self.sink.apply(partition, commands, [], expected, sink_rules(CATALOG))

    async def results(self) -> dict[str, list[dict[str, Any]]]:
        """Visitors, conversions and revenue of goal `buy` per experiment, variants in order."""
        found = await self.totals()
        return {
            experiment: [
                {name: row[name] for name in ("variant_id", "visitors", "conversions", "revenue")}
                for row in goals["buy"].values()
            ]
            for experiment, goals in found.items()
        }

    async def totals(self, scan: bool = False) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
        """Experiment -> goal -> variant -> every VariantTotals field, from the counters
        (or with ``scan`` from the per-visitor state, as queries counters cannot answer
        read it)."""
        out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        query = ResultQuery()
        for definition in DEFINITIONS:
            table: Table = await load_table(self.redis, self.prefix, definition, query)
            if scan:
                states = await read_visitor_states(self.redis, self.prefix, definition.id)
                table = VisitorTable.build(
                    definition.id, states, rules=experiment_rules(definition)
                )
            order = query.variant_order(definition)
            out[definition.id] = {
                goal.key: {
                    row.variant_id: row.as_dict()
                    for row in totals(table, query, goal.key, order).variants
                }
                for goal in definition.goals
            }
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
    conversions before entry (inside and outside x1's CUPED day, on its edge),
    restricted to an experiment, and orphans; visitors come back in later visits
    (now and then shown the other variant) and reach the caps."""
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
                variant = rng.randrange(2)
                for visit in range(rng.choice((1, 1, 2, 3))):
                    shown = variant if visit == 0 or rng.random() < 0.8 else 1 - variant
                    moment = entry + timedelta(minutes=40 * visit)
                    published = clock + delay + visit
                    events.append(
                        assignment(visitor, experiment, str(shown), moment, published, f"s{visit}")
                    )
        for n in range(rng.choice((0, 1, 1, 2, 3, 5))):
            restricted = rng.choice([None, None, None, "x1", "x2"])
            goal = rng.choice(["buy", "buy", "view", "view", "signup"])
            minutes = rng.choice(
                [rng.randrange(-30, 120)] * 4 + [-23 * 60, -24 * 60, -24 * 60 - 1, -3 * 24 * 60]
            )
            moment = entry + timedelta(minutes=minutes)
            value = round(rng.uniform(1, 99), 2) if goal == "buy" else None
            seen_in = rng.choice([None, "s0", "s1", "s2"])
            events.append(conversion(visitor, moment, clock + n, value, restricted, goal, seen_in))
    log: dict[int, dict[str, list[Record]]] = {
        p: {ASSIGNMENTS: [], CONVERSIONS: []} for p in range(PARTITIONS)
    }
    for record in sorted(events, key=lambda r: r.published_ms):  # LogAppendTime: in order
        log[partition_for(record.visitor, PARTITIONS)][record.topic].append(record)
    return log


def tail(partition: int, offset: int) -> tuple[int, Record]:
    """An assignment published long after the log, read last: it settles every hold."""
    visitor = next(
        f"tail-{n}" for n in range(1000) if partition_for(f"tail-{n}", PARTITIONS) == partition
    )
    return offset, assignment(visitor, "x1", "0", DAY, PUBLISHED + 100 * HOLD_MS)


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


def event_ms(event: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(event["timestamp"]).timestamp() * 1000)


def goal_value(goal: Goal, events: list[dict[str, Any]]) -> float:
    """A visitor's value of the goal on its kind's scale, capped."""
    count, revenue = len(events), sum(event.get("value", 0.0) for event in events)
    if goal.type is GoalType.CONVERSION:
        return float(count > 0)
    value = count if goal.type is GoalType.COUNT else revenue
    return value if goal.cap is None else min(value, goal.cap)


def expected_totals(log: dict[int, dict[str, list[Record]]]) -> dict[tuple[str, ...], float]:
    """Plain Python: every VariantTotals number per (experiment, goal, variant, field),
    summed over the entered visitors from their own events. The entry is a visitor's
    first assignment to the experiment; a conversion counts when it is not dead-lettered
    (expected_dead), may count for the experiment and happened at or after entry; the
    CUPED covariate takes those in the experiment's window before entry instead."""
    dead = expected_dead(log)
    names = [field.name for field in fields(VariantTotals) if field.name != "variant_id"]
    out: dict[tuple[str, ...], float] = {
        (definition.id, goal.key, variant.id, name): 0.0
        for definition in DEFINITIONS
        for goal in definition.goals
        for variant in definition.variants
        for name in names
    }
    for topics in log.values():
        entries: dict[tuple[str, str], tuple[str, int, set[str], set[str]]] = {}
        for record in topics[ASSIGNMENTS]:  # in offset order: the first one enters
            event = record.event
            key = (record.visitor, event["experiment_id"])
            variant, _, visits, shown = entries.setdefault(
                key, (event["variant_id"], event_ms(event), set(), set())
            )
            visits.add(event.get("visit_id", "_"))
            shown.add(event["variant_id"])
        kept = [
            record.event
            for record in topics[CONVERSIONS]
            if f"no_assignment:{record.event['event_id']}" not in dead
        ]
        for (visitor, experiment), (variant, entry, visits, shown) in entries.items():
            definition = CATALOG[experiment]
            window = definition.stats.cuped_days * DAY_MS
            for goal in definition.goals:
                own = [
                    event
                    for event in kept
                    if event["visitor_id"] == visitor
                    and event["goal"] == goal.key
                    and event.get("experiment_id") in (None, experiment)
                ]
                after = [event for event in own if event_ms(event) >= entry]
                before = [event for event in own if entry - window <= event_ms(event) < entry]
                v = len(visits)
                c = len({event.get("visit_id", "_") for event in after})
                o = sum("value" in event for event in after)
                e = len(after)
                r = sum(event.get("value", 0.0) for event in after)
                if goal.cap is not None and goal.type is GoalType.COUNT:
                    e = min(e, int(goal.cap))
                if goal.cap is not None and goal.type is GoalType.REVENUE:
                    r = min(r, goal.cap)
                x = goal_value(goal, before) if window else 0.0
                y = goal_value(goal, after)
                row = {
                    "visitors": 1, "visits": v, "multiple_exposures": len(shown) > 1,
                    "conversions": bool(after), "converted_visits": c, "goal_events": e,
                    "goal_events_sum_squares": e * e, "orders": o, "revenue": r,
                    "revenue_sum_squares": r * r, "cohort_visits": v,
                    "cohort_visits_sum_squares": v * v, "converted_visits_sum_squares": c * c,
                    "visits_converted_visits_product": v * c,
                    "visits_goal_events_product": v * e, "visits_revenue_product": v * r,
                    "orders_sum_squares": o * o, "revenue_orders_product": r * o,
                    "covariate_sum": x, "covariate_sum_squares": x * x,
                    "covariate_product_sum": x * y,
                }  # fmt: skip
                assert set(row) == set(names)
                for name, value in row.items():
                    out[(experiment, goal.key, variant, name)] += value
    return out


def flat(found: dict[str, dict[str, dict[str, dict[str, Any]]]]) -> dict[tuple[str, ...], float]:
    return {
        (experiment, goal, variant, name): value
        for experiment, goals in found.items()
        for goal, variants in goals.items()
        for variant, row in variants.items()
        for name, value in row.items()
        if name != "variant_id"
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_same_log_gives_the_same_counts_whichever_topic_is_read_ahead(
    namespace: Namespace, redis: Redis, seed: int
) -> None:
    log = generated_log(seed)
    rng = random.Random(seed)
    tails = {partition: tail(partition, len(log[partition][ASSIGNMENTS])) for partition in log}
    with_tails = {
        partition: {**topics, ASSIGNMENTS: [*topics[ASSIGNMENTS], tails[partition][1]]}
        for partition, topics in log.items()
    }
    expected = expected_totals(with_tails)
    outcomes = []
    for run, ahead in enumerate([ASSIGNMENTS, CONVERSIONS, None, None]):
        sink = Sink(redis, namespace.settings, f"{namespace.settings.key_prefix}:r{run}")
        await sink.define()
        for partition, topics in log.items():
            for batch in interleaving(topics, rng, ahead):
                await sink.apply(partition, batch)
        # the clock-advancing tail, last in every order, settles every hold
        for partition in log:
            await sink.apply(partition, [tails[partition]])
        assert flat(await sink.totals()) == pytest.approx(expected, rel=1e-12, abs=1e-9)
        # Queries counters cannot answer read the visitors: the same rules, the same sums.
        assert flat(await sink.totals(scan=True)) == pytest.approx(expected, rel=1e-12, abs=1e-9)
        outcomes.append((await sink.results(), await sink.dead_letters()))
    first_results, first_dead = outcomes[0]
    assert first_dead == expected_dead(log)
    assert sum(first_dead.values()) > 5  # the log does exercise expiry
    for results, dead in outcomes[1:]:
        assert dead == first_dead
        assert results == first_results
    # the log does exercise the caps, later visits and the covariate
    for name in ("covariate_sum", "covariate_product_sum", "revenue_orders_product"):
        assert expected[("x1", "buy", "0", name)] + expected[("x1", "buy", "1", name)] > 0
    capped_views = {
        visitor
        for topics in log.values()
        for visitor, count in Counter(
            r.visitor for r in topics[CONVERSIONS] if r.event["goal"] == "view"
        ).items()
        if count > 2
    }
    assert capped_views


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


async def test_no_stored_offset_is_behind_a_consumer_that_applied_some(sink: Sink) -> None:
    # A replica promoted in the first seconds of a partition lost every offset of it:
    # the consumer applied up to offset 3, Redis holds none.
    visitor = "all-lost"
    partition = partition_for(visitor, PARTITIONS)
    reply = await sink.apply(
        partition,
        [(4, assignment(visitor, "x1", "0", DAY, PUBLISHED + 4))],
        expected={ASSIGNMENTS: 3},
    )
    assert reply == {"rollback": {ASSIGNMENTS: -1}}
    assert await sink.redis.hgetall(keys.offsets_key(sink.prefix, partition)) == {}
