"""Ingestion benchmark: publish N events, measure sustained events/s and Redis bytes.

    .venv/bin/python bench/ingestion.py --events 200000 --visitors 40000 [--workers 1] [--compare]

Starts its own worker process(es) on fresh topics and a fresh key prefix against the
services of the environment (or the local ones from `python -m worker services up`),
publishes the events as fast as one producer can, and reports events/s from the first
publish to the last applied offset in Redis, plus Redis memory per visitor-experiment
(INFO used_memory before and after, so the figure includes dedup ids and counters).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.config import Settings  # noqa: E402
from worker.ingestion.topics import ensure_topics  # noqa: E402
from worker.store import keys  # noqa: E402

EXPERIMENTS = ("bench-a", "bench-b", "bench-c")


def definitions() -> list[dict[str, object]]:
    return [
        {
            "id": experiment,
            "project_key": "bench",
            "name": experiment,
            "status": "live",
            "variants": [
                {"id": "0", "name": "A", "is_control": True},
                {"id": "1", "name": "B"},
            ],
            "goals": [{"key": "purchase", "name": "Purchase", "type": "revenue", "primary": True}],
        }
        for experiment in EXPERIMENTS
    ]


def generate(events: int, visitors: int, seed: int) -> tuple[list[tuple[str, bytes, bytes]], int]:
    """~70 % assignments, ~30 % conversions; returns messages and visitor-experiment entries."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    out: list[tuple[str, bytes, bytes]] = []
    entries: set[tuple[int, str]] = set()
    for n in range(events):
        visitor = rng.randrange(visitors)
        experiment = EXPERIMENTS[visitor % len(EXPERIMENTS)]
        moment = start + timedelta(seconds=n)
        if rng.random() < 0.7 or (visitor, experiment) not in entries:
            entries.add((visitor, experiment))
            event = {
                "event_id": f"a{n}",
                "experiment_id": experiment,
                "variant_id": str(visitor % 2),
                "visitor_id": f"visitor-{visitor}",
                "visit_id": f"s{n % 3}",
                "timestamp": moment.isoformat(),
                "context": {
                    "device": rng.choice(("mobile", "desktop")),
                    "browser": rng.choice(("chrome", "safari")),
                    "country": rng.choice(("US", "DE", "FR")),
                    "source": rng.choice(("direct", "search")),
                },
            }
            out.append(("a", f"visitor-{visitor}".encode(), json.dumps(event).encode()))
        else:
            event = {
                "event_id": f"c{n}",
                "visitor_id": f"visitor-{visitor}",
                "goal": "purchase",
                "value": round(rng.uniform(5, 100), 2),
                "timestamp": moment.isoformat(),
            }
            out.append(("c", f"visitor-{visitor}".encode(), json.dumps(event).encode()))
    return out, len(entries)


async def applied(redis: Redis, settings: Settings, partitions: int) -> int:
    total = 0
    for partition in range(partitions):
        offsets = await redis.hgetall(keys.offsets_key(settings.key_prefix, partition))
        total += sum(int(value) + 1 for value in offsets.values())
    return total


async def run(args: argparse.Namespace) -> None:
    name = f"bench{uuid.uuid4().hex[:8]}"
    env = {
        "AB_TOPIC_ASSIGNMENTS": f"{name}.assignments",
        "AB_TOPIC_CONVERSIONS": f"{name}.conversions",
        "AB_TOPIC_EXPERIMENTS": f"{name}.experiments",
        "AB_TOPIC_RESULTS": f"{name}.results",
        "AB_TOPIC_WINNERS": f"{name}.winners",
        "AB_TOPIC_DEAD_LETTER": f"{name}.dead-letter",
        "AB_CONSUMER_GROUP": name,
        "AB_KEY_PREFIX": name,
        "AB_BATCH_SIZE": str(args.batch_size),
    }
    os.environ.update(env)
    settings = Settings.from_env()
    partitions = await ensure_topics(settings)
    print(f"generating {args.events:,} events over {args.visitors:,} visitors...", flush=True)
    messages, entries = generate(args.events, args.visitors, seed=1)
    topics = {"a": settings.topic_assignments, "c": settings.topic_conversions}
    redis = Redis.from_url(settings.redis_url)
    memory_before = (await redis.info("memory"))["used_memory"]

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        linger_ms=20,
        max_batch_size=262144,
    )
    await producer.start()
    for definition in definitions():
        await producer.send_and_wait(
            settings.topic_experiments,
            json.dumps(definition).encode(),
            key=str(definition["id"]).encode(),
        )
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "worker", "run", "--loglevel", "warning"],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(args.workers)
    ]
    try:
        await asyncio.sleep(8)  # let the workers join the group before the clock starts
        print(f"publishing with {args.workers} worker(s) consuming...", flush=True)
        started = time.perf_counter()
        pending = []
        for kind, key, value in messages:
            pending.append(await producer.send(topics[kind], value=value, key=key))
        await producer.flush()
        for future in pending:
            await future
        published = time.perf_counter()
        total = len(messages)
        last_report = published
        while (done := await applied(redis, settings, partitions)) < total:
            await asyncio.sleep(0.05)
            if time.perf_counter() - last_report > 5:
                last_report = time.perf_counter()
                print(f"  {done:,}/{total:,} applied", flush=True)
        finished = time.perf_counter()
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)
        await producer.stop()
    memory_after = (await redis.info("memory"))["used_memory"]
    await redis.aclose()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    print()
    print(f"machine: {os.cpu_count()} cores, {cpu}")
    print(
        f"events: {total:,} ({entries:,} visitor-experiment entries), workers: {args.workers}, batch: {args.batch_size}"
    )
    print(f"publish only: {total / (published - started):,.0f} events/s")
    print(
        f"sustained end to end (first publish -> last applied): {total / (finished - started):,.0f} events/s"
    )
    print(
        f"Redis memory: {(memory_after - memory_before) / entries:,.0f} bytes per visitor-experiment"
    )
    if args.compare:
        pipeline_rate = total / (finished - started)
        ceiling = await ceiling_rate(settings, total)
        baseline = await baseline_rate(settings, total, env)
        print(f"ceiling (bare aiokafka consumer, read + JSON decode): {ceiling:,.0f} events/s")
        print(
            f"naive baseline (faust, one event and one Redis round trip at a time): {baseline:,.0f} events/s"
        )
        print(
            f"pipeline / ceiling: {pipeline_rate / ceiling:.0%}; pipeline / baseline: {pipeline_rate / baseline:.1f}x"
        )


async def ceiling_rate(settings: Settings, total: int) -> float:
    """Read both input topics from the start with a bare consumer; events/s."""
    consumer = AIOKafkaConsumer(
        *settings.input_topics,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"{settings.consumer_group}-ceiling",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    seen = 0
    started: float | None = None
    try:
        while seen < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10000)
            if started is None and batches:
                started = time.perf_counter()
            for records in batches.values():
                for record in records:
                    orjson.loads(record.value)
                seen += len(records)
    finally:
        await consumer.stop()
    assert started is not None
    return total / (time.perf_counter() - started)


async def baseline_rate(settings: Settings, total: int, env: dict[str, str]) -> float:
    """Run the naive faust baseline on the same topics until it counted everything."""
    counter = f"{settings.key_prefix}:naive"
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("naive_baseline.py")),
         f"{settings.consumer_group}-naive", counter, *settings.input_topics],
        env={**os.environ, **env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    redis = Redis.from_url(settings.redis_url)
    # Measured from its first counted event, so faust's start-up is not charged.
    started: float | None = None
    first = 0
    try:
        while True:
            done = sum(int(value) for value in await redis.hvals(counter))
            if started is None and done:
                started, first = time.perf_counter(), done
            if done >= total:
                break
            if process.poll() is not None:
                raise RuntimeError("the naive baseline exited early")
            await asyncio.sleep(0.05)
        assert started is not None
        return (total - first) / (time.perf_counter() - started)
    finally:
        process.terminate()
        process.wait(timeout=60)
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--visitors", type=int, default=40_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--compare", action="store_true",
        help="also measure the ceiling (bare consumer) and the naive faust baseline on the same topics",
    )  # fmt: skip
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
