"""Read-API benchmark: requests/s and p50/p99 latency of the Mida result endpoint.

    .venv/bin/python bench/api_latency.py --visitors 1000000 --json out.json

Fills a fresh key prefix with an experiment of N visitors (4 variants, 3 goals,
30 days) through the real Lua sink (no Kafka: only the API is measured), stores a
default-result snapshot as the worker would, starts `python -m worker api` as its own
process(es) and drives it from a separate load process (bench/http_load.py: raw
HTTP/1.1 keep-alive, 32 concurrent connections): the default result (served from the
snapshot) and a filtered result (computed from the counters, then cached by the API).
The load generator's own ceiling is measured in the same run against a trivial server
answering with a body of the same size. `--baseline-tree DIR` also measures an API
started from another checkout (e.g. `git archive <commit> | tar -x -C DIR`) in the same
run, for a before/after comparison on the same noisy machine.

`--flood` measures back-pressure instead (issue 16): while FLOOD_QUERIES distinct
queries that need the per-visitor scan (``timeframe_days=1..200``) are sent
FLOOD_CONCURRENCY at a time, the default result is driven by the load process in
back-to-back rounds until the flood is over; it prints the default result's p50/p99
during the flood and how each scan was answered (200, or 503 once
``AB_API_SCAN_WAIT_SECONDS`` passed, with its Retry-After and error body) and how long
it took.

A slow query never stops the run: timeouts and error statuses are counted.
The bench keys are deleted at the end unless `--keep`; `--prefix P --keep` lets a
later run reuse a populated prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.config import DEFAULT_API_WORKERS, Settings  # noqa: E402
from worker.events.experiment import ExperimentDefinition  # noqa: E402
from worker.ingestion.commands import SourceMessage, plan_assignment, plan_conversion  # noqa: E402
from worker.ingestion.partitioning import partition_for  # noqa: E402
from worker.results.contract import Snapshot  # noqa: E402
from worker.results.query import ResultQuery  # noqa: E402
from worker.results.service import compute_result  # noqa: E402
from worker.store import keys  # noqa: E402
from worker.store.api_keys import create_key  # noqa: E402
from worker.store.batch_sink import BatchSink, SinkSettings  # noqa: E402
from worker.store.connection import Redis, connect  # noqa: E402
from worker.store.snapshots import save_snapshot  # noqa: E402

PARTITIONS = 12
CONNECTIONS = 32
FILTER = "filter_by=mobile,country-US"
FLOOD_QUERIES = 200
FLOOD_CONCURRENCY = 50
FLOOD_ROUND_SECONDS = 2.0
"""Length of each round of default-result load while a flood runs."""
BENCH = Path(__file__).resolve().parent
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
    sink = BatchSink(redis, SinkSettings(prefix, 7 * 86400, 3_600_000, assignments_topic="a"))
    catalog = {DEFINITION.id: DEFINITION}
    start = datetime(2026, 10, 1, tzinfo=UTC)
    # Published after every event happened, one millisecond apart, in visitor order.
    published_ms = int((start + timedelta(days=31)).timestamp() * 1000)
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
                topic,
                partition,
                offset,
                visitor.encode(),
                json.dumps(event).encode(),
                timestamp_ms=published_ms + number,
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


def wait_ready(url: str, headers: dict[str, str], seconds: float) -> bytes:
    """The body of the first 200 answer of ``url`` (polled until ``seconds`` passed)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=seconds) as response:
                return bytes(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def load(url: str, key: str | None, seconds: float, timeout: float) -> dict[str, Any]:
    """What one load process driving ``url`` with 32 connections for ``seconds`` saw:
    ``latencies_ms`` of the 200s, ``errors`` and ``elapsed_s``."""
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "load.json"
        command = [sys.executable, str(BENCH / "http_load.py"), "load", url, "--out", str(out)]
        command += ["--connections", str(CONNECTIONS), "--seconds", str(seconds)]
        command += ["--timeout", str(timeout)]
        if key is not None:
            command += ["--header", f"Authorization: Bearer {key}"]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + timeout + 60
        )
        if done.returncode != 0 or not out.exists():
            return {"latencies_ms": [], "errors": {"load process": 1}, "elapsed_s": seconds,
                    "detail": done.stderr.strip()[-300:]}  # fmt: skip
        figures: dict[str, Any] = json.loads(out.read_text())
        return figures


def percentiles(latencies_ms: list[float]) -> dict[str, float | None]:
    """p50, p99 and max of the latencies (None without any)."""
    ordered = sorted(latencies_ms)
    if not ordered:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": round(ordered[len(ordered) // 2], 2),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 2),
        "max_ms": round(ordered[-1], 2),
    }


def measure(url: str, key: str | None, seconds: float, timeout: float) -> dict[str, Any]:
    """Figures of one load process driving ``url`` with 32 connections for ``seconds``."""
    figures = load(url, key, seconds, timeout)
    latencies = figures["latencies_ms"]
    return {
        "rps": round(len(latencies) / figures["elapsed_s"], 1),
        **percentiles(latencies),
        "errors": figures["errors"],
        "requests": len(latencies),
        **({"detail": figures["detail"]} if "detail" in figures else {}),
    }


def client_ceiling(body_bytes: int, seconds: float, timeout: float) -> float:
    """Requests/s of the load generator against a trivial server (same body size)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(BENCH / "http_load.py"), "serve", "--port", str(port),
         "--body-bytes", str(body_bytes)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        server.stdout.readline()  # "ready"
        return float(measure(f"http://127.0.0.1:{port}/", None, seconds, timeout)["rps"])
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextlib.contextmanager
def running_api(args: argparse.Namespace, tree: Path) -> Iterator[str]:
    """`python -m worker api` of ``tree`` running; yields the URL of the bench result."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if args.workers is not None:
        env["AB_API_WORKERS"] = str(args.workers)
    api = subprocess.Popen(
        [sys.executable, "-m", "worker", "api", "--port", str(port), "--log-level", "warning"],
        env=env,
        cwd=tree,
        start_new_session=True,  # its uvicorn workers are stopped with it
    )
    try:
        yield f"http://127.0.0.1:{port}/v2/project/bench/experiment/{DEFINITION.id}/result"
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(timeout=60)


def measure_api(args: argparse.Namespace, key: str, tree: Path, notes: list[str]) -> dict[str, Any]:
    """Default and filtered figures of `python -m worker api` run from ``tree``."""
    headers = {"Authorization": f"Bearer {key}"}
    figures: dict[str, Any] = {}
    with running_api(args, tree) as base:
        body = wait_ready(base, headers, 60)
        figures["default"] = measure(base, key, args.seconds, args.timeout)
        # The first filtered answer of each API process is a computation: it is timed
        # here, not in the measured load. Parallel first requests reach every process.
        began = time.perf_counter()
        warmups = 4 * (args.workers or DEFAULT_API_WORKERS)
        with ThreadPoolExecutor(warmups) as pool:
            warm = [pool.submit(wait_ready, f"{base}?{FILTER}", headers, max(args.timeout, 120))
                    for _ in range(warmups)]  # fmt: skip
            failed = [str(future.exception()) for future in warm if future.exception()]
        took = time.perf_counter() - began
        notes.append(f"{tree.name}: first filtered answers (cold, {warmups} in parallel) took {took:.1f} s"
                     + (f"; {len(failed)} failed: {failed[0]}" if failed else ""))  # fmt: skip
        figures["filtered"] = measure(f"{base}?{FILTER}", key, args.seconds, args.timeout)
        figures["body_bytes"] = len(body)
    return figures


def scan(url: str, headers: dict[str, str], timeout: float) -> tuple[str, float, str | None, str]:
    """How one scan query was answered (``200``, ``503``, ... or the error), its ms, the
    answer's Retry-After (None without one) and the start of an error answer's body."""
    began = time.perf_counter()
    retry_after, body = None, ""
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        ) as answer:
            answer.read()
            outcome = str(answer.status)
    except urllib.error.HTTPError as error:
        outcome = str(error.code)
        retry_after = error.headers.get("Retry-After")
        body = error.read()[:300].decode(errors="replace")
    except OSError as error:
        outcome = type(error).__name__
    return outcome, (time.perf_counter() - began) * 1000, retry_after, body


def measure_flood(args: argparse.Namespace, key: str, tree: Path) -> dict[str, Any]:
    """The default result's latency while FLOOD_QUERIES distinct scans are sent
    FLOOD_CONCURRENCY at a time to the API of ``tree``, and how the scans were answered."""
    headers = {"Authorization": f"Bearer {key}"}
    with running_api(args, tree) as base:
        wait_ready(base, headers, 60)
        urls = [f"{base}?timeframe_days={days}" for days in range(1, FLOOD_QUERIES + 1)]
        began = time.perf_counter()
        with ThreadPoolExecutor(FLOOD_CONCURRENCY) as pool:
            scans = [pool.submit(scan, url, headers, args.flood_timeout) for url in urls]
            latencies: list[float] = []
            errors: dict[str, int] = {}
            rounds = 0
            while rounds == 0 or not all(future.done() for future in scans):
                figures = load(base, key, FLOOD_ROUND_SECONDS, args.timeout)
                latencies += figures["latencies_ms"]
                for reason, count in figures["errors"].items():
                    errors[reason] = errors.get(reason, 0) + count
                rounds += 1
            answers = [future.result() for future in scans]
        took = time.perf_counter() - began
    outcomes: dict[str, list[float]] = {}
    retry_after: dict[str, list[str]] = {}
    bodies: dict[str, str] = {}
    for outcome, ms, retry, body in answers:
        outcomes.setdefault(outcome, []).append(ms)
        if retry is not None:
            retry_after.setdefault(outcome, []).append(retry)
        bodies.setdefault(outcome, body)
    return {
        "flood_seconds": round(took, 1),
        "default": {**percentiles(latencies), "requests": len(latencies), "errors": errors},
        "scans": {
            outcome: {
                "count": len(ms),
                **percentiles(ms),
                "retry_after": len(retry_after.get(outcome, [])),
                "retry_after_values": sorted(set(retry_after.get(outcome, []))),
                **({"body": bodies[outcome]} if bodies[outcome] else {}),
            }
            for outcome, ms in sorted(outcomes.items())
        },
    }


def report_flood(results: dict[str, Any]) -> None:
    """The flood figures as a table on stdout."""
    print(f"\n{results['visitors']:,} visitors; {FLOOD_QUERIES} distinct scans "
          f"(timeframe_days=1..{FLOOD_QUERIES}), {FLOOD_CONCURRENCY} at a time; default result "
          f"driven meanwhile by {CONNECTIONS} connections")  # fmt: skip
    rows = [("this tree", results["flood"])]
    if "baseline" in results:
        rows.append(("baseline", results["baseline"]))
    for label, figures in rows:
        default = figures["default"]
        print(f"{label}: flood took {figures['flood_seconds']} s; default result p50 "
              f"{default['p50_ms']} ms, p99 {default['p99_ms']} ms, max {default['max_ms']} ms "
              f"over {default['requests']:,} answers, errors {default['errors'] or 'none'}")  # fmt: skip
        for outcome, scans in figures["scans"].items():
            print(f"    scans answered {outcome}: {scans['count']}, p50 {scans['p50_ms']} ms, "
                  f"max {scans['max_ms']} ms, with Retry-After {scans['retry_after']}"
                  f" {scans['retry_after_values'] or ''}")  # fmt: skip
            if "body" in scans:
                print(f"      e.g. {scans['body']}")


async def delete_prefix(redis: Redis, prefix: str) -> int:
    """Delete every key of the bench prefix; the count deleted."""
    deleted = 0
    batch: list[bytes] = []
    async for name in redis.scan_iter(match=f"{prefix}:*", count=10_000):
        batch.append(name)
        if len(batch) >= 10_000:
            deleted += await redis.unlink(*batch)
            batch = []
    if batch:
        deleted += await redis.unlink(*batch)
    return deleted


async def prepare(redis: Redis, prefix: str, visitors: int) -> str:
    """Populate (unless the prefix already holds the experiment), snapshot, key."""
    if await redis.hexists(keys.experiments_key(prefix), DEFINITION.id):
        print(f"reusing the data under {prefix}", flush=True)
    else:
        print(f"populating {visitors:,} visitors under {prefix}...", flush=True)
        began = time.perf_counter()
        await populate(redis, prefix, visitors)
        print(f"  done in {time.perf_counter() - began:.0f} s", flush=True)
    print("computing the snapshot...", flush=True)
    document = await compute_result(redis, prefix, DEFINITION, ResultQuery())
    snapshot = Snapshot(
        document=document,
        applied_offsets={},
        computed_at=datetime.now(UTC),
        interval_index=0,
        computed_by="bench",
    )
    await save_snapshot(redis, prefix, DEFINITION.id, snapshot.model_dump(mode="json"))
    key, _ = await create_key(redis, prefix, "bench")
    return key


def report(results: dict[str, Any]) -> None:
    """The figures as a table on stdout."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        "unknown",
    )  # fmt: skip
    print(f"\nmachine: {os.cpu_count()} cores, {cpu}; {results['visitors']:,} visitors; "
          f"{CONNECTIONS} connections")  # fmt: skip
    print(f"load generator ceiling (trivial server): {results['client_ceiling_rps']:,.0f} req/s")
    print(
        f"{'api':<10} {'query':<30} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  errors"
    )
    rows = [("this tree", results)]
    if "baseline" in results:
        rows.append(("baseline", results["baseline"]))
    for label, figures in rows:
        for query in ("default", "filtered"):
            row = figures[query]
            p50 = "-" if row["p50_ms"] is None else f"{row['p50_ms']:.1f}"
            p99 = "-" if row["p99_ms"] is None else f"{row['p99_ms']:.1f}"
            top = "-" if row.get("max_ms") is None else f"{row['max_ms']:.0f}"
            name = "default (snapshot)" if query == "default" else FILTER
            print(
                f"{label:<10} {name:<30} {row['rps']:>8,.0f} {p50:>8} {p99:>8} {top:>8}  {row['errors'] or ''}"
            )
    for note in results["notes"]:
        print(f"note: {note}")


async def run(args: argparse.Namespace) -> None:
    prefix = args.prefix or f"apibench{uuid.uuid4().hex[:6]}"
    os.environ["AB_KEY_PREFIX"] = prefix
    settings = Settings.from_env()
    redis = connect(settings)
    notes: list[str] = []
    try:
        key = await prepare(redis, prefix, args.visitors)
        tree = BENCH.parent
        if args.flood:
            flood = {"visitors": args.visitors, "flood": measure_flood(args, key, tree)}
            if args.baseline_tree is not None:
                flood["baseline"] = measure_flood(args, key, args.baseline_tree.resolve())
            report_flood(flood)
            if args.json is not None:
                args.json.write_text(json.dumps(flood, indent=2) + "\n")
            return
        figures = measure_api(args, key, tree, notes)
        results: dict[str, Any] = {
            "visitors": args.visitors,
            "connections": CONNECTIONS,
            "default": figures["default"],
            "filtered": figures["filtered"],
            "client_ceiling_rps": client_ceiling(figures["body_bytes"], args.seconds, args.timeout),
            "api_workers": args.workers or DEFAULT_API_WORKERS,
            "notes": notes,
        }
        if args.baseline_tree is not None:
            results["baseline"] = measure_api(args, key, args.baseline_tree.resolve(), notes)
        results["notes"].append(
            f"each figure: one load process, {CONNECTIONS} closed-loop keep-alive connections, "
            f"{args.seconds:.0f} s; p50/p99 over the successful (HTTP 200) answers; API, Redis and the load "
            "process share the machine"
        )
    finally:
        if not args.keep:
            print(f"deleted {await delete_prefix(redis, prefix):,} bench keys", flush=True)
        await redis.aclose()
    report(results)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--visitors", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10, help="per measured load")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--workers", type=int, help="AB_API_WORKERS of the API under test")
    parser.add_argument("--timeout", type=float, default=30, help="client seconds per request")
    parser.add_argument("--baseline-tree", type=Path, help="also measure the API of this tree")
    parser.add_argument("--prefix", help="Redis key prefix (default: a fresh one)")
    parser.add_argument("--keep", action="store_true", help="keep the bench keys")
    parser.add_argument("--flood", action="store_true", help="measure back-pressure (see above)")
    parser.add_argument("--flood-timeout", type=float, default=600, help="client seconds per scan")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
