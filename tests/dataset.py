"""Generated A/B traffic with every awkward case, and its expected results in plain Python.

The expectation is computed independently of the worker: straight from the generated
events, with the counting rules of DESIGN.md section 3, without Redis or Lua.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.ingestion.partitioning import partition_for

GOALS = ("purchase", "signup", "click")
DEVICES = ("mobile", "desktop", "tablet")
BROWSERS = ("chrome", "safari", "firefox", "edge")
OSES = ("windows", "macos", "ios", "android")
COUNTRIES = ("US", "CA", "DE", "FR", "BR", "JP")
SOURCES = ("direct", "search", "paid", "social", "email")
SDKS = ("js", "ios", "android")
TIMEZONES = ("Europe/Paris", "America/New_York")
HOLD = timedelta(hours=1)


def experiment_definitions() -> list[dict[str, Any]]:
    """Three live experiments, a draft and a completed one."""

    def definition(exp_id: str, status: str, weights: list[float]) -> dict[str, Any]:
        return {
            "id": exp_id,
            "project_key": "shop",
            "name": f"Experiment {exp_id}",
            "status": status,
            "variants": [
                {"id": str(i), "name": f"V{i}", "is_control": i == 0, "traffic_weight": w}
                for i, w in enumerate(weights)
            ],
            "goals": [
                {"key": "purchase", "name": "Purchase", "type": "revenue", "primary": True},
                {"key": "signup", "name": "Signup"},
                {"key": "click", "name": "Click", "type": "count"},
            ],
        }

    return [
        definition("exp-a", "live", [0.5, 0.5]),
        definition("exp-b", "live", [0.5, 0.25, 0.25]),
        definition("exp-c", "live", [0.34, 0.33, 0.33]),
        definition("exp-draft", "draft", [0.5, 0.5]),
        definition("exp-done", "completed", [0.5, 0.5]),
    ]


LIVE = ("exp-a", "exp-b", "exp-c")


@dataclass
class Dataset:
    """Messages in produce order, and what the worker must make of them."""

    definitions: list[dict[str, Any]]
    messages: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)
    assignments: list[dict[str, Any]] = field(default_factory=list)  # valid, first copies
    conversions: list[dict[str, Any]] = field(default_factory=list)  # valid, first copies
    expected_dead: Counter[str] = field(default_factory=Counter)

    def expected(self, experiment_id: str, goal: str) -> list[dict[str, Any]]:
        return expected_totals(self, experiment_id, goal)

    def publish_times(self, start_ms: int) -> list[int]:
        """A record timestamp (ms) for each message: one millisecond apart in produce
        order, and the clock-advancing tail of late assignments two hold times later,
        so that every orphan conversion's hold runs out (the hold is in publish time)."""
        hold_ms = int(HOLD.total_seconds() * 1000)
        return [
            start_ms + index + (2 * hold_ms if _is_late_tail(kind, value) else 0)
            for index, (kind, _, value) in enumerate(self.messages)
        ]


def _is_late_tail(kind: str, value: bytes) -> bool:
    return kind == "assignments" and b'"late-' in value


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def generate(
    seed: int,
    visitors: int,
    partitions: int,
    poison: int = 0,
    duplicate_rate: float = 0.05,
) -> Dataset:
    """A reproducible data set; `poison` adds that many unusable messages of every kind."""
    rng = random.Random(seed)
    definitions = experiment_definitions()
    weights = {d["id"]: [v["traffic_weight"] for v in d["variants"]] for d in definitions}
    data = Dataset(definitions)
    start = datetime(2026, 11, 20, 8, tzinfo=UTC)
    span_seconds = 6 * 3600
    assignments: list[tuple[datetime, dict[str, Any]]] = []
    conversions: list[tuple[datetime, dict[str, Any]]] = []
    serial = 0

    def next_id(kind: str) -> str:
        nonlocal serial
        serial += 1
        return f"{kind}-{seed}-{serial}"

    for number in range(visitors):
        visitor = f"vis-{seed}-{number}"
        context = {
            "device": rng.choice(DEVICES),
            "browser": rng.choice(BROWSERS),
            "os": rng.choice(OSES),
            "country": rng.choice(COUNTRIES),
            "source": rng.choice(SOURCES),
            "region": rng.choice(("north", "south")),
            "utm": {"campaign": rng.choice(("spring", "fall"))},
        }
        if rng.random() < 0.5:
            context["first_seen_at"] = _iso(start - timedelta(days=rng.choice((0, 3))))
        # From the visitor's number, not the random stream, so that adding them changed
        # no other value; some visitors have none (the "(not set)" segment).
        if number % 7:
            context["sdk"] = SDKS[number % len(SDKS)]
        if number % 5:
            context["timezone"] = TIMEZONES[number % len(TIMEZONES)]
        orphan = rng.random() < 0.05
        entered: dict[str, datetime] = {}
        if not orphan:
            for experiment in LIVE:
                if rng.random() < 0.6:
                    continue
                entry = start + timedelta(seconds=rng.randrange(span_seconds))
                variant = str(rng.choices(range(len(weights[experiment])), weights[experiment])[0])
                entered[experiment] = entry
                exposures = [(entry, variant, "s1")]
                if rng.random() < 0.3:  # a later visit
                    exposures.append(
                        (entry + timedelta(minutes=rng.randrange(5, 50)), variant, "s2")
                    )
                if rng.random() < 0.05:  # shown another variant later: a multiple exposure
                    other = str((int(variant) + 1) % len(weights[experiment]))
                    exposures.append((entry + timedelta(minutes=rng.randrange(1, 50)), other, "s3"))
                for moment, shown, visit in exposures:
                    event: dict[str, Any] = {
                        "event_id": next_id("a"),
                        "experiment_id": experiment,
                        "variant_id": shown,
                        "visitor_id": visitor,
                        "timestamp": _iso(moment),
                        "context": context,
                    }
                    if rng.random() < 0.9:
                        event["visit_id"] = visit
                    assignments.append((moment, event))
        converts = bool(entered) or rng.random() < 0.3
        for goal in GOALS if converts else ():
            for _ in range(rng.choice((0, 0, 0, 1, 1, 2, 3))):
                base_experiment = None
                if entered and rng.random() < 0.9:
                    base_experiment = rng.choice(list(entered))
                    base = entered[base_experiment]
                    # mostly after entry; sometimes minutes before it (not counted there)
                    offset = timedelta(minutes=rng.randrange(-20, 120))
                elif entered:
                    # any time after the first entry; never hours before an entry,
                    # where the hold time would decide (tested on its own)
                    base_experiment = min(entered, key=entered.__getitem__)
                    base = entered[base_experiment]
                    offset = timedelta(seconds=rng.randrange(span_seconds))
                else:
                    base = start + timedelta(seconds=rng.randrange(span_seconds))
                    offset = timedelta(0)
                moment = base + offset
                event = {
                    "event_id": next_id("c"),
                    "visitor_id": visitor,
                    "goal": goal,
                    "timestamp": _iso(moment),
                    "visit_id": rng.choice(("s1", "s2")),
                }
                if rng.random() < 0.1:
                    del event["visit_id"]
                if goal == "purchase":
                    event["value"] = round(rng.uniform(1, 200), 2)
                    event["currency"] = "USD"
                if base_experiment is not None and rng.random() < 0.1:
                    # restricted attribution: to the experiment the time is based on,
                    # or to one never entered
                    others = [e for e in LIVE if e not in entered]
                    event["experiment_id"] = rng.choice([base_experiment, *others])
                conversions.append((moment, event))

    # Late assignments advance every partition's hold clock past all held conversions.
    late = max(moment for moment, _ in assignments + conversions) + 2 * HOLD
    covered: set[int] = set()
    number = 0
    while len(covered) < partitions:
        visitor = f"late-{seed}-{number}"
        number += 1
        partition = partition_for(visitor, partitions)
        if partition in covered:
            continue
        covered.add(partition)
        assignments.append(
            (
                late,
                {
                    "event_id": next_id("a"),
                    "experiment_id": "exp-a",
                    "variant_id": "0",
                    "visitor_id": visitor,
                    "timestamp": _iso(late),
                },
            )
        )

    assignments.sort(key=lambda item: item[0])
    conversions.sort(key=lambda item: item[0])
    data.assignments = [event for _, event in assignments]
    data.conversions = [event for _, event in conversions]

    # Produce order: each topic in event-time order, interleaved at random; duplicates
    # follow their original or come again at the very end (re-sent at new offsets).
    stream: list[tuple[str, dict[str, Any]]] = []
    queues = {"assignments": list(data.assignments), "conversions": list(data.conversions)}
    resend: list[tuple[str, dict[str, Any]]] = []
    while queues["assignments"] or queues["conversions"]:
        kinds = [kind for kind, queue in queues.items() if queue]
        kind = rng.choice(kinds)
        event = queues[kind].pop(0)
        stream.append((kind, event))
        if rng.random() < duplicate_rate:
            if rng.random() < 0.5:
                stream.append((kind, event))
            else:
                resend.append((kind, event))
    late_tail = [item for item in stream if item[1]["timestamp"] == _iso(late)]
    stream = [item for item in stream if item[1]["timestamp"] != _iso(late)] + resend + late_tail
    for kind, event in stream:
        data.messages.append((kind, event["visitor_id"].encode(), json.dumps(event).encode()))

    _add_poison(data, rng, poison, start)
    _expect_orphans(data)
    return data


def _add_poison(data: Dataset, rng: random.Random, count: int, start: datetime) -> None:
    """Unusable messages of every kind, at random places among the valid ones."""
    kinds = [
        ("malformed_json", "conversions", lambda i: b"{not json " + str(i).encode()),
        ("malformed_json", "assignments", lambda i: b"\xff\xfe binary " + str(i).encode()),
        ("schema_violation", "assignments", lambda i: json.dumps({"event_id": f"p{i}", "visitor_id": "bad id!"}).encode()),
        ("schema_violation", "conversions", lambda i: json.dumps({"event_id": f"p{i}", "visitor_id": f"pv{i}", "goal": "purchase", "timestamp": "2026-11-20T08:00:00"}).encode()),
        ("unknown_experiment", "assignments", lambda i: _assignment(f"p{i}", "exp-nope", "0", f"pv{i}", start)),
        ("unknown_variant", "assignments", lambda i: _assignment(f"p{i}", "exp-a", "9", f"pv{i}", start)),
        ("experiment_not_live", "assignments", lambda i: _assignment(f"p{i}", "exp-draft", "0", f"pv{i}", start)),
        ("experiment_not_live", "assignments", lambda i: _assignment(f"p{i}", "exp-done", "1", f"pv{i}", start)),
    ]  # fmt: skip
    # keep the clock-advancing tail last: poison goes before it
    tail_start = len(data.messages) - sum(
        1 for kind, _, value in data.messages if _is_late_tail(kind, value)
    )
    for index in range(count):
        reason, topic, make = kinds[index % len(kinds)]
        position = rng.randrange(tail_start + 1)
        data.messages.insert(position, (topic, f"pv{index}".encode(), make(index)))
        tail_start += 1
        data.expected_dead[reason] += 1


def _assignment(
    event_id: str, experiment: str, variant: str, visitor: str, start: datetime
) -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "experiment_id": experiment,
            "variant_id": variant,
            "visitor_id": visitor,
            "timestamp": _iso(start),
        }
    ).encode()


def entries(data: Dataset) -> dict[tuple[str, str], dict[str, Any]]:
    """(visitor, experiment) -> the first assignment: first variant wins."""
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for event in data.assignments:
        first.setdefault((event["visitor_id"], event["experiment_id"]), event)
    return first


def _expect_orphans(data: Dataset) -> None:
    """Conversions that can count for no experiment the visitor ever entered."""
    entered = defaultdict(set)
    for visitor, experiment in entries(data):
        entered[visitor].add(experiment)
    for event in data.conversions:
        mine = entered.get(event["visitor_id"], set())
        restricted = event.get("experiment_id")
        if not mine or (restricted is not None and restricted not in mine):
            data.expected_dead["no_assignment"] += 1


def _ts(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["timestamp"])


def expected_totals(data: Dataset, experiment_id: str, goal: str) -> list[dict[str, Any]]:
    """Per-variant totals, control first, computed from the events alone."""
    definition = next(d for d in data.definitions if d["id"] == experiment_id)
    variant_ids = [v["id"] for v in definition["variants"]]
    rows = {
        variant: dict.fromkeys(
            ("visitors", "visits", "multiple_exposures", "conversions", "converted_visits",
             "goal_events", "goal_events_sum_squares", "orders"), 0,
        ) | {"variant_id": variant, "revenue": 0.0, "revenue_sum_squares": 0.0}
        for variant in variant_ids
    }  # fmt: skip
    first = {key: event for key, event in entries(data).items() if key[1] == experiment_id}
    for event in first.values():
        rows[event["variant_id"]]["visitors"] += 1
    visits: set[tuple[str, str]] = set()
    multiple: set[str] = set()
    for event in data.assignments:
        if event["experiment_id"] != experiment_id:
            continue
        entry = first[(event["visitor_id"], experiment_id)]
        visits.add((event["visitor_id"], event.get("visit_id", "_")))
        if event["variant_id"] != entry["variant_id"]:
            multiple.add(event["visitor_id"])
    for visitor, _ in visits:
        rows[first[(visitor, experiment_id)]["variant_id"]]["visits"] += 1
    for visitor in multiple:
        rows[first[(visitor, experiment_id)]["variant_id"]]["multiple_exposures"] += 1
    counts: Counter[str] = Counter()
    revenue: defaultdict[str, float] = defaultdict(float)
    converted_visits: set[tuple[str, str]] = set()
    for event in data.conversions:
        entered = first.get((event["visitor_id"], experiment_id))
        if entered is None or event["goal"] != goal or _ts(event) < _ts(entered):
            continue
        if event.get("experiment_id") not in (None, experiment_id):
            continue
        row = rows[entered["variant_id"]]
        visitor = event["visitor_id"]
        counts[visitor] += 1
        converted_visits.add((visitor, event.get("visit_id", "_")))
        row["goal_events"] += 1
        if "value" in event:
            row["orders"] += 1
            row["revenue"] += event["value"]
            revenue[visitor] += event["value"]
    for visitor, count in counts.items():
        row = rows[first[(visitor, experiment_id)]["variant_id"]]
        row["conversions"] += 1
        row["goal_events_sum_squares"] += count * count
        row["revenue_sum_squares"] += revenue[visitor] ** 2
    for visitor, _ in converted_visits:
        rows[first[(visitor, experiment_id)]["variant_id"]]["converted_visits"] += 1
    return [rows[variant] for variant in variant_ids]
