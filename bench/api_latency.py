"""Read-API benchmark: requests/s and p50/p99 latency of the Mida result endpoint.

    .venv/bin/python bench/api_latency.py --visitors 1000000 --seconds 20

Fills a fresh key prefix with an experiment of N visitors (4 variants, 3 goals,
30 days) through the real Lua sink (no Kafka: only the API is measured), stores a
default-result snapshot as the worker would, starts `python -m worker api` as its own
process and drives it from a separate load process with 32 concurrent connections:
the default result (served from the snapshot) and a filtered result (computed from
the counters, then cached for 5 s by the API).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.config import Settings  # noqa: E402
from worker.events.experiment import ExperimentDefinition  # noqa: E402
from worker.ingestion.commands import SourceMessage, plan_assignment, plan_conversion  # noqa: E402
from worker.ingestion.partitioning import partition_for  # noqa: E402
from worker.results.query import ResultQuery  # noqa: E402
from worker.results.service import compute_result  # noqa: E402
from worker.store import keys  # noqa: E402
from worker.store.api_keys import create_key  # noqa: E402
from worker.store.batch_sink import BatchSink, SinkSettings  # noqa: E402
from worker.store.snapshots import save_snapshot  # noqa: E402

PARTITIONS = 12
DEFINITION = ExperimentDefinition.model_validate(
    {
        "id": "bench-exp",
        "project_key": "bench",
        "name": "API benchmark",
        "status": "live",
        "variants": [{"id": str(i), "name": f"V{i}", "is_control": i == 0} for i in range(4)],
        "goals": [
            {"key": "purchase", "name": "Purchase", "type": "revenue", "primary": True},
            {"key": "signup", "name": "Signup"},
            {"key": "click", "name": "Click", "type": "count"},
        ],
    }
)


async def populate(redis: Redis, prefix: str, visitors: int) -> None:
    """Apply generated events through the Lua sink, partition by partition."""
    rng = random.Random(1)
    sink = BatchSink(redis, SinkSettings(prefix, 7 * 86400, 3_600_000))
    catalog = {DEFINITION.id: DEFINITION}
    start = datetime(2026, 10, 1, tzinfo=UTC)
    offsets: dict[tuple[str, int], int] = {}
    pending: dict[int, list[dict[str, object]]] = {p: [] for p in range(PARTITIONS)}
    applied = 0
    for number in range(visitors):
        visitor = f"v{number}"
        partition = partition_for(visitor, PARTITIONS)
        moment = start + timedelta(seconds=rng.randrange(30 * 86400))
        events = [("a", {
            "event_id": f"a{number}", "experiment_id": DEFINITION.id, "variant_id": str(rng.randrange(4)),
            "visitor_id": visitor, "timestamp": moment.isoformat(),
            "context": {"device": rng.choice(("mobile", "desktop", "tablet")),
                        "browser": rng.choice(("chrome", "safari", "firefox")),
                        "country": rng.choice(("US", "CA", "DE", "FR", "GB")),
                        "source": rng.choice(("direct", "search", "paid"))},
        })]  # fmt: skip
        for goal in DEFINITION.goals:
            if rng.random() < 0.1:
                event = {"event_id": f"{goal.key}{number}", "visitor_id": visitor, "goal": goal.key,
                         "timestamp": (moment + timedelta(minutes=5)).isoformat()}  # fmt: skip
                if goal.key == "purchase":
                    event["value"] = round(rng.uniform(5, 200), 2)
                events.append(("c", event))
        for kind, event in events:
            topic = "a" if kind == "a" else "c"
            offset = offsets.get((topic, partition), 0)
            offsets[(topic, partition)] = offset + 1
            message = SourceMessage(
                topic, partition, offset, visitor.encode(), json.dumps(event).encode()
            )
            plan = (plan_assignment if kind == "a" else plan_conversion)(
                message, catalog, PARTITIONS
            )
            pending[partition].append(plan.command)
            if len(pending[partition]) >= 500:
                await sink.apply(partition, pending[partition], [])
                applied += len(pending[partition])
                pending[partition] = []
        if number and number % 100_000 == 0:
            print(f"  {number:,} visitors applied", flush=True)
    for partition, commands in pending.items():
        if commands:
            await sink.apply(partition, commands, [])
    await redis.hset(keys.meta_key(prefix), "partitions", PARTITIONS)
    await redis.hset(keys.experiments_key(prefix), DEFINITION.id, DEFINITION.model_dump_json())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def load(url: str, headers: dict[str, str], seconds: float, connections: int) -> list[float]:
    """Latencies (ms) of back-to-back requests from `connections` workers for `seconds`."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:

        async def one() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await client.get(url)
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text[:200]}")

        await asyncio.gather(*(one() for _ in range(connections)))
    return latencies


def load_process(url: str, key: str, seconds: float, connections: int) -> dict[str, float]:
    """Run the load from a separate Python process, as the issue asks."""
    code = (
        "import asyncio, json, sys; sys.path.insert(0, 'bench'); from api_latency import load; "
        f"l = asyncio.run(load({url!r}, {{'Authorization': 'Bearer {key}'}}, {seconds}, {connections})); "
        "print(json.dumps(l))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if output.returncode != 0:
        raise RuntimeError(f"the load process failed: {output.stderr.strip()[-500:]}")
    latencies = sorted(json.loads(output.stdout))
    return {
        "requests": len(latencies),
        "rps": len(latencies) / seconds,
        "p50": statistics.median(latencies),
        "p99": latencies[int(0.99 * (len(latencies) - 1))],
    }


async def run(args: argparse.Namespace) -> None:
    prefix = f"apibench{uuid.uuid4().hex[:6]}"
    os.environ["AB_KEY_PREFIX"] = prefix
    settings = Settings.from_env()
    redis = Redis.from_url(settings.redis_url)
    print(f"populating {args.visitors:,} visitors under {prefix}...", flush=True)
    began = time.perf_counter()
    await populate(redis, prefix, args.visitors)
    print(f"  done in {time.perf_counter() - began:.0f} s", flush=True)
    snapshot = await compute_result(redis, prefix, DEFINITION, ResultQuery())
    await save_snapshot(redis, prefix, DEFINITION.id, snapshot)
    key, _ = await create_key(redis, prefix, "bench")
    await redis.aclose()
    port = free_port()
    api = subprocess.Popen(
        [sys.executable, "-m", "worker", "api", "--port", str(port)],
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/v2/project/bench/experiment/{DEFINITION.id}/result"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        rows = [
            ("default (snapshot)", base),
            (
                "filter_by=mobile,country-US (counters, cached 5 s)",
                base + "?filter_by=mobile,country-US",
            ),
        ]
        cpu = next(
            (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
            "unknown",
        )  # fmt: skip
        print(
            f"\nmachine: {os.cpu_count()} cores, {cpu}; {args.visitors:,} visitors; 32 connections; {args.seconds:.0f} s each"
        )
        print(f"{'query':<52} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for name, url in rows:
            figures = load_process(url, key, args.seconds, 32)
            print(
                f"{name:<52} {figures['requests']:>9,.0f} {figures['rps']:>8,.0f} {figures['p50']:>8.1f} {figures['p99']:>8.1f}"
            )
    finally:
        api.terminate()
        api.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--visitors", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=20)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
