"""Freshness benchmark: time from an event's publish until a result snapshot includes it.

    .venv/bin/python bench/freshness.py --rate 1000 --seconds 60 [--interval 10] [--json F]
        [--prefill-visitors 10000000 [--prefix P] [--keep]]

Starts one worker on fresh topics and a fresh key prefix, publishes a steady stream of
assignments and conversions for three experiments, and reads the results topic as it
goes. Every snapshot names the offsets it includes (`applied_offsets`, read before it
was computed), so an event is visible from the first snapshot *of its experiment*
whose applied offset of the event's partition reaches the event's offset. Freshness =
that snapshot's arrival on the results topic - the event's publish time, both on this
process's clock. Reports p50 / p99 / max against the target p99 <= 2 x interval.

``--prefill-visitors N`` first fills a fourth experiment, ``prefilled``, with N visitors
straight through the real Lua sink into the worker's key prefix and partitions (the
generator and fill of bench/read_scale.py, under topic names of their own that the
worker does not read), and publishes its definition beside the others, so that every
snapshot interval the worker computes it too. Before the worker starts, it times
``compute_result`` of the default query on that experiment (the snapshot job's
computation; median of 5 runs, each reading Redis afresh); the fill's Redis bytes per
visitor are INFO used_memory growth and, summed right after the fill while the prefix
holds nothing else, the MEMORY USAGE of its keys. ``--prefix P --keep`` keeps
the prefix's keys at the end, and a later run with ``--prefix P`` that finds the
experiment there reuses it instead of filling again. Without ``--keep``, the prefix's
keys are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_experiments import two_arm_definition  # noqa: E402
from read_scale import FillTarget, delete_prefix, family_bytes, fill  # noqa: E402

from worker.config import Settings, namespace_env  # noqa: E402
from worker.events.experiment import ExperimentDefinition  # noqa: E402
from worker.ingestion.topics import ensure_topics  # noqa: E402
from worker.results.query import ResultQuery  # noqa: E402
from worker.results.service import compute_result  # noqa: E402
from worker.store.batch_sink import SinkSettings  # noqa: E402
from worker.store.connection import Redis, connect  # noqa: E402
from worker.store.definitions import stored_definition  # noqa: E402
from worker.store.meta import record_partition_count  # noqa: E402

EXPERIMENTS = ("fresh-a", "fresh-b", "fresh-c")
PREFILLED = "prefilled"
PREFILL_DAYS = 30


@dataclass(frozen=True)
class Published:
    experiment: str
    topic: str
    partition: int
    offset: int
    at: float


@dataclass(frozen=True)
class Snapshot:
    experiment: str
    applied: dict[tuple[str, int], int]
    at: float


def event(
    rng: random.Random, n: int, topics: dict[str, str], run: str
) -> tuple[str, str, bytes, bytes]:
    """A new visitor's assignment, or (one in four) a purchase of an earlier visitor.
    Event and visitor ids carry the run's name, so a run on a reused prefix streams
    events and visitors its de-duplication has not seen."""
    now = datetime.now(UTC).isoformat()
    if n % 4 == 3:
        visitor = rng.randrange(n // 4 + 1) * 4  # a multiple of 4 was assigned
        kind, body = "c", {"goal": "purchase", "value": 10}
    else:
        visitor = n
        kind = "a"
        body = {"experiment_id": EXPERIMENTS[visitor % 3], "variant_id": str(visitor % 2)}
        body["context"] = {"device": rng.choice(("mobile", "desktop"))}
    visitor_id = f"{run}-v{visitor}"
    body |= {"event_id": f"{run}-{kind}{n}", "visitor_id": visitor_id, "timestamp": now}
    return EXPERIMENTS[visitor % 3], topics[kind], visitor_id.encode(), orjson.dumps(body)


async def watch_results(settings: Settings, seen: list[Snapshot], stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        settings.topic_results,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            arrived = time.monotonic()
            for records in batches.values():
                for record in records:
                    document = orjson.loads(record.value)
                    applied = {
                        (topic, int(partition)): offset
                        for topic, parts in document.get("applied_offsets", {}).items()
                        for partition, offset in parts.items()
                    }
                    seen.append(Snapshot(document["experiment_id"], applied, arrived))
    finally:
        await consumer.stop()


def visible_at(item: Published, snapshots: list[Snapshot]) -> float | None:
    for snapshot in snapshots:
        if (
            snapshot.experiment == item.experiment
            and snapshot.at >= item.at
            and snapshot.applied.get((item.topic, item.partition), -1) >= item.offset
        ):
            return snapshot.at
    return None


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def prefill(
    redis: Redis, settings: Settings, visitors: int
) -> tuple[bytes, dict[str, object]]:
    """The prefilled experiment's definition (JSON) and figures: filled now through the
    sink into the worker's prefix and partitions, or found there from a kept run; then
    its default result timed as the snapshot job computes it."""
    prefix = settings.key_prefix
    figures: dict[str, object] = {"prefill_visitors": visitors}
    stored = await stored_definition(redis, prefix, PREFILLED)
    if stored is not None:
        print(f"reusing the {PREFILLED!r} experiment kept under prefix {prefix}", flush=True)
        raw = stored
        definition = ExperimentDefinition.model_validate_json(raw)
    else:
        started_at = datetime.now(UTC) - timedelta(days=PREFILL_DAYS + 1)
        definition = ExperimentDefinition.model_validate(
            two_arm_definition(PREFILLED) | {"started_at": started_at.isoformat()}
        )
        raw = definition.model_dump_json().encode()
        # The worker's own assignments topic as the hold clock's topic: the fill's
        # records are under other names, so they leave the worker's hold clock alone.
        sink = SinkSettings(
            prefix,
            settings.dedup_window_days * 86400,
            settings.conversion_hold_seconds * 1000,
            assignments_topic=settings.topic_assignments,
        )
        target = FillTarget(
            sink,
            settings.partitions,
            {"a": f"{prefix}.prefill-assignments", "c": f"{prefix}.prefill-conversions"},
        )
        await record_partition_count(redis, prefix, settings.partitions)
        print(f"filling {visitors:,} visitors of {PREFILLED!r} under {prefix}...", flush=True)
        before = int((await redis.info("memory"))["used_memory"])
        begun = time.perf_counter()
        count = await fill(redis, target, definition, visitors, PREFILL_DAYS, 7, "p")
        seconds = time.perf_counter() - begun
        grown = int((await redis.info("memory"))["used_memory"]) - before
        # Summed now, while the prefix holds the fill alone: the streamed experiments
        # add keys of their own once the worker runs.
        key_bytes = sum(size for _, size, _ in (await family_bytes(redis, prefix)).values())
        figures |= {"prefill_events": count, "prefill_seconds": seconds}
        figures |= {
            "prefill_events_per_s": count / seconds,
            "redis_bytes_per_visitor": grown / visitors,
            "key_bytes_per_visitor": key_bytes / visitors,
        }
        print(
            f"filled {visitors:,} visitors ({count:,} events) in {seconds / 60:.1f} min, "
            f"{count / seconds:,.0f} events/s; Redis grew {grown / visitors:.0f} B per visitor "
            f"(MEMORY USAGE of the prefix's keys: {key_bytes / visitors:.0f} B)",
            flush=True,
        )
    times = []
    for _ in range(5):
        begun = time.perf_counter()
        result = await compute_result(redis, prefix, definition, ResultQuery())
        times.append((time.perf_counter() - begun) * 1000)
    counted = sum(variant.visitors for variant in result.goals["purchase"].variants)
    figures |= {
        "snapshot_compute_ms_median": statistics.median(times),
        "snapshot_compute_ms": times,
    }
    print(
        f"default result of {PREFILLED!r} ({counted:,} visitors), compute_result: "
        f"median {statistics.median(times):.1f} ms, min {min(times):.1f} ms of 5; target <= 50 ms",
        flush=True,
    )
    return raw, figures


async def run(args: argparse.Namespace) -> dict[str, object]:
    name = f"fresh{uuid.uuid4().hex[:8]}"
    env = namespace_env(name) | {"AB_RESULTS_INTERVAL": str(args.interval)}
    if args.prefix:
        env["AB_KEY_PREFIX"] = args.prefix
    if args.engine:
        env["AB_INGESTION_ENGINE"] = args.engine
    os.environ.update(env)
    settings = Settings.from_env()
    try:
        return await measure(args, name, env, settings)
    finally:
        if not args.keep:
            async with connect(settings) as redis:
                deleted = await delete_prefix(redis, settings.key_prefix)
            print(f"deleted {deleted:,} keys of prefix {settings.key_prefix}", flush=True)
        else:
            print(f"kept the keys of prefix {settings.key_prefix}", flush=True)


async def measure(
    args: argparse.Namespace, name: str, env: dict[str, str], settings: Settings
) -> dict[str, object]:
    """Prefill (optionally), start the worker, stream, and compute the freshness."""
    await ensure_topics(settings)
    definitions = {
        experiment: json.dumps(two_arm_definition(experiment)).encode()
        for experiment in EXPERIMENTS
    }
    prefilled: dict[str, object] = {}
    if args.prefill_visitors:
        async with connect(settings) as redis:
            definitions[PREFILLED], prefilled = await prefill(
                redis, settings, args.prefill_visitors
            )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=5
    )
    await producer.start()
    for experiment, definition in definitions.items():
        await producer.send_and_wait(
            settings.topic_experiments, definition, key=experiment.encode()
        )
    worker = subprocess.Popen(
        [sys.executable, "-m", "worker", "run", "--loglevel", "warning"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    snapshots: list[Snapshot] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_results(settings, snapshots, stop))
    published: list[Published] = []
    try:
        print("waiting for the worker's first snapshot...", flush=True)
        while not snapshots:
            if worker.poll() is not None:
                raise SystemExit("the worker exited before its first snapshot")
            await asyncio.sleep(0.2)
        topics = {"a": settings.topic_assignments, "c": settings.topic_conversions}
        rng = random.Random(3)
        total = int(args.rate * args.seconds)
        print(f"publishing {total:,} events at {args.rate:,.0f}/s for {args.seconds:.0f} s...")
        started = time.monotonic()
        pending: list[tuple[str, str, float, asyncio.Future[object]]] = []
        for n in range(total):
            due = started + n / args.rate
            if (delay := due - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            experiment, topic, key, value = event(rng, n, topics, name)
            sent_at = time.monotonic()
            pending.append((experiment, topic, sent_at, await producer.send(topic, value, key=key)))
            if n and n % (total // 5) == 0:
                print(f"  {n:,}/{total:,} published, {len(snapshots)} snapshots so far", flush=True)
        for experiment, topic, sent_at, future in pending:
            metadata = await future
            published.append(
                Published(experiment, topic, metadata.partition, metadata.offset, sent_at)  # type: ignore[attr-defined]
            )
        print("waiting until a snapshot includes every event...", flush=True)
        deadline = time.monotonic() + 10 * args.interval + 60
        while time.monotonic() < deadline:
            if all(visible_at(item, snapshots) is not None for item in published[-200:]):
                break
            await asyncio.sleep(0.5)
    finally:
        stop.set()
        await watcher
        worker.terminate()
        worker.wait(timeout=60)
        await producer.stop()
    latencies = []
    missing = 0
    for item in published:
        seen_at = visible_at(item, snapshots)
        if seen_at is None:
            missing += 1
        else:
            latencies.append(seen_at - item.at)
    figures: dict[str, object] = {
        "events": len(published),
        "rate": args.rate,
        "interval_s": args.interval,
        "p50_s": statistics.median(latencies),
        "p99_s": percentile(latencies, 0.99),
        "max_s": max(latencies),
        "not_visible": missing,
        "snapshots": len(snapshots),
    } | prefilled
    print(
        f"freshness over {len(latencies):,} events (interval {args.interval:g} s): "
        f"p50 {figures['p50_s']:.2f} s, p99 {figures['p99_s']:.2f} s, max {figures['max_s']:.2f} s"
        f"; target p99 <= {2 * args.interval:g} s; {missing} never visible"
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=1000, help="events per second")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--interval", type=float, default=10, help="AB_RESULTS_INTERVAL")
    parser.add_argument("--engine", help="AB_INGESTION_ENGINE of the worker (default: its own)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--prefill-visitors",
        type=int,
        default=0,
        help="first fill one more experiment with this many visitors through the sink",
    )
    parser.add_argument(
        "--prefix", help="Redis key prefix (default: a fresh one named after the run)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the prefix's keys (to reuse a fill)"
    )
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
