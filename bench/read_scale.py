"""Read cost against history: one experiment filled through the real Lua sink, then the
reads the API and the snapshot job make, timed end to end from Redis.

    .venv/bin/python bench/read_scale.py [--visitors 1000000] [--days 30] [--runs 5]

Generates one two-arm experiment (a revenue goal) whose visitors enter over ``--days``
days with a device, browser, country, region and city each, about 30 % of them
converting once or twice; plans every event with the worker's planners and applies
them with ``BatchSink`` (apply_batch.lua) in batches of 500 per partition, as
bench/plan_and_sink.py does. Then, for each query below, ``compute_result`` (the path
of the CLI and the snapshot job; the API runs the same in its runners) is timed
``--runs`` times and the median printed: each run reads Redis afresh, so each is
"cold" for the application (Redis itself holds everything in memory). Whole-run cell
queries are timed twice: as the planner reads them (the running totals per cell) and
from the day rollups, as the planner read them before those totals existed, on the same
data in the same run, and so are the visitor scans: from the columnar visitor store
(what ``compute_result`` reads) and from the visitor hashes, the path before it
(``--hash-runs`` times). Redis bytes per visitor are INFO used_memory after the fill
minus before, over the visitors, and the columnar store's share the MEMORY USAGE of its
keys. Conversions carry one event attribute, ``plan``. It prints
figures and asserts nothing; ``--json F`` also writes them to F (the fill's, the key
families' with ``--memory``, and each read's times, for bench/suite.py); the prefix's
keys are deleted at the end (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_experiments import two_arm_definition  # noqa: E402

from worker.config import Settings  # noqa: E402
from worker.events.experiment import ExperimentDefinition  # noqa: E402
from worker.ingestion.commands import (  # noqa: E402
    SourceMessage,
    plan_assignment,
    plan_conversion,
    sink_rules,
)
from worker.ingestion.partitioning import partition_for  # noqa: E402
from worker.results.cell_aggregation import CellTable  # noqa: E402
from worker.results.planning import counter_grain, plan_query  # noqa: E402
from worker.results.presets import preset_filter  # noqa: E402
from worker.results.query import ResultQuery  # noqa: E402
from worker.results.service import compute_result, document  # noqa: E402
from worker.results.visitor_scan import VisitorTable  # noqa: E402
from worker.store import keys  # noqa: E402
from worker.store.batch_sink import BatchSink, SinkSettings  # noqa: E402
from worker.store.connection import Redis, connect  # noqa: E402
from worker.store.counter_reader import Grain, read_counters  # noqa: E402
from worker.store.definitions import load_definition  # noqa: E402
from worker.store.sink_protocol import experiment_rules  # noqa: E402
from worker.store.visitor_reader import read_visitor_states  # noqa: E402

PARTITIONS = 12
BATCH = 500
EXPERIMENT = "scale"
CITIES = [f"city-{n}" for n in range(200)]


def events(
    visitors: int, days: int, seed: int, experiment: str = EXPERIMENT, visitor_prefix: str = "v"
) -> Iterator[tuple[str, bytes, bytes, int]]:
    """(kind, key, value, event time in ms) of every visitor's entry and conversions,
    in time order within each visitor; entries spread evenly over ``days`` days that
    end an hour ago. Visitor ids are ``visitor_prefix`` and a number (a caller that
    streams visitors of its own beside these picks a prefix theirs do not share)."""
    rng = random.Random(seed)
    end = datetime.now(UTC) - timedelta(hours=1)
    span = days * 86400
    for number in range(visitors):
        visitor = f"{visitor_prefix}{number}"
        entered = end - timedelta(seconds=span * (visitors - number) / visitors)
        country = rng.choice(("US", "DE", "FR", "GB", "CA"))
        entry = {
            "event_id": f"a{number}",
            "experiment_id": experiment,
            "variant_id": str(rng.randrange(2)),
            "visitor_id": visitor,
            "timestamp": entered.isoformat(),
            "context": {
                "device": rng.choice(("mobile", "desktop", "tablet")),
                "browser": rng.choice(("chrome", "safari", "firefox")),
                "country": country,
                "region": f"{country}-{rng.randrange(10)}",
                "city": rng.choice(CITIES),
                "source": rng.choice(("direct", "search", "social")),
            },
        }
        yield "a", visitor.encode(), orjson.dumps(entry), int(entered.timestamp() * 1000)
        if rng.random() < 0.3:
            for order in range(1 + (rng.random() < 0.3)):
                moment = entered + timedelta(minutes=5 + 30 * order)
                conversion = {
                    "event_id": f"c{number}-{order}",
                    "visitor_id": visitor,
                    "goal": "purchase",
                    "value": round(rng.uniform(5, 100), 2),
                    "timestamp": moment.isoformat(),
                    "attributes": {"plan": rng.choice(("pro", "free", "team"))},
                }
                yield (
                    "c",
                    visitor.encode(),
                    orjson.dumps(conversion),
                    int(moment.timestamp() * 1000),
                )


@dataclass(frozen=True)
class FillTarget:
    """Where `fill` writes: the sink's settings (prefix, hold, the topic whose records move
    the hold clock), the partition count, and the topic name recorded for each kind of
    event ("a" entries, "c" conversions) in the applied offsets."""

    sink: SinkSettings
    partitions: int = PARTITIONS
    topics: Mapping[str, str] = field(default_factory=lambda: {"a": "a", "c": "c"})


def fill_target(prefix: str) -> FillTarget:
    """This bench's own target: a prefix of its own, whose entries move the hold clock."""
    return FillTarget(SinkSettings(prefix, 7 * 86400, 3_600_000, assignments_topic="a"))


async def fill(
    redis: Redis,
    target: FillTarget,
    definition: ExperimentDefinition,
    visitors: int,
    days: int,
    seed: int,
    visitor_prefix: str = "v",
) -> int:
    """Plans and sinks the generated events of ``visitors`` visitors of ``definition``;
    returns how many events. Prints progress (visitors, events/s, ETA) every 200,000
    events. Each partition's batch runs in Redis while the next batches are planned (a
    partition's batches still apply in order: the next starts only when the previous
    has returned), so the planning in Python and the script in Redis overlap; the
    partitions fill at about the same pace, so their batches come due together, and
    one batch in flight for all of them would leave Redis and Python taking turns."""
    catalog = {definition.id: definition}
    rules = sink_rules(catalog)
    sink = BatchSink(redis, target.sink)
    pending: dict[int, list] = {}
    offsets: dict[tuple[str, int], int] = {}
    in_redis: dict[int, asyncio.Task[Any]] = {}
    count = entered = 0
    started = time.perf_counter()
    published = int(time.time() * 1000) - 3_600_000
    generated = events(visitors, days, seed, definition.id, visitor_prefix)
    for kind, key, value, _ in generated:
        partition = partition_for(key.decode(), target.partitions)
        topic = target.topics[kind]
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        record = SourceMessage(topic, partition, offset, key, value, timestamp_ms=published + count)
        planner = plan_assignment if kind == "a" else plan_conversion
        batch = pending.setdefault(partition, [])
        batch.append(planner(record, catalog, target.partitions).command)
        count += 1
        entered += kind == "a"
        if len(batch) == BATCH:
            if partition in in_redis:
                await in_redis[partition]
            in_redis[partition] = asyncio.create_task(sink.apply(partition, batch, [], rules=rules))
            # A created task runs only when this loop yields: yield once, so the script
            # is sent now and runs in Redis while the next batches are planned.
            await asyncio.sleep(0)
            pending[partition] = []
        if count % 200_000 == 0:
            seconds = time.perf_counter() - started
            left = (visitors - entered) * seconds / entered
            print(
                f"  filled {entered:,}/{visitors:,} visitors, {count:,} events "
                f"({count / seconds:,.0f} events/s, ETA {left / 60:.0f} min)",
                flush=True,
            )
    await asyncio.gather(*in_redis.values())
    for partition, batch in pending.items():
        if batch:
            await sink.apply(partition, batch, [], rules=rules)
    return count


async def from_days(
    redis: Redis, prefix: str, definition: ExperimentDefinition, query: ResultQuery
) -> Any:
    """The result read from the day rollups (the previous planner's grain for a cell query
    without dates)."""
    counters = await read_counters(redis, prefix, definition.id, Grain.DAYS, query.hour_range())
    table = CellTable.from_counters(counters.cells, counters.data_hours)
    return await asyncio.to_thread(
        document, table, definition, query, [goal.key for goal in definition.goals]
    )


def queries(days: int) -> dict[str, ResultQuery]:
    """The reads measured, named as in BENCHMARKS.md."""
    today = datetime.now(UTC).date()
    week = today - timedelta(days=7)
    return {
        "default result": ResultQuery(),
        "filter_by=mobile": ResultQuery(segment=preset_filter("mobile")),
        "breakdown by device": ResultQuery(breakdown="device"),
        "last 7 days": ResultQuery(start_date=week, end_date=today),
        "last 7 days, tz=+2": ResultQuery(start_date=week, end_date=today, tz=2),
        "breakdown by city": ResultQuery(breakdown="city"),
        "min_count=2": ResultQuery(min_count=2),
        "timeframe_days=3": ResultQuery(timeframe_days=3),
        "event attribute plan == pro": ResultQuery.model_validate(
            {"event_filter": [[{"key": "plan", "operator": "==", "value": "pro"}]]}
        ),
        # bench/freshness.py's fill names its visitors p0, p1, ...: one of them, in
        # another case (this script's own fill, v0, v1, ..., has none). == and != are
        # looked up in the visitor buckets; contains reads every id.
        "visitor_id == P42": ResultQuery.model_validate(
            {"segment": [[{"field": "visitor_id", "operator": "==", "value": "P42"}]]}
        ),
        "visitor_id contains 42": ResultQuery.model_validate(
            {"segment": [[{"field": "visitor_id", "operator": "contains", "value": "42"}]]}
        ),
    }


async def from_hashes(
    redis: Redis, prefix: str, definition: ExperimentDefinition, query: ResultQuery
) -> Any:
    """The result of a scan read from the visitor hashes (the scan before the columnar
    visitor store, and still the one of experiments with entrants from before it)."""
    states = await read_visitor_states(redis, prefix, definition.id)
    table = await asyncio.to_thread(
        VisitorTable.build, definition.id, states, None, experiment_rules(definition)
    )
    return await asyncio.to_thread(
        document, table, definition, query, [goal.key for goal in definition.goals]
    )


COLUMN_FAMILIES = (
    keys.ENTRANT_COLUMNS,
    keys.FACT_COLUMNS,
    keys.EVENT_COLUMNS,
    keys.COLUMN_COUNTS,
    keys.STRINGS,
    keys.VISIT_IDS,
)
"""The key families of the columnar visitor store (columns, counts, intern hashes)."""


Families = dict[str, tuple[int, int, Counter[str]]]


def column_bytes(families: Families) -> int:
    """MEMORY USAGE of the columnar visitor store's keys (every segment of every column),
    from ``family_bytes``."""
    return sum(families[family][1] for family in COLUMN_FAMILIES if family in families)


async def family_bytes(redis: Redis, prefix: str) -> Families:
    """MEMORY USAGE summed per key family of the prefix (the partition keys' suffix, as in
    worker/store/keys.py; "other" for the rest): family -> (keys, bytes, encodings)."""
    families: Families = {}
    found = [key async for key in redis.scan_iter(match=f"{prefix}:*", count=10_000)]
    for first in range(0, len(found), 2_000):
        chunk = found[first : first + 2_000]
        async with redis.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.memory_usage(key, samples=0)
                pipe.object("encoding", key)
            replies = await pipe.execute()
        for index, key in enumerate(chunk):
            rest = key.decode()[len(prefix) + 1 :].split(":")
            family = rest[1] if rest[0].startswith("{") and len(rest) > 1 else "other"
            count, size, encodings = families.get(family, (0, 0, Counter()))
            encoding = replies[2 * index + 1]
            encodings[encoding.decode() if isinstance(encoding, bytes) else str(encoding)] += 1
            families[family] = (count + 1, size + int(replies[2 * index] or 0), encodings)
    return families


async def delete_prefix(redis: Redis, prefix: str) -> int:
    """Unlink every key of the prefix (SCAN, in chunks); how many."""
    found = [key async for key in redis.scan_iter(match=f"{prefix}:*", count=10_000)]
    for first in range(0, len(found), 10_000):
        await redis.unlink(*found[first : first + 10_000])
    return len(found)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Fill (unless ``--reuse``), then time every read; the figures printed, as a dict."""
    settings = Settings.from_env()
    prefix = args.reuse or f"bench-read-{os.getpid()}"
    definition = ExperimentDefinition.model_validate(
        two_arm_definition(args.experiment)
        | {"started_at": (datetime.now(UTC) - timedelta(days=args.days + 1)).isoformat()}
    )
    figures: dict[str, Any] = {"visitors": args.visitors, "days": args.days, "runs": args.runs}
    families: Families | None = None  # read once: a SCAN of the whole prefix
    async with connect(settings) as redis:
        if args.reuse is not None:
            # A prefix a worker registered the experiment in (bench/freshness.py's fill)
            # keeps the definition it was filled with, whose start precedes every entry.
            stored = await load_definition(redis, prefix, args.experiment)
            definition = stored or definition
        if args.reuse is None:
            before = int((await redis.info("memory"))["used_memory"])
            started = time.perf_counter()
            count = await fill(
                redis, fill_target(prefix), definition, args.visitors, args.days, args.seed
            )
            seconds = time.perf_counter() - started
            after = int((await redis.info("memory"))["used_memory"])
            families = await family_bytes(redis, prefix)
            figures["fill"] = {
                "events": count,
                "seconds": seconds,
                "bytes_per_visitor": (after - before) / args.visitors,
                "column_bytes_per_visitor": column_bytes(families) / args.visitors,
            }
            print(
                f"filled {args.visitors:,} visitors ({count:,} events) in {seconds:.0f} s; "
                f"Redis {figures['fill']['bytes_per_visitor']:.0f} bytes per "
                f"visitor-experiment, of which the columnar visitor store "
                f"{figures['fill']['column_bytes_per_visitor']:.0f}"
            )
        if args.memory:
            families = families or await family_bytes(redis, prefix)
            print("\n| key family | keys | bytes per visitor | encodings |\n|---|---|---|---|")
            for family, (count, size, encodings) in sorted(
                families.items(), key=lambda item: -item[1][1]
            ):
                kinds = ", ".join(f"{name} {n:,}" for name, n in encodings.most_common())
                print(f"| {family} | {count:,} | {size / args.visitors:.1f} | {kinds} |")
            total = sum(size for _, size, _ in families.values())
            print(f"| everything | | {total / args.visitors:.1f} | |")
            figures["memory"] = {
                "key_bytes_per_visitor": total / args.visitors,
                "families": {
                    family: {"keys": count, "bytes": size, "encodings": dict(encodings)}
                    for family, (count, size, encodings) in families.items()
                },
            }
        try:
            print(
                f"\n| read, {args.visitors:,} visitors over {args.days} days | median ms | min ms |"
            )
            print("|---|---|---|")
            figures["reads"] = []
            for name, query in queries(args.days).items():
                counters = plan_query(query).source == "counters"
                grain = counter_grain(query) if counters else "visitor scan"
                ways = {f"{name} ({grain})": compute_result}
                if grain is Grain.CELL_TOTALS:
                    ways[f"{name} (days, as before)"] = from_days
                if not counters and args.hash_runs:
                    ways[f"{name} (visitor hashes, as before)"] = from_hashes
                for label, way in ways.items():
                    times = []
                    runs = args.hash_runs if way is from_hashes else args.runs
                    for _ in range(runs):
                        begun = time.perf_counter()
                        result = await way(redis, prefix, definition, query)
                        times.append((time.perf_counter() - begun) * 1000)
                    visitors = sum(v.visitors for v in result.goals["purchase"].variants)
                    print(
                        f"| {label} [{visitors:,} visitors] | "
                        f"{statistics.median(times):,.0f} | {min(times):,.0f} |"
                    )
                    figures["reads"].append(
                        {"query": name, "label": label, "scan": not counters,
                         "current": way is compute_result, "visitors": visitors,
                         "median_ms": statistics.median(times), "min_ms": min(times),
                         "ms": times}
                    )  # fmt: skip
        finally:
            if not args.keep:
                await delete_prefix(redis, prefix)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument(
        "--memory",
        action="store_true",
        help="print MEMORY USAGE per key family (bytes per visitor) before the reads",
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--reuse",
        metavar="PREFIX",
        help="read the prefix a --keep run filled (same --visitors and --days) instead of "
        "filling one",
    )
    parser.add_argument(
        "--experiment",
        default=EXPERIMENT,
        help="the experiment's id (with --reuse: bench/freshness.py --prefill-visitors "
        "fills 'prefilled')",
    )
    parser.add_argument(
        "--hash-runs",
        type=int,
        default=1,
        help="runs of each scan from the visitor hashes, the path before the columnar "
        "store (0: skip; about a minute each at a million visitors)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    figures = asyncio.run(measure(args))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
