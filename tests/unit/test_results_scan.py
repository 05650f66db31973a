"""The per-visitor scan and the cell aggregation against a plain-Python computation.

The expectation below is written from the counting rules alone (DESIGN.md section 3,
the module docstring of ``worker.results.visitor_scan``), with loops and ``datetime``
instead of arrays and hour arithmetic, on small generated data full of edge cases:
events before entry, restricted to other experiments, without visit ids, visits in
later hours, missing context fields.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, cast

import pytest

from worker.events.segment_cell import SegmentCell
from worker.results.cell_aggregation import CellTable, aggregate_cells
from worker.results.planning import plan_query
from worker.results.query import ResultQuery
from worker.results.variant_totals import VariantTotals
from worker.results.visitor_scan import VisitorTable, scan_visitors
from worker.store.counter_reader import CellKey
from worker.store.visitor_reader import GoalEventRecord, VisitorState

EXPERIMENT = "exp"
VARIANTS = ["0", "1", "2"]
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
START = datetime(2026, 11, 20, tzinfo=UTC)
CELL = ("device", "browser", "os", "country", "visitor_type", "source")
MISSING = "(not set)"


# ---------------------------------------------------------------- generated state


def _maybe(rng: random.Random, value: Any, chance: float = 0.7) -> Any:
    return value if rng.random() < chance else None


def generate(seed: int, count: int) -> list[VisitorState]:
    """Visitors of EXPERIMENT with every awkward case the sink can produce."""
    rng = random.Random(seed)
    visitors: list[VisitorState] = []
    for number in range(count):
        entry_ms = int(START.timestamp() * 1000) + rng.randrange(-2 * DAY_MS, 3 * DAY_MS)
        entry_hour = entry_ms // HOUR_MS
        context: dict[str, Any] = {
            key: value
            for key, value in {
                "region": _maybe(rng, rng.choice(["north", "south"])),
                "city": _maybe(rng, rng.choice(["Paris", "Berlin", "Lyon"]), 0.5),
                "landing_page": _maybe(rng, rng.choice(["/", "/pricing", "/Pricing?x=1", "/blog"])),
                "ref_page": _maybe(rng, rng.choice(["https://google.com/q", "https://t.co/a"])),
                "user_agent": _maybe(rng, rng.choice(["Mozilla/5.0 Chrome", "curl/8"])),
                "first_seen_at": _maybe(
                    rng, (START - timedelta(days=rng.choice([0, 2, 9]))).isoformat()
                ),
                "utm": _maybe(
                    rng,
                    {
                        k: v
                        for k, v in {
                            "campaign": rng.choice(["spring", "fall"]),
                            "source": _maybe(rng, rng.choice(["news", "ads"])),
                            "medium": _maybe(rng, "cpc", 0.5),
                            "content": _maybe(rng, rng.choice(["a", "b"]), 0.5),
                            "term": _maybe(rng, "shoes", 0.3),
                        }.items()
                        if v is not None
                    },
                ),
                "query_params": _maybe(rng, {"ref": rng.choice(["a", "b"])}, 0.5),
                "attributes": _maybe(
                    rng,
                    {
                        "plan": rng.choice(["pro", "free"]),
                        "age": rng.randrange(18, 70),
                        "signup": (START - timedelta(days=rng.randrange(0, 60))).isoformat(),
                    },
                    0.6,
                ),
            }.items()
            if value is not None
        }
        visits = {"_" if rng.random() < 0.3 else "v0": entry_hour}
        for extra in range(rng.choice([0, 0, 1, 2])):
            visits[f"v{extra + 1}"] = entry_hour + rng.choice([0, 3, 20, 30, 70])
        state: VisitorState = {
            "visitor_id": f"visitor-{seed}-{number}",
            "variant": rng.choice(VARIANTS + ["retired"] * (number % 50 == 0)),
            "entry_ms": entry_ms,
            "cell": "|".join(
                (
                    rng.choice(["mobile", "desktop", "tablet"]),
                    rng.choice(["chrome", "safari", "firefox"]),
                    rng.choice(["ios", "android", "windows"]),
                    rng.choice(["US", "CA", "DE", "ZZ"]),
                    rng.choice(["new", "returning"]),
                    rng.choice(["direct", "search", "paid", "email"]),
                )
            ),
            "context": context,
            "visits": visits,
            "multiple_exposure": rng.random() < 0.1,
            "goals": {
                "buy": [
                    _event(rng, entry_ms, list(visits), revenue=True)
                    for _ in range(rng.choice([0, 0, 1, 2, 4]))
                ],
                "click": [
                    _event(rng, entry_ms, list(visits), revenue=False)
                    for _ in range(rng.choice([0, 1, 3]))
                ],
            },
        }
        if number % 7 == 0:  # older sink state: no visits known, no context
            del state["visits"]
            del state["context"]
        visitors.append(state)
    return visitors


def _event(rng: random.Random, entry_ms: int, visits: list[str], revenue: bool) -> GoalEventRecord:
    record: dict[str, Any] = {"t": entry_ms + rng.randrange(-DAY_MS, 9 * DAY_MS)}
    if revenue and rng.random() < 0.7:
        record["v"] = repr(rng.randrange(-4, 400) / 4)  # exact in binary: sums are exact
    restricted = rng.random()
    if restricted < 0.1:
        record["x"] = "other"
    elif restricted < 0.2:
        record["x"] = EXPERIMENT
    if rng.random() < 0.8:
        record["s"] = rng.choice(visits + ["later"])
    if rng.random() < 0.6:
        record["a"] = {"plan": rng.choice(["pro", "free"]), "amount": rng.randrange(0, 30)}
    if rng.random() < 0.5:
        record["c"] = rng.choice(["USD", "EUR"])
    return cast(GoalEventRecord, record)


VISITORS = generate(seed=11, count=700)
TABLE = VisitorTable.build(EXPERIMENT, VISITORS)


# ------------------------------------------------------- the independent expectation


def _local(hour: int, tz: int) -> datetime:
    return datetime.fromtimestamp(hour * 3600, timezone(timedelta(hours=tz)))


def _in_dates(hour: int, query: ResultQuery) -> bool:
    day = _local(hour, query.tz).date()
    return (query.start_date is None or day >= query.start_date) and (
        query.end_date is None or day <= query.end_date
    )


def _field(visitor: Mapping[str, Any], name: str, key: str | None, hour: int, tz: int) -> Any:
    context = visitor.get("context") or {}
    cell = dict(zip(CELL, visitor["cell"].split("|"), strict=True))
    if name in cell:
        return cell[name]
    if name == "day_of_week":
        return _local(hour, tz).weekday()
    if name == "hour_of_day":
        return _local(hour, tz).hour
    if name == "visitor_id":
        return visitor["visitor_id"]
    if name.startswith("utm_"):
        return (context.get("utm") or {}).get(name[4:])
    if name == "query_param":
        return (context.get("query_params") or {}).get(key)
    if name == "attribute":
        return (context.get("attributes") or {}).get(key)
    return context.get(name)


def _number(value: Any) -> float | None:
    try:
        return None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def _holds(actual: Any, operator: str, target: Any, entry_ms: int = 0) -> bool:
    present = actual is not None and actual != ""
    if operator == "exists":
        return present
    if operator == "not_exists":
        return not present
    if operator in ("==", "!="):
        same = present and (
            _number(actual) == _number(target)
            if _number(actual) is not None and _number(target) is not None
            else str(actual).lower() == str(target).lower()
        )
        return same if operator == "==" else not same
    if operator in ("contains", "not_contains"):
        inside = present and str(target).lower() in str(actual).lower()
        return inside if operator == "contains" else not inside
    if not present:
        return False
    if operator.startswith("days_"):
        moment = datetime.fromisoformat(actual)
        left: float | None = (entry_ms / 1000 - moment.timestamp()) / 86400
        operator = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[operator[5:]]
    else:
        left = _number(actual)
    if left is None:
        return False
    right = float(target)
    return {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}[
        operator
    ]


def _in_segment(visitor: Mapping[str, Any], hour: int, query: ResultQuery) -> bool:
    return all(
        any(
            _holds(
                _field(visitor, c.field, c.key, hour, query.tz),
                c.operator,
                c.value,
                visitor["entry_ms"],
            )
            for c in group
        )
        for group in query.segment
    )


def _event_matches(event: Mapping[str, Any], query: ResultQuery) -> bool:
    if not query.event_filter:
        return True

    def attribute(key: str) -> Any:
        value = (event.get("a") or {}).get(key)
        if value is None:
            value = {"revenue": event.get("v"), "currency": event.get("c")}.get(key)
        return value

    return any(
        all(_holds(attribute(c.key), c.operator, c.value) for c in group)
        for group in query.event_filter
    )


def _label(visitor: Mapping[str, Any], hour: int, query: ResultQuery) -> str:
    if query.breakdown is None:
        return ""
    value = _field(visitor, query.breakdown, None, hour, query.tz)
    return MISSING if value is None or value == "" else str(value)


def expected(
    visitors: Sequence[Mapping[str, Any]], query: ResultQuery, goal: str
) -> dict[str, Any]:
    """QueryTotals.as_dict() of the query, by loops over visitors and their events."""
    rows: dict[str, dict[str, dict[str, float]]] = defaultdict(
        lambda: {v: defaultdict(float) for v in VARIANTS}
    )
    for visitor in visitors:
        if visitor["variant"] not in VARIANTS:
            continue
        entry_hour = visitor["entry_ms"] // HOUR_MS
        for hour in (visitor.get("visits") or {"_": entry_hour}).values():
            if _in_dates(hour, query) and _in_segment(visitor, hour, query):
                rows[_label(visitor, hour, query)][visitor["variant"]]["visits"] += 1
        if not (_in_dates(entry_hour, query) and _in_segment(visitor, entry_hour, query)):
            continue
        row = rows[_label(visitor, entry_hour, query)][visitor["variant"]]
        row["visitors"] += 1
        row["multiple_exposures"] += visitor.get("multiple_exposure", False)
        counted = [
            event
            for event in visitor.get("goals", {}).get(goal, [])
            if event["t"] >= visitor["entry_ms"]
            and event.get("x") in (None, EXPERIMENT)
            and (
                query.timeframe_days is None
                or event["t"] < visitor["entry_ms"] + query.timeframe_days * DAY_MS
            )
            and _event_matches(event, query)
        ]
        revenue = sum(float(event["v"]) for event in counted if "v" in event)
        orders = sum("v" in event for event in counted)
        row["goal_events"] += len(counted)
        row["goal_events_sum_squares"] += len(counted) ** 2
        row["orders"] += orders
        row["revenue"] += revenue
        row["revenue_sum_squares"] += revenue**2
        converted_visits = 0
        if len(counted) >= query.min_count:
            row["conversions"] += 1
            converted_visits = len({event.get("s", "_") for event in counted})
            row["converted_visits"] += converted_visits
        # The clustered analyses' per-visitor sums take every visit of the visitor.
        visits = len(visitor.get("visits") or {"_": entry_hour})
        row["cohort_visits"] += visits
        row["cohort_visits_sum_squares"] += visits**2
        row["converted_visits_sum_squares"] += converted_visits**2
        row["visits_converted_visits_product"] += visits * converted_visits
        row["visits_goal_events_product"] += visits * len(counted)
        row["visits_revenue_product"] += visits * revenue
        row["orders_sum_squares"] += orders**2
        row["revenue_orders_product"] += revenue * orders

    def totals(per_variant: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
        result = []
        for variant in VARIANTS:
            row: dict[str, Any] = {"variant_id": variant}
            for f in fields(VariantTotals):
                if f.name != "variant_id":
                    value = per_variant[variant][f.name]
                    row[f.name] = value if f.type == "float" else int(value)
            result.append(row)
        return result

    overall = {
        v: {
            name: sum(rows[label][v][name] for label in rows)
            for name in {n for label in rows for n in rows[label][v]}
        }
        for v in VARIANTS
    }
    overall = {v: defaultdict(float, overall[v]) for v in VARIANTS}
    segments = {
        label: totals(per_variant)
        for label, per_variant in rows.items()
        if any(per_variant[v]["visitors"] or per_variant[v]["visits"] for v in VARIANTS)
    }
    return {
        "variants": totals(overall),
        "breakdown": query.breakdown,
        "segments": segments if query.breakdown else {},
    }


# ---------------------------------------------------------------------- the cases


def c(field: str, operator: str, value: Any = None, key: str | None = None) -> dict[str, Any]:
    return {"field": field, "operator": operator, "value": value, "key": key}


def q(**fields_: Any) -> ResultQuery:
    return ResultQuery.model_validate(fields_)


QUERIES: dict[str, ResultQuery] = {
    "default": q(),
    "start only": q(start_date="2026-11-20"),
    "end only": q(end_date="2026-11-19"),
    "one day": q(start_date="2026-11-20", end_date="2026-11-20"),
    "one day tz+5": q(start_date="2026-11-20", end_date="2026-11-20", tz=5),
    "one day tz-7": q(start_date="2026-11-20", end_date="2026-11-20", tz=-7),
    "range tz+14": q(start_date="2026-11-19", end_date="2026-11-21", tz=14),
    "range tz-12": q(start_date="2026-11-18", end_date="2026-11-20", tz=-12),
    "device": q(segment=[[c("device", "==", "mobile")]]),
    "case-insensitive": q(segment=[[c("device", "==", "MOBILE")], [c("country", "==", "us")]]),
    "Mida example: desktop and (US or CA) and chrome": q(
        segment=[
            [c("device", "==", "desktop")],
            [c("country", "==", "US"), c("country", "==", "CA")],
            [c("browser", "==", "chrome")],
        ]
    ),
    "or across fields": q(segment=[[c("device", "==", "tablet"), c("source", "==", "paid")]]),
    "not equal": q(segment=[[c("country", "!=", "US")], [c("os", "!=", "ios")]]),
    "contains on cells": q(segment=[[c("browser", "contains", "fire")]]),
    "not contains on cells": q(segment=[[c("source", "not_contains", "e")]]),
    "day of week": q(segment=[[c("day_of_week", "==", 4), c("day_of_week", "==", 6)]], tz=3),
    "hour of day": q(segment=[[c("hour_of_day", ">=", 12)], [c("hour_of_day", "<", 20)]], tz=-4),
    "region exists": q(segment=[[c("region", "exists")]]),
    "city missing": q(segment=[[c("city", "not_exists")]]),
    "city not Paris": q(segment=[[c("city", "!=", "paris")]]),
    "landing contains": q(segment=[[c("landing_page", "contains", "pricing")]]),
    "landing not contains": q(segment=[[c("landing_page", "not_contains", "pricing")]]),
    "ref page": q(segment=[[c("ref_page", "contains", "google")]]),
    "user agent": q(segment=[[c("user_agent", "contains", "chrome")]]),
    "utm": q(segment=[[c("utm_campaign", "==", "spring")], [c("utm_source", "exists")]]),
    "query param": q(segment=[[c("query_param", "==", "a", key="ref")]]),
    "attribute number": q(segment=[[c("attribute", ">", 40, key="age")]]),
    "attribute text and number": q(
        segment=[[c("attribute", "==", "pro", key="plan")], [c("attribute", "<=", 30, key="age")]]
    ),
    "attribute days": q(segment=[[c("attribute", "days_gt", 30, key="signup")]]),
    "first seen days": q(segment=[[c("first_seen_at", "days_lte", 2)]]),
    "visitor id": q(segment=[[c("visitor_id", "contains", "-11-1")]]),
    # Ids of this module's data (visitor-11-*) and of the integration tests' (s5-v*), in
    # another case; and every id but one.
    "visitor ids in another case": q(
        segment=[
            [
                c("visitor_id", "==", "VISITOR-11-3"),
                c("visitor_id", "==", "S5-V3"),
                c("visitor_id", "contains", "-V4"),
                c("visitor_id", "contains", "R-11-9"),
            ]
        ]
    ),
    # Only equalities: the store looks these ids up instead of reading every id.
    "visitor ids looked up": q(
        segment=[
            [
                c("visitor_id", "==", "VISITOR-11-3"),
                c("visitor_id", "==", "S5-v3"),
                c("visitor_id", "==", "s7-V12"),
                c("visitor_id", "==", "s5-v999"),
            ]
        ]
    ),
    "visitor ids looked up, by device": q(
        segment=[[c("visitor_id", "==", "visitor-11-7"), c("visitor_id", "==", "s5-V8")]],
        breakdown="device",
    ),
    "visitor id looked up or a cell": q(
        segment=[
            [c("visitor_id", "==", "VISITOR-11-2"), c("device", "==", "mobile")],
            [c("visitor_id", "==", "s7-v3"), c("city", "exists")],
        ]
    ),
    "visitor id not one": q(
        segment=[[c("visitor_id", "!=", "visitor-11-5")], [c("visitor_id", "!=", "s5-v5")]]
    ),
    "visitor id not containing": q(
        segment=[
            [c("visitor_id", "not_contains", "-11-1")],
            [c("visitor_id", "not_contains", "-V1")],
        ]
    ),
    "mixed cell and context": q(
        segment=[
            [c("device", "==", "mobile"), c("region", "==", "north")],
            [c("utm_medium", "not_exists")],
        ],
        start_date="2026-11-19",
        tz=2,
    ),
    "min_count 2": q(min_count=2),
    "min_count 3 filtered": q(min_count=3, segment=[[c("device", "!=", "tablet")]]),
    "timeframe 1 day": q(timeframe_days=1),
    "timeframe 3 days with dates": q(
        timeframe_days=3, start_date="2026-11-19", end_date="2026-11-21"
    ),
    "event attribute": q(event_filter=[[{"key": "plan", "operator": "==", "value": "pro"}]]),
    "event attributes OR of ANDs": q(
        event_filter=[
            [
                {"key": "plan", "operator": "==", "value": "free"},
                {"key": "amount", "operator": ">", "value": 10},
            ],
            [{"key": "plan", "operator": "not_exists"}],
        ]
    ),
    "Mida example (revenue > 50 and currency USD)": q(
        event_filter=[
            [
                {"key": "revenue", "operator": ">", "value": 50},
                {"key": "currency", "operator": "==", "value": "USD"},
            ]
        ]
    ),
    "event attribute with min_count": q(
        min_count=2, event_filter=[[{"key": "amount", "operator": "<", "value": 20}]]
    ),
}

DIMENSIONS = [
    "device", "browser", "os", "country", "visitor_type", "source", "day_of_week",
    "hour_of_day", "region", "city", "landing_page", "ref_page", "utm_campaign",
    "utm_source", "utm_medium", "utm_content", "utm_term",
]  # fmt: skip
for dimension in DIMENSIONS:
    QUERIES[f"breakdown {dimension}"] = q(breakdown=dimension, tz=-3)
QUERIES["breakdown user_type alias, filtered, dated"] = q(
    breakdown="user_type", segment=[[c("region", "exists")]], start_date="2026-11-19", tz=9
)
QUERIES["breakdown hour_of_day, min_count, timeframe"] = q(
    breakdown="hour_of_day", min_count=2, timeframe_days=2, tz=5
)


@pytest.mark.parametrize("goal", ["buy", "click"])
@pytest.mark.parametrize("name", list(QUERIES))
def test_scan_matches_the_plain_computation(name: str, goal: str) -> None:
    query = QUERIES[name]
    result = scan_visitors(TABLE, query, goal, VARIANTS).as_dict()
    assert result == expected(VISITORS, query, goal)


def counters_of(visitors: Sequence[Mapping[str, Any]]) -> dict[CellKey, dict[str, float]]:
    """What the Lua sink writes for these visitors, summed over partitions."""
    cells: dict[CellKey, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for visitor in visitors:
        entry_hour = visitor["entry_ms"] // HOUR_MS
        cell = SegmentCell.parse(visitor["cell"])

        def at(
            hour: int, variant: str = visitor["variant"], cell: SegmentCell = cell
        ) -> dict[str, float]:
            return cells[CellKey(variant, hour, cell)]

        at(entry_hour)["n"] += 1
        if visitor.get("multiple_exposure"):
            at(entry_hour)["me"] += 1
        visits = (visitor.get("visits") or {"_": entry_hour}).values()
        for hour in visits:
            at(hour)["visits"] += 1
        at(entry_hour)["vc"] += len(visits)
        at(entry_hour)["vc2"] += len(visits) ** 2
        for goal, events in visitor.get("goals", {}).items():
            counted = [
                e
                for e in events
                if e["t"] >= visitor["entry_ms"] and e.get("x") in (None, EXPERIMENT)
            ]
            if not counted:
                continue
            revenue = sum(float(e["v"]) for e in counted if "v" in e)
            orders = sum("v" in e for e in counted)
            converted_visits = len({e.get("s", "_") for e in counted})
            row = at(entry_hour)
            row[f"g:{goal}:cv"] += 1
            row[f"g:{goal}:cvis"] += converted_visits
            row[f"g:{goal}:ev"] += len(counted)
            row[f"g:{goal}:ev2"] += len(counted) ** 2
            row[f"g:{goal}:ord"] += orders
            row[f"g:{goal}:rev"] += revenue
            row[f"g:{goal}:rev2"] += revenue**2
            row[f"g:{goal}:cvis2"] += converted_visits**2
            row[f"g:{goal}:vcvis"] += len(visits) * converted_visits
            row[f"g:{goal}:vev"] += len(visits) * len(counted)
            row[f"g:{goal}:vrev"] += len(visits) * revenue
            row[f"g:{goal}:ord2"] += orders**2
            row[f"g:{goal}:revord"] += revenue * orders
    return cells


CELLS = CellTable.from_counters(counters_of(VISITORS))
COUNTER_QUERIES = [
    name for name, query in QUERIES.items() if plan_query(query).source == "counters"
]


def test_the_planner_sends_cell_and_time_queries_to_the_counters() -> None:
    assert len(COUNTER_QUERIES) >= 20
    assert "utm" not in COUNTER_QUERIES and "min_count 2" not in COUNTER_QUERIES


@pytest.mark.parametrize("goal", ["buy", "click"])
@pytest.mark.parametrize("name", COUNTER_QUERIES)
def test_cells_and_scan_agree_on_counter_queries(name: str, goal: str) -> None:
    query = QUERIES[name]
    from_cells = aggregate_cells(CELLS, query, goal, VARIANTS)
    from_scan = scan_visitors(TABLE, query, goal, VARIANTS)
    assert from_cells == from_scan
    assert list((from_cells.segments or {}).keys()) == list((from_scan.segments or {}).keys())


@pytest.mark.parametrize("seed", range(5))
def test_cells_and_scan_agree_on_other_generated_data(seed: int) -> None:
    visitors = generate(seed=100 + seed, count=300)
    table = VisitorTable.build(EXPERIMENT, visitors)
    cells = CellTable.from_counters(counters_of(visitors))
    rng = random.Random(seed)
    for _ in range(10):
        query = q(
            start_date=rng.choice([None, "2026-11-19", "2026-11-20"]),
            end_date=rng.choice([None, "2026-11-21"]),
            tz=rng.randrange(-12, 15),
            segment=rng.choice([[], [[c("device", "!=", "mobile"), c("country", "==", "DE")]]]),
            breakdown=rng.choice([None, "device", "day_of_week", "hour_of_day", "source"]),
        )
        for goal in ("buy", "click"):
            assert aggregate_cells(cells, query, goal, VARIANTS) == scan_visitors(
                table, query, goal, VARIANTS
            )


def test_segments_are_ordered_numerically_for_time_and_missing_last() -> None:
    hours = scan_visitors(TABLE, q(breakdown="hour_of_day"), "buy", VARIANTS).segments or {}
    assert list(hours) == [str(h) for h in range(24) if str(h) in hours]
    cities = scan_visitors(TABLE, q(breakdown="city"), "buy", VARIANTS).segments or {}
    assert list(cities) == ["Berlin", "Lyon", "Paris", MISSING]


def test_counters_refuse_what_they_cannot_answer() -> None:
    with pytest.raises(KeyError, match="visitor scan"):
        aggregate_cells(CELLS, q(segment=[[c("region", "exists")]]), "buy", VARIANTS)


def test_variants_outside_the_order_are_left_out_and_missing_ones_are_zero() -> None:
    result = scan_visitors(TABLE, q(), "buy", ["2", "0", "new"])
    assert [row.variant_id for row in result.variants] == ["2", "0", "new"]
    assert result.variants[2] == VariantTotals("new")
    everything = scan_visitors(TABLE, q(), "buy", VARIANTS)
    assert result.variants[0] == everything.variants[2]


def test_events_after_a_completed_experiments_end_are_not_counted() -> None:
    end_ms = int(date(2026, 11, 21).toordinal() - date(1970, 1, 1).toordinal()) * DAY_MS
    ended = VisitorTable.build(EXPERIMENT, VISITORS, counted_before_ms=end_ms)
    kept = [
        {
            **v,
            "goals": {
                g: [e for e in evs if e["t"] < end_ms] for g, evs in v.get("goals", {}).items()
            },
        }
        for v in VISITORS
    ]
    assert scan_visitors(ended, q(), "buy", VARIANTS).as_dict() == expected(kept, q(), "buy")


def _at(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def test_boundaries_are_exact() -> None:
    """Entry at local midnight, an event at the entry instant and one at entry + N days."""
    midnight_tz2 = datetime(2026, 11, 20, tzinfo=timezone(timedelta(hours=2)))
    entry = _at(midnight_tz2)
    visitors: list[VisitorState] = [
        {
            "visitor_id": "edge",
            "variant": "0",
            "entry_ms": entry,
            "cell": "mobile|chrome|ios|US|new|direct",
            "goals": {"buy": [{"t": entry}, {"t": entry + DAY_MS, "v": "2.5"}, {"t": entry - 1}]},
        },
        {
            "visitor_id": "before",
            "variant": "0",
            "entry_ms": entry - 1,
            "cell": "mobile|chrome|ios|US|new|direct",
        },
    ]
    table = VisitorTable.build(EXPERIMENT, visitors)

    def totals(**fields_: Any) -> VariantTotals:
        return scan_visitors(table, q(**fields_), "buy", VARIANTS).variants[0]

    on_the_day = totals(start_date="2026-11-20", tz=2)
    assert (on_the_day.visitors, on_the_day.goal_events, on_the_day.revenue) == (1, 2, 2.5)
    assert totals(end_date="2026-11-19", tz=2).visitors == 1  # the one a millisecond before
    assert totals(start_date="2026-11-20", tz=1).visitors == 0  # 23:00 the day before
    assert totals(end_date="2026-11-19", tz=3).visitors == 0
    within_a_day = totals(timeframe_days=1)
    assert (within_a_day.goal_events, within_a_day.orders) == (1, 0)
    assert totals(min_count=2).conversions == 1 and totals(min_count=3).conversions == 0
