"""Results query benchmark: counters vs. per-visitor scan on synthetic data, in process.

    .venv/bin/python bench/results_query.py [--visitors 1000000] [--runs 5] [--seed 7]

Generates one experiment (4 variants, 3 goals, entries spread over 30 days) as the
read path would see it, without Kafka or Redis:

* per-visitor states, shaped like ``visitor_reader.read_visitor_states`` returns them
  (cell text, extended context with region/city, visits, goal event records, some
  events before entry or restricted to another experiment, which do not count);
* the counter cells of the same visitors, shaped like ``counter_reader.read_counters``
  returns them (``CellKey`` → metric → float), with the metrics ``apply_batch.lua``
  keeps: ``n``, ``visits``, ``me`` and ``g:{goal}:cv/cvis/ev/ev2/ord/rev/rev2``.

Both paths must answer the default query alike; the script checks that before timing.
Then it times (median of ``--runs`` runs, ``time.perf_counter``) building each table
and a set of queries on each path. Tables are built once per request in the service,
and ``VisitorTable`` builds columns and flattened goal events on first use, so the
"first ms" column reports one run on a table with those caches empty; "median ms" is
the median of the runs that follow it, on the warmed table.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.events.experiment import ExperimentDefinition  # noqa: E402
from worker.results.cell_aggregation import CellTable, aggregate_cells  # noqa: E402
from worker.results.experiment_result import result_document  # noqa: E402
from worker.results.planning import plan_query  # noqa: E402
from worker.results.presets import preset_filter  # noqa: E402
from worker.results.query import Condition, EventCondition, ResultQuery  # noqa: E402
from worker.results.query_totals import QueryTotals  # noqa: E402
from worker.results.visitor_scan import VisitorTable, scan_visitors  # noqa: E402
from worker.store.counter_reader import CellKey  # noqa: E402
from worker.store.visitor_reader import GoalEventRecord, VisitorState  # noqa: E402

EXPERIMENT = "bench-results"
VARIANTS = ("a", "b", "c", "d")
GOALS = ("purchase", "signup", "click")  # revenue (primary), conversion, count
MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000
DAYS = 30
START_MS = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp() * 1000)

# Segment-cell dimensions (CELL_FIELDS order) with skewed, roughly realistic shares.
DIMENSIONS: tuple[tuple[tuple[str, ...], tuple[float, ...]], ...] = (
    (("mobile", "desktop", "tablet", "other"), (0.55, 0.38, 0.06, 0.01)),
    (
        ("chrome", "safari", "firefox", "edge", "samsung", "opera", "other"),
        (0.55, 0.25, 0.06, 0.06, 0.04, 0.02, 0.02),
    ),
    (("windows", "macos", "ios", "android", "linux", "other"), (0.3, 0.12, 0.25, 0.28, 0.03, 0.02)),
    (
        ("US", "CA", "GB", "DE", "FR", "BR", "IN", "JP", "AU", "ZZ"),
        (0.40, 0.07, 0.10, 0.08, 0.06, 0.08, 0.08, 0.05, 0.04, 0.04),
    ),
    (("new", "returning"), (0.7, 0.3)),
    (
        ("direct", "search", "paid", "social", "referral", "email", "other"),
        (0.30, 0.30, 0.15, 0.10, 0.08, 0.05, 0.02),
    ),
)
COUNTRY_DIMENSION = 3
CITIES_PER_COUNTRY = 40
REGIONS_PER_COUNTRY = 12
LANDING_PAGES = (
    ("/", "/pricing", "/product", "/blog/post", "/signup"),
    (0.4, 0.2, 0.2, 0.15, 0.05),
)

# goal → (conversion probability per variant, geometric p of events per converter)
GOAL_SHAPES = {
    "purchase": ((0.040, 0.043, 0.046, 0.038), 0.75),
    "signup": ((0.100, 0.102, 0.098, 0.105), 0.9),
    "click": ((0.350, 0.360, 0.340, 0.355), 0.35),
}

Ints = npt.NDArray[np.int64]
Counters = dict[CellKey, dict[str, float]]


def progress(started: float, message: str) -> None:
    print(f"  [{time.perf_counter() - started:6.1f}s] {message}", flush=True)


def definition() -> ExperimentDefinition:
    return ExperimentDefinition.model_validate(
        {
            "id": EXPERIMENT,
            "project_key": "bench",
            "name": "Results query benchmark",
            "status": "live",
            "variants": [
                {"id": variant, "name": variant.upper(), "is_control": i == 0}
                for i, variant in enumerate(VARIANTS)
            ],
            "goals": [
                {"key": "purchase", "name": "Purchase", "type": "revenue", "primary": True},
                {"key": "signup", "name": "Signup", "type": "conversion"},
                {"key": "click", "name": "Click", "type": "count"},
            ],
        }
    )


@dataclasses.dataclass
class GoalData:
    """The generated events of one goal, one row per event, sorted by visitor."""

    visitor: Ints
    time_ms: Ints
    visit: Ints  # index of the visitor's visit, -1 without a visit id
    value: npt.NDArray[np.float64]  # NaN without revenue
    restricted_other: npt.NDArray[np.bool_]  # "x" names another experiment
    restricted_self: npt.NDArray[np.bool_]  # "x" names this experiment
    items: Ints


def generate(visitors: int, seed: int) -> tuple[list[VisitorState], Counters]:
    """Visitor states and the counter cells the sink would have written for them."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    n = visitors
    print(f"generating {n:,} visitors (seed {seed})", flush=True)

    variant = rng.integers(0, len(VARIANTS), n)
    entry_ms = START_MS + rng.integers(0, DAYS * MS_PER_DAY, n)
    hour = entry_ms // MS_PER_HOUR
    parts = [rng.choice(len(values), n, p=shares) for values, shares in DIMENSIONS]
    cell_code = np.zeros(n, dtype=np.int64)
    for (values, _), part in zip(DIMENSIONS, parts, strict=True):
        cell_code = cell_code * len(values) + part
    distinct_cells, cell_index = np.unique(cell_code, return_inverse=True)
    cell_parts = [_decode_cell(int(code)) for code in distinct_cells]
    cell_texts = ["|".join(values) for values in cell_parts]
    multiple = rng.random(n) < 0.01
    extra_visits = rng.choice(4, n, p=(0.7, 0.18, 0.08, 0.04))
    visit_counts = extra_visits + 1
    visit_visitor = np.repeat(np.arange(n, dtype=np.int64), visit_counts)
    visit_hours = hour[visit_visitor] + rng.integers(1, 14 * 24, visit_visitor.size)
    first_visit = np.concatenate(([0], np.cumsum(visit_counts)[:-1]))
    visit_hours[first_visit] = hour  # the entry is the first visit
    progress(
        started, f"columns: {len(distinct_cells):,} segment cells, {visit_hours.size:,} visits"
    )

    goals = {goal: _goal_events(rng, goal, variant, entry_ms, visit_counts) for goal in GOALS}
    progress(
        started, "goal events: " + ", ".join(f"{g} {d.visitor.size:,}" for g, d in goals.items())
    )

    states = _states(
        rng,
        parts[COUNTRY_DIMENSION],
        variant,
        entry_ms,
        cell_index,
        cell_texts,
        multiple,
        visit_counts,
        visit_hours,
        goals,
        started,
    )
    progress(started, f"visitor states: {len(states):,}")

    counters = _counters(
        variant, entry_ms, cell_index, cell_parts, multiple, visit_visitor, visit_hours, goals
    )
    fields = sum(len(metrics) for metrics in counters.values())
    progress(started, f"counter cells: {len(counters):,} cells, {fields:,} counter fields")
    return states, counters


def _decode_cell(code: int) -> tuple[str, ...]:
    values: list[str] = []
    for dimension, _ in reversed(DIMENSIONS):
        code, position = divmod(code, len(dimension))
        values.append(dimension[position])
    return tuple(reversed(values))


def _goal_events(
    rng: np.random.Generator, goal: str, variant: Ints, entry_ms: Ints, visit_counts: Ints
) -> GoalData:
    rates, repeat_p = GOAL_SHAPES[goal]
    n = variant.size
    converts = rng.random(n) < np.asarray(rates)[variant]
    counts = np.where(converts, rng.geometric(repeat_p, n), 0)
    visitor = np.repeat(np.arange(n, dtype=np.int64), counts)
    size = visitor.size
    # Most events within days of entry (timeframe_days cuts some); 3 % before entry.
    time_ms = entry_ms[visitor] + rng.exponential(3 * MS_PER_DAY, size).astype(np.int64)
    before = rng.random(size) < 0.03
    time_ms[before] = entry_ms[visitor[before]] - rng.integers(
        1, 6 * MS_PER_HOUR, int(before.sum())
    )
    visit = (rng.random(size) * visit_counts[visitor]).astype(np.int64)
    visit[rng.random(size) < 0.05] = -1
    restriction = rng.random(size)
    if goal == "purchase":
        value = np.round(rng.lognormal(3.8, 0.8, size), 2)  # ~16 % above 100
        items = rng.integers(1, 6, size)
    else:
        value = np.full(size, np.nan)
        items = np.zeros(size, dtype=np.int64)
    return GoalData(
        visitor=visitor,
        time_ms=time_ms,
        visit=visit,
        value=value,
        restricted_other=restriction < 0.02,
        restricted_self=(restriction >= 0.02) & (restriction < 0.03),
        items=items,
    )


def _states(
    rng: np.random.Generator,
    country: Ints,
    variant: Ints,
    entry_ms: Ints,
    cell_index: Ints,
    cell_texts: list[str],
    multiple: npt.NDArray[np.bool_],
    visit_counts: Ints,
    visit_hours: Ints,
    goals: dict[str, GoalData],
    started: float,
) -> list[VisitorState]:
    n = variant.size
    countries = DIMENSIONS[COUNTRY_DIMENSION][0]
    weights = 1.0 / np.arange(1, CITIES_PER_COUNTRY + 1)
    city = rng.choice(CITIES_PER_COUNTRY, n, p=weights / weights.sum())
    city_names = [f"{c}-City{k:02d}" for c in countries for k in range(CITIES_PER_COUNTRY)]
    region_names = [
        f"{c}-R{k % REGIONS_PER_COUNTRY:02d}" for c in countries for k in range(CITIES_PER_COUNTRY)
    ]
    place = (country * CITIES_PER_COUNTRY + city).tolist()
    pages, page_shares = LANDING_PAGES
    page = rng.choice(len(pages), n, p=page_shares).tolist()
    ids = [f"v{i:07d}" for i in range(n)]

    goal_maps: list[dict[str, list[GoalEventRecord]] | None] = [None] * n
    for goal, data in goals.items():
        records = _records(data, ids)
        bounds = np.searchsorted(data.visitor, np.arange(n + 1)).tolist()
        for index in np.unique(data.visitor).tolist():
            found = goal_maps[index]
            if found is None:
                found = goal_maps[index] = {}
            found[goal] = records[bounds[index] : bounds[index + 1]]
        progress(started, f"records of {goal}: {len(records):,}")

    variants = [VARIANTS[v] for v in variant.tolist()]
    entries = entry_ms.tolist()
    cells = [cell_texts[c] for c in cell_index.tolist()]
    multiples = multiple.tolist()
    counts = visit_counts.tolist()
    hours = visit_hours.tolist()
    states: list[VisitorState] = []
    position = 0
    for i in range(n):
        visitor_id = ids[i]
        visits = {f"{visitor_id}-{k}": hours[position + k] for k in range(counts[i])}
        position += counts[i]
        state: VisitorState = {
            "visitor_id": visitor_id,
            "variant": variants[i],
            "entry_ms": entries[i],
            "cell": cells[i],
            "context": {
                "region": region_names[place[i]],
                "city": city_names[place[i]],
                "landing_page": pages[page[i]],
            },
            "visits": visits,
            "multiple_exposure": multiples[i],
        }
        goal_map = goal_maps[i]
        if goal_map is not None:
            state["goals"] = goal_map
        states.append(state)
    return states


def _records(data: GoalData, ids: list[str]) -> list[GoalEventRecord]:
    """The ``kG:{n}`` records as the sink stores them (revenue as text)."""
    records: list[GoalEventRecord] = []
    values = data.value.tolist()
    for visitor, time_ms, visit, value, other, own, items in zip(
        data.visitor.tolist(),
        data.time_ms.tolist(),
        data.visit.tolist(),
        values,
        data.restricted_other.tolist(),
        data.restricted_self.tolist(),
        data.items.tolist(),
        strict=True,
    ):
        record: GoalEventRecord = {"t": time_ms}
        if visit >= 0:
            record["s"] = f"{ids[visitor]}-{visit}"
        if value == value:  # not NaN
            record["v"] = repr(value)
            record["c"] = "USD"
            record["a"] = {"items": items}
        if other:
            record["x"] = "another-experiment"
        elif own:
            record["x"] = EXPERIMENT
        records.append(record)
    return records


def _counters(
    variant: Ints,
    entry_ms: Ints,
    cell_index: Ints,
    cell_parts: list[tuple[str, ...]],
    multiple: npt.NDArray[np.bool_],
    visit_visitor: Ints,
    visit_hours: Ints,
    goals: dict[str, GoalData],
) -> Counters:
    """What apply_batch.lua counts, per (variant, hour, cell), summed over partitions.

    Visitor metrics and goal metrics sit at the entry hour, ``visits`` at each visit's
    hour. A goal event counts iff ``t >= entry`` and it is not restricted to another
    experiment; ``ev2``/``rev2`` telescope to per-visitor squares of count and revenue.
    """
    n = variant.size
    cell_count = len(cell_parts)
    first_hour = int(visit_hours.min())
    hour_span = int(visit_hours.max()) - first_hour + 1

    def key(rows: Ints, hours: Ints) -> Ints:
        return (variant[rows] * hour_span + (hours - first_hour)) * cell_count + cell_index[rows]

    everyone = np.arange(n, dtype=np.int64)
    all_keys = np.concatenate(
        (key(everyone, entry_ms // MS_PER_HOUR), key(visit_visitor, visit_hours))
    )
    distinct, inverse = np.unique(all_keys, return_inverse=True)
    at_entry, at_visit = inverse[:n], inverse[n:]
    size = distinct.size

    def per_cell(values: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        sums = np.bincount(at_entry, weights=values.astype(np.float64), minlength=size)
        return sums.astype(np.float64, copy=False)

    metrics: dict[str, npt.NDArray[np.float64]] = {
        "n": np.bincount(at_entry, minlength=size).astype(np.float64),
        "visits": np.bincount(at_visit, minlength=size).astype(np.float64),
        "me": per_cell(multiple),
    }
    for goal, data in goals.items():
        counted = (data.time_ms >= entry_ms[data.visitor]) & ~data.restricted_other
        who = data.visitor[counted]
        count = np.bincount(who, minlength=n)
        paid = counted & ~np.isnan(data.value)
        orders = np.bincount(data.visitor[paid], minlength=n)
        revenue = np.bincount(data.visitor[paid], weights=data.value[paid], minlength=n)
        visit_slots = int(data.visit.max(initial=0)) + 2  # visit code 0 is "_" (no visit id)
        pairs = np.unique(who * visit_slots + data.visit[counted] + 1)
        converted_visits = np.bincount(pairs // visit_slots, minlength=n)
        prefix = f"g:{goal}:"
        metrics[prefix + "cv"] = per_cell(count > 0)
        metrics[prefix + "cvis"] = per_cell(converted_visits)
        metrics[prefix + "ev"] = per_cell(count)
        metrics[prefix + "ev2"] = per_cell(count * count)
        if paid.any():
            metrics[prefix + "ord"] = per_cell(orders)
            metrics[prefix + "rev"] = per_cell(revenue)
            metrics[prefix + "rev2"] = per_cell(revenue * revenue)

    rest, cells = np.divmod(distinct, cell_count)
    variants, hours = np.divmod(rest, hour_span)
    keys = [
        CellKey(VARIANTS[v], h + first_hour, *cell_parts[c])
        for v, h, c in zip(variants.tolist(), hours.tolist(), cells.tolist(), strict=True)
    ]
    values: list[dict[str, float]] = [{} for _ in range(size)]
    for metric, column in metrics.items():  # only fields the sink incremented exist
        present = np.flatnonzero(column)
        for row, value in zip(present.tolist(), column[present].tolist(), strict=True):
            values[row][metric] = value
    return dict(zip(keys, values, strict=True))


def fresh(table: CellTable | VisitorTable) -> CellTable | VisitorTable:
    """The table with its first-use caches empty (CellTable keeps none)."""
    if isinstance(table, VisitorTable):
        return dataclasses.replace(table, _columns={}, _goals={})
    return table


def totals(table: CellTable | VisitorTable, query: ResultQuery, goal: str) -> QueryTotals:
    if isinstance(table, CellTable):
        return aggregate_cells(table, query, goal, list(VARIANTS))
    return scan_visitors(table, query, goal, list(VARIANTS))


def check_agreement(cells: CellTable, visitors: VisitorTable) -> None:
    """The default query must give the same numbers on both paths."""
    query = ResultQuery()
    for goal in GOALS:
        from_counters = totals(cells, query, goal).variants
        from_scan = totals(fresh(visitors), query, goal).variants
        counted = [row.visitors for row in from_counters]
        scanned = [row.visitors for row in from_scan]
        if counted != scanned:
            raise AssertionError(f"visitors differ: counters {counted}, scan {scanned}")
        for left, right in zip(from_counters, from_scan, strict=True):
            for name, value in left.as_dict().items():
                other = right.as_dict()[name]
                same = (
                    np.isclose(value, other, rtol=1e-9)
                    if isinstance(value, float)
                    else value == other
                )
                if not same:
                    raise AssertionError(
                        f"{goal} {left.variant_id} {name}: counters {value}, scan {other}"
                    )
    print(
        f"sanity: default query agrees between counters and scan, visitors per variant "
        f"{dict(zip(VARIANTS, counted, strict=True))} (all fields of {len(GOALS)} goals equal)",
        flush=True,
    )


def measure(function: Callable[[], object], runs: int) -> tuple[float, float]:
    """(first run, median of the next ``runs`` runs), in ms."""
    times = []
    for _ in range(runs + 1):
        began = time.perf_counter()
        function()
        times.append((time.perf_counter() - began) * 1000.0)
    return times[0], statistics.median(times[1:])


def measure_builds(function: Callable[[], object], runs: int) -> tuple[float, float]:
    """(first run, median of ``runs`` runs) for steps that build from scratch each time."""
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        function()
        times.append((time.perf_counter() - began) * 1000.0)
    return times[0], statistics.median(times)


def machine() -> str:
    try:
        cores = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        cores = str(len(os.sched_getaffinity(0)))
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"machine: nproc {cores}, CPU {model}, Python {platform.python_version()}, "
        f"numpy {np.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per step (median)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    total_started = time.perf_counter()
    print(machine(), flush=True)

    gc.disable()  # generation makes millions of dicts; the collector would rescan them
    states, counters = generate(args.visitors, args.seed)
    cells = CellTable.from_counters(counters)
    visitor_table = VisitorTable.build(EXPERIMENT, states)
    gc.freeze()  # the inputs are permanent: keep them out of every later collection
    gc.enable()
    check_agreement(cells, visitor_table)

    runs = args.runs
    rows: list[tuple[str, str, float, float]] = []

    def record(step: str, path: str, timing: tuple[float, float]) -> None:
        rows.append((step, path, timing[1], timing[0]))
        print(f"  timed {step} ({path}): median {timing[1]:.1f} ms", flush=True)

    print(f"timing ({runs} runs per step)", flush=True)
    record(
        f"CellTable.from_counters ({len(counters):,} cells)",
        "counters",
        measure_builds(lambda: CellTable.from_counters(counters), runs),
    )
    record(
        f"VisitorTable.build ({len(states):,} visitors)",
        "scan",
        measure_builds(lambda: VisitorTable.build(EXPERIMENT, states), runs),
    )

    def equals(field: str, value: str) -> Condition:
        return Condition(field=field, operator="==", value=value)  # type: ignore[arg-type]

    custom = (
        (equals("device", "Desktop"),),
        (equals("country", "US"), equals("country", "CA")),
        (equals("browser", "Chrome"),),
    )
    queries: list[tuple[str, str, ResultQuery]] = [
        ("default query", "counters", ResultQuery()),
        (
            "preset filter mobile,country-US",
            "counters",
            ResultQuery(segment=preset_filter("mobile,country-US")),
        ),
        ("filter Desktop AND (US OR CA) AND Chrome", "counters", ResultQuery(segment=custom)),
        ("breakdown by device", "counters", ResultQuery(breakdown="device")),
        ("default query", "scan", ResultQuery()),
        ("filter region == US-R03", "scan", ResultQuery(segment=((equals("region", "US-R03"),),))),
        ("breakdown by city", "scan", ResultQuery(breakdown="city")),
        ("min_count=2 + timeframe_days=7", "scan", ResultQuery(min_count=2, timeframe_days=7)),
        (
            "event attribute revenue > 100",
            "scan",
            ResultQuery(event_filter=((EventCondition(key="revenue", operator=">", value=100),),)),
        ),
    ]
    for step, path, query in queries:
        planned = "counters" if plan_query(query).source == "counters" else "scan"
        if planned != path and query != ResultQuery():  # the default runs on both on purpose
            raise AssertionError(f"{step}: the planner sends it to {planned}, not {path}")
        table = fresh(cells if path == "counters" else visitor_table)
        record(step, path, measure(partial(totals, table, query, GOALS[0]), runs))

    experiment = definition()
    default = ResultQuery()
    goal_totals = {goal: totals(cells, default, goal) for goal in GOALS}
    record(
        "result_document, 3 goals (statistics only)",
        "counters",
        measure(lambda: result_document(experiment, goal_totals, default), runs),
    )
    record(
        "3 goals' totals + result_document",
        "counters",
        measure(
            lambda: result_document(
                experiment, {goal: totals(cells, default, goal) for goal in GOALS}, default
            ),
            runs,
        ),
    )

    width = max(len(step) for step, *_ in rows)
    print()
    print(machine())
    print(
        f"data: {len(states):,} visitors, {len(VARIANTS)} variants, {len(GOALS)} goals, "
        f"{DAYS} days, {visitor_table.visit_hours.size:,} visits, {len(counters):,} counter cells"
    )
    print(f"{'step':<{width}}  {'path':<8}  {'median ms':>10}  {'first ms':>10}")
    print(f"{'-' * width}  {'-' * 8}  {'-' * 10}  {'-' * 10}")
    for step, path, median, first in rows:
        print(f"{step:<{width}}  {path:<8}  {median:>10.1f}  {first:>10.1f}")
    print(f"total run time {time.perf_counter() - total_started:.0f} s")


if __name__ == "__main__":
    main()
