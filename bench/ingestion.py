"""Ingestion benchmark: every contender on the same events, in one run.

    .venv/bin/python bench/ingestion.py [--events 1000000] [--visitors 100000] [--json out.json]

Generates the events once (default: the figures of issue #8, 1,000,000 events over
100,000 visitors, 3 experiments, 12 partitions), publishes them once to fresh topics,
then lets each contender consume them from the start with its own consumer group and
Redis key prefix, one contender at a time, so every one gets identical input and no
producer competes for the CPU:

* ceiling: a bare aiokafka consumer that only reads and JSON-decodes;
* baseline: the naive faust agent of bench/naive_baseline.py (one Redis call per event);
* each ingestion engine (faust, aiokafka) with 1 and with 2 worker processes;
* a peer, quixstreams (`--engines ...,quixstreams`): bench/quix_contender.py, an
  Application with processing_guarantee="exactly-once" and RocksDB state doing the same
  counting, in one process, run by the interpreter of --quix-python (default:
  .venv-quix, created from bench/requirements-quix.lock on first use, as quixstreams
  pins another pydantic than requirements.lock). Its rate runs from its first to its
  last processed event; "to commit" adds its final checkpoint commit.

Every contender's per-variant visitors, converted visitors, goal events and revenue
are checked against a plain-Python count over the generated events (`expected_counts`).

A contender's rate is events/s from its first applied event to its last (worker
start-up is not charged; a rebalance while the second worker joins is). Redis bytes
per visitor-experiment are INFO used_memory after minus before a contender's run
(dedup ids, visitor state and counters), and the sum of MEMORY USAGE of its keys (which
other clients of a shared Redis cannot move); its keys are deleted afterwards.
Finally one engine (--concurrent, default: the default engine) is measured end
to end with concurrent publishing: first publish to last applied in Redis.
Figures move with the machine's load: compare ratios measured in the same run.

With --cluster it runs on the cluster topology instead (`python -m worker services up
--cluster`: three brokers, topics of three replicas, a Redis Cluster of three primaries
and three replicas; started if needed and stopped afterwards unless it ran before):
the default engine with 1, 2 and 3 workers, each run --repeat times (medians). From
the first applied event to the last it also measures CPU seconds: the workers' and
the brokers' (/proc), each Redis node's (INFO cpu; a primary's also as time inside
the sink's scripts, INFO commandstats, which is wall-clock time and grows when the
node waits for a core) and the whole machine's (/proc/stat), per event applied (per
shard: per event applied on that primary): the README's sizing section is built
from them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio.cluster import RedisCluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_experiments import two_arm_definition  # noqa: E402

from worker.config import ENGINES, Settings, engine_name, namespace_env  # noqa: E402
from worker.ingestion.topics import ensure_topics  # noqa: E402
from worker.services import cluster  # noqa: E402
from worker.services import processes as services  # noqa: E402
from worker.store import keys  # noqa: E402
from worker.store.connection import Redis, connect  # noqa: E402
from worker.store.counter_reader import read_counters  # noqa: E402

EXPERIMENTS = ("bench-a", "bench-b", "bench-c")
ROOT = Path(__file__).resolve().parents[1]
Message = tuple[str, bytes, bytes]  # (kind "a"/"c", key, value)
QUIX = "quixstreams"
CONTENDERS = (*ENGINES, QUIX)
QUIX_VENV = ROOT / ".venv-quix"
Counts = dict[str, list[float]]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SCRIPT_COMMANDS = ("evalsha", "eval")
"""`visitors:{experiment}:{variant}` -> [visitors] and `goal:{experiment}:{variant}:{goal}`
-> [converted visitors, goal events, revenue]: the names bench/quix_contender.py uses."""


def definitions() -> list[dict[str, object]]:
    return [two_arm_definition(experiment) for experiment in EXPERIMENTS]


def generate(
    events: int, visitors: int, seed: int, unknown_rate: float = 0.0
) -> tuple[list[Message], int]:
    """~70 % assignments, ~30 % conversions; returns messages and visitor-experiment entries.

    With `unknown_rate`, that share of events are assignments to experiments nobody
    defined (50 distinct ids): dead-lettered `unknown_experiment`, as a misconfigured
    producer's traffic would be.
    """
    rng = random.Random(seed)
    unknown = random.Random(seed + 1)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    out: list[Message] = []
    entries: set[tuple[int, str]] = set()
    for n in range(events):
        visitor = rng.randrange(visitors)
        experiment = EXPERIMENTS[visitor % len(EXPERIMENTS)]
        moment = start + timedelta(seconds=n)
        if unknown_rate and unknown.random() < unknown_rate:
            event = {
                "event_id": f"u{n}",
                "experiment_id": f"no-such-experiment-{unknown.randrange(50)}",
                "variant_id": "0",
                "visitor_id": f"visitor-{visitor}",
                "timestamp": moment.isoformat(),
            }
            out.append(("a", f"visitor-{visitor}".encode(), json.dumps(event).encode()))
        elif rng.random() < 0.7 or (visitor, experiment) not in entries:
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


def expected_counts(messages: list[Message]) -> Counts:
    """Per-variant counts of the defined experiments, from the generated events alone.

    The first assignment wins; a conversion (once per event_id) counts for each
    experiment the visitor entered at or before its timestamp.
    """
    decoded = [(kind, json.loads(value)) for kind, _, value in messages]
    first: dict[tuple[str, str], dict[str, str]] = {}
    for kind, event in decoded:
        if kind == "a" and event["experiment_id"] in EXPERIMENTS:
            first.setdefault((event["visitor_id"], event["experiment_id"]), event)
    counts: Counts = defaultdict(lambda: [0])
    for entry in first.values():
        counts[f"visitors:{entry['experiment_id']}:{entry['variant_id']}"][0] += 1
    seen: set[str] = set()
    converted: set[tuple[str, str, str]] = set()
    for kind, event in decoded:
        if kind != "c" or event["event_id"] in seen:
            continue
        seen.add(event["event_id"])
        moment = datetime.fromisoformat(event["timestamp"])
        for experiment in EXPERIMENTS:
            entered = first.get((event["visitor_id"], experiment))
            if entered is None or datetime.fromisoformat(entered["timestamp"]) > moment:
                continue
            name = f"goal:{experiment}:{entered['variant_id']}:{event['goal']}"
            row = counts.setdefault(name, [0, 0, 0.0])
            mark = (event["visitor_id"], experiment, event["goal"])
            row[0] += mark not in converted
            converted.add(mark)
            row[1] += 1
            row[2] += event.get("value", 0.0)
    return dict(counts)


def differences(expected: Counts, got: Counts) -> list[str]:
    """Where `got` differs from `expected`, over the defined experiments (revenue to 1e-9)."""
    mine = {name: row for name, row in got.items() if name.split(":")[1] in EXPERIMENTS}
    out = []
    for name in sorted(expected.keys() | mine.keys()):
        want, have = expected.get(name), mine.get(name)
        if (
            want is None
            or have is None
            or len(want) != len(have)
            or not all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(want, have, strict=True))
        ):
            out.append(f"{name}: expected {want}, got {have}")
    return out


async def engine_counts(redis: Redis, prefix: str) -> Counts:
    """Our engine's counters under `prefix`, summed over cells, in the oracle's names."""
    counts: Counts = defaultdict(lambda: [0, 0, 0.0])
    for experiment in EXPERIMENTS:
        for cell, metrics in (await read_counters(redis, prefix, experiment)).cells.items():
            counts[f"visitors:{experiment}:{cell.variant}"][0] += metrics.get("n", 0)
            goal = counts[f"goal:{experiment}:{cell.variant}:purchase"]
            goal[0] += metrics.get("g:purchase:cv", 0)
            goal[1] += metrics.get("g:purchase:ev", 0)
            goal[2] += metrics.get("g:purchase:rev", 0.0)
    visitors = {name: row[:1] for name, row in counts.items() if name.startswith("visitors:")}
    goals = {name: row for name, row in counts.items() if name.startswith("goal:") and row[1]}
    return visitors | goals


def check(bench: Bench, label: str, got: Counts) -> bool:
    """Print whether a contender's counts match the oracle; a mismatch is also a note."""
    problems = differences(bench.expected, got)
    if problems:
        print(f"{label}: counts DIFFER from the oracle: " + "; ".join(problems[:5]), flush=True)
        bench.notes.append(f"{label}: counts differ from the oracle ({len(problems)} rows)")
    else:
        print(f"{label}: counts match the oracle ({len(got)} rows)", flush=True)
    return not problems


@dataclass
class Bench:
    """The run's shared state: options, base environment, the published input."""

    args: argparse.Namespace
    name: str
    env: dict[str, str]
    settings: Settings
    redis: Redis
    total: int = 0
    entries: int = 0
    expected: Counts = field(default_factory=dict)
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-ingestion-")))
    notes: list[str] = field(default_factory=list)
    topology: cluster.ClusterLayout | None = None
    """The cluster topology's nodes (--cluster), whose CPU is measured."""


def topic_env(name: str) -> dict[str, str]:
    """The namespace's topics only: each contender brings its own group and key prefix."""
    return {key: value for key, value in namespace_env(name).items() if key.startswith("AB_TOPIC_")}


def settings_for(env: dict[str, str]) -> Settings:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return Settings.from_env()
    finally:
        os.environ.clear()
        os.environ.update(saved)


async def applied_per_partition(redis: Redis, prefix: str, partitions: int) -> list[int]:
    """Events applied under `prefix` in each partition, by the offsets the Lua script stored."""
    pipe = redis.pipeline(transaction=False)
    for partition in range(partitions):
        pipe.hgetall(keys.offsets_key(prefix, partition))
    return [sum(int(value) + 1 for value in offsets.values()) for offsets in await pipe.execute()]


async def applied(redis: Redis, prefix: str, partitions: int) -> int:
    """Events applied under `prefix`, by the offsets the Lua script stored."""
    return sum(await applied_per_partition(redis, prefix, partitions))


async def node_info(redis: Redis, section: str) -> dict[str, dict[str, Any]]:
    """INFO `section` of each node (on a Cluster, primaries and replicas), by node name."""
    if isinstance(redis, RedisCluster):
        return {
            node.name: await redis.info(section, target_nodes=node) for node in redis.get_nodes()
        }
    return {"redis": await redis.info(section)}


def primaries(redis: Redis) -> list[str]:
    """The names of the nodes that hold slots (the one server of a Redis alone)."""
    if isinstance(redis, RedisCluster):
        return [node.name for node in redis.get_primaries()]
    return ["redis"]


def shard_of(redis: Redis, prefix: str, partition: int) -> str:
    """The node that holds a partition's keys (they share one hash tag)."""
    if isinstance(redis, RedisCluster):
        node = redis.get_node_from_key(keys.offsets_key(prefix, partition))
        assert node is not None
        return str(node.name)
    return "redis"


async def used_memory(redis: Redis) -> int:
    """INFO used_memory, summed over the primaries of a Cluster."""
    memory = await node_info(redis, "memory")
    return sum(int(memory[name]["used_memory"]) for name in primaries(redis))


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:
        return 0.0
    # utime and stime are the stat line's 14th and 15th fields, 12th and 13th after the name.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy() -> float:
    """CPU seconds every core of the machine has spent not idle (/proc/stat)."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    return (sum(ticks[:8]) - idle) / CLOCK_TICKS


@dataclass(frozen=True)
class Usage:
    """What was applied and how much CPU had been used at one moment of a run."""

    at: float
    applied: list[int]
    """Events applied per partition."""
    workers: float
    brokers: float
    machine: float
    redis: dict[str, float]
    """Node name -> used_cpu_user + used_cpu_sys."""
    scripts: dict[str, float]
    """Primary name -> seconds inside scripts (commandstats' usec of EVALSHA and EVAL)."""


async def usage(bench: Bench, prefix: str, workers: Running) -> Usage:
    """A sample of the run under `prefix`: what is applied, and the CPU used so far."""
    redis = bench.redis
    cpu = await node_info(redis, "cpu")
    stats = await node_info(redis, "commandstats")
    brokers = [
        services.read_pid(node.pid_file)
        for node in (bench.topology.kafka if bench.topology else ())
    ]
    return Usage(
        at=time.perf_counter(),
        applied=await applied_per_partition(redis, prefix, bench.settings.partitions),
        workers=workers.cpu_seconds(),
        brokers=sum(process_cpu(pid) for pid in brokers if pid is not None),
        machine=machine_busy(),
        redis={
            name: float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
            for name, info in cpu.items()
        },
        # The sink is one script call per partition of a batch; the commands a script
        # calls are counted again under their own names, so only the scripts are summed.
        scripts={
            name: sum(
                stats[name].get(f"cmdstat_{command}", {}).get("usec", 0)
                for command in SCRIPT_COMMANDS
            )
            / 1e6
            for name in primaries(redis)
        },
    )


def cpu_figures(bench: Bench, prefix: str, first: Usage, last: Usage) -> dict[str, Any]:
    """CPU per event applied between two samples: microseconds per event of the workers,
    the brokers, the Redis primaries (all, and each per event applied on it) and
    replicas; the machine's busy cores."""
    redis = bench.redis
    events = sum(last.applied) - sum(first.applied)
    per_shard_events: dict[str, int] = defaultdict(int)
    for partition, (before, after) in enumerate(zip(first.applied, last.applied, strict=True)):
        per_shard_events[shard_of(redis, prefix, partition)] += after - before
    shards = primaries(redis)
    spent = {name: last.redis[name] - first.redis.get(name, 0.0) for name in last.redis}

    def micros(seconds: float, count: int) -> float:
        return seconds / count * 1e6 if count else math.nan

    return {
        "events": float(events),
        "worker_us_per_event": micros(last.workers - first.workers, events),
        "broker_us_per_event": micros(last.brokers - first.brokers, events),
        "redis_primaries_us_per_event": micros(sum(spent[n] for n in shards), events),
        "redis_replicas_us_per_event": micros(
            sum(value for name, value in spent.items() if name not in shards), events
        ),
        "redis_shard_us_per_event": {
            name: micros(spent[name], per_shard_events[name]) for name in shards
        },
        "redis_shard_script_us_per_event": {
            name: micros(last.scripts[name] - first.scripts[name], per_shard_events[name])
            for name in shards
        },
        "shard_events": {name: float(per_shard_events[name]) for name in shards},
        "busy_cores": (last.machine - first.machine) / (last.at - first.at),
    }


async def measure_and_delete(redis: Redis, prefix: str) -> tuple[int, int]:
    """Sum MEMORY USAGE of a contender's keys, then delete them; returns (keys, bytes).

    The key sum does not move with other clients of a shared Redis, unlike
    used_memory. Deleting synchronously settles used_memory for the next contender.
    """
    count = size = 0
    batch: list[bytes] = []

    async def flush() -> None:
        nonlocal count, size
        pipe = redis.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key, samples=0)
        size += sum(int(value or 0) for value in await pipe.execute())
        count += await redis.delete(*batch)
        batch.clear()

    async for key in redis.scan_iter(match=f"{prefix}:*", count=5000):
        batch.append(key)
        if len(batch) >= 2000:
            await flush()
    if batch:
        await flush()
    return count, size


async def publish(settings: Settings, messages: list[Message], with_definitions: bool) -> float:
    """Publish the messages (and the definitions first); returns events/s of publishing."""
    topics = {"a": settings.topic_assignments, "c": settings.topic_conversions}
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        linger_ms=20,
        max_batch_size=262144,
    )
    await producer.start()
    try:
        if with_definitions:
            for definition in definitions():
                await producer.send_and_wait(
                    settings.topic_experiments,
                    json.dumps(definition).encode(),
                    key=str(definition["id"]).encode(),
                )
        started = time.perf_counter()
        pending = []
        for n, (kind, key, value) in enumerate(messages, 1):
            pending.append(await producer.send(topics[kind], value=value, key=key))
            if n % 200_000 == 0:
                print(f"  published {n:,}/{len(messages):,}", flush=True)
        await producer.flush()
        for future in pending:
            await future
        return len(messages) / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def wait_for(
    label: str,
    total: int,
    progress: Callable[[], Awaitable[int]],
    alive: Callable[[], str | None],
) -> tuple[float, float, int]:
    """Poll until `progress` reaches `total`; returns (first seen, finished, count at first).

    `alive` returns an error text when a contender died, which ends the run.
    """
    started: float | None = None
    first = 0
    last_report = time.perf_counter()
    while True:
        done = await progress()
        now = time.perf_counter()
        if started is None and done:
            started, first = now, done
        if done >= total:
            assert started is not None
            return started, now, first
        if (problem := alive()) is not None:
            raise RuntimeError(f"{label}: {problem}")
        if now - last_report >= 5:
            last_report = now
            rate = (done - first) / (now - started) if started and now > started else 0.0
            print(f"  {label}: {done:,}/{total:,} applied ({rate:,.0f} events/s)", flush=True)
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Running:
    """A contender's processes."""

    bench: Bench
    label: str
    started: list[subprocess.Popen[bytes]]

    def alive(self) -> str | None:
        """None while every process runs; else what became of the one that exited."""
        for index, process in enumerate(self.started):
            if process.poll() is not None:
                return (
                    f"exited with {process.returncode}; "
                    f"log {self.bench.log_dir}/{self.label}-{index}.log"
                )
        return None

    def cpu_seconds(self) -> float:
        return sum(process_cpu(process.pid) for process in self.started)


@contextmanager
def processes(bench: Bench, label: str, commands: list[list[str]], env: dict[str, str]) -> Iterator[Running]:  # fmt: skip
    """Start the commands with their logs in the run's log directory; stop them after."""
    started = []
    for index, command in enumerate(commands):
        log = (bench.log_dir / f"{label}-{index}.log").open("wb")
        started.append(
            subprocess.Popen(
                command,
                env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        )

    try:
        yield Running(bench, label, started)
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def ceiling_rate(bench: Bench) -> float:
    """Read both input topics from the start with a bare consumer and JSON-decode; events/s."""
    settings = bench.settings
    consumer = AIOKafkaConsumer(
        *settings.input_topics,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"{bench.name}-ceiling",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    seen = 0
    started: float | None = None
    try:
        while seen < bench.total:
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
    return bench.total / (time.perf_counter() - started)


async def baseline_rate(bench: Bench) -> float:
    """The naive faust baseline on the same topics; measured over --baseline-events."""
    settings = bench.settings
    counter = f"{bench.name}-naive:counts"
    target = min(bench.total, bench.args.baseline_events or bench.total)
    if target < bench.total:
        bench.notes.append(
            f"baseline measured over its first {target:,} events (one Redis round trip per "
            "event makes all of them take minutes; its rate is flat)"
        )
    command = [sys.executable, str(Path(__file__).with_name("naive_baseline.py")),
               f"{bench.name}-naive", counter, *settings.input_topics]  # fmt: skip

    async def progress() -> int:
        return sum(int(value) for value in await bench.redis.hvals(counter))

    with processes(bench, "baseline", [command], bench.env) as running:
        started, finished, first = await wait_for("baseline", target, progress, running.alive)
    rate = (target - first) / (finished - started)
    await bench.redis.delete(counter)
    return rate


async def engine_rate(bench: Bench, engine: str, workers: int, run: int = 0) -> dict[str, Any]:
    """One engine with `workers` processes over all events: events/s and Redis bytes;
    on the cluster topology, also CPU per event (`cpu_figures`). `run` numbers the
    repetitions, each with its own consumer group and keys."""
    label = f"{engine}x{workers}" + (f"-{run + 1}" if run else "")
    prefix = f"{bench.name}-{label}"
    env = {**bench.env, "AB_CONSUMER_GROUP": prefix, "AB_KEY_PREFIX": prefix}
    command = [sys.executable, "-m", "worker", "run", "--loglevel", "warning", "--engine", engine]
    partitions = bench.settings.partitions
    memory_before = await used_memory(bench.redis)

    first_usage: Usage | None = None

    async def progress() -> int:
        nonlocal first_usage
        done = await applied(bench.redis, prefix, partitions)
        if done and first_usage is None and bench.topology is not None:
            first_usage = await usage(bench, prefix, running)
        return done

    print(f"{label}: {workers} worker process(es) from the start of the topics...", flush=True)
    with processes(bench, label, [command] * workers, env) as running:
        started, finished, first = await wait_for(label, bench.total, progress, running.alive)
        cpu = None
        if first_usage is not None:
            cpu = cpu_figures(bench, prefix, first_usage, await usage(bench, prefix, running))
    memory_after = await used_memory(bench.redis)
    eps = (bench.total - first) / (finished - started)
    matched = check(bench, label, await engine_counts(bench.redis, prefix))
    per_entry = (memory_after - memory_before) / bench.entries
    key_count, key_bytes = await measure_and_delete(bench.redis, prefix)
    per_entry_keys = key_bytes / bench.entries
    print(
        f"{label}: {eps:,.0f} events/s; Redis per visitor-experiment: {per_entry:,.0f} bytes "
        f"(used_memory delta), {per_entry_keys:,.0f} bytes (MEMORY USAGE of its {key_count:,} keys)"
    )
    if not 0.75 < per_entry / per_entry_keys < 1.5:
        bench.notes.append(
            f"{label}: used_memory moved by {per_entry:,.0f} bytes per visitor-experiment while "
            f"its keys hold {per_entry_keys:,.0f}: other clients of the shared Redis changed "
            "its memory meanwhile; key_bytes_per_visitor_experiment is the figure to trust"
        )
    if cpu is not None:
        print(f"{label}: {describe_cpu(cpu)}", flush=True)
    return {
        "eps": eps,
        "bytes_per_visitor_experiment": per_entry,
        "key_bytes_per_visitor_experiment": per_entry_keys,
        "matched": float(matched),
        **({"cpu": cpu} if cpu is not None else {}),
    }


def describe_cpu(cpu: dict[str, Any]) -> str:
    """One line of CPU per event (microseconds) and the machine's busy cores."""
    shards = ", ".join(
        f"{name.rpartition(':')[2]} {cpu['redis_shard_us_per_event'][name]:.0f}"
        f" ({cpu['redis_shard_script_us_per_event'][name]:.0f} in scripts)"
        for name in cpu["redis_shard_us_per_event"]
    )
    return (
        f"CPU per event: workers {cpu['worker_us_per_event']:.0f} us, brokers "
        f"{cpu['broker_us_per_event']:.0f} us, Redis primaries {cpu['redis_primaries_us_per_event']:.0f} us "
        f"+ replicas {cpu['redis_replicas_us_per_event']:.0f} us; per event on each shard: {shards} us; "
        f"machine busy {cpu['busy_cores']:.2f} of {os.cpu_count()} cores"
    )


def median_result(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over repeated runs (of each shard's figure, shard by
    shard); counts match only if they matched in every run."""
    merged: dict[str, Any] = {}
    for name, value in results[0].items():
        values = [result[name] for result in results]
        if name == "matched":
            merged[name] = min(values)
        elif isinstance(value, dict):
            merged[name] = median_result(values)
        else:
            merged[name] = statistics.median(values)
    return merged


def quix_python(bench: Bench) -> str:
    """The interpreter with quixstreams: --quix-python, else .venv-quix (made on first use)."""
    if bench.args.quix_python is not None:
        return str(bench.args.quix_python)
    python = QUIX_VENV / "bin" / "python"
    lock = Path(__file__).with_name("requirements-quix.lock")
    stamp = QUIX_VENV / ".installed"
    if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
        print(f"installing {lock.name} into {QUIX_VENV} (first use only)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(QUIX_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(lock)], check=True)  # fmt: skip
        stamp.touch()
    return str(python)


async def quix_rate(bench: Bench) -> dict[str, float]:
    """The quixstreams contender, one process, over all events: events/s and its counts."""
    label = f"{QUIX}x1"
    group = f"{bench.name}-quix"
    out = bench.log_dir / "quix.json"
    state_dir = Path(tempfile.mkdtemp(prefix="bench-quix-state-"))
    settings = bench.settings
    command = [quix_python(bench), str(Path(__file__).with_name("quix_contender.py")),
               settings.kafka_bootstrap_servers, group, str(state_dir), str(bench.total),
               str(out), settings.topic_assignments, settings.topic_conversions]  # fmt: skip
    print(f"{label}: exactly-once, RocksDB state, from the start of the topics...", flush=True)
    with (bench.log_dir / f"{label}.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(*command, stdout=log, stderr=log, cwd=ROOT)
        code = await process.wait()
    try:
        if code != 0:
            raise RuntimeError(f"{label}: exited with {code}; log {bench.log_dir}/{label}.log")
        result = json.loads(out.read_text())
    finally:
        subprocess.run(["rm", "-rf", str(state_dir)], check=False)
        # Its changelog topics are named after its consumer group.
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            mine = [topic for topic in await admin.list_topics() if group in topic]
        finally:
            await admin.close()
        await delete_topics(settings, mine)
    eps = result["processed"] / result["seconds_to_last"]
    eps_committed = result["processed"] / result["seconds_to_stopped"]
    matched = check(bench, label, result["totals"])
    print(f"{label}: {eps:,.0f} events/s ({eps_committed:,.0f} to its final commit)", flush=True)
    return {"eps": eps, "eps_to_commit": eps_committed, "matched": float(matched)}


async def concurrent_rate(bench: Bench, engine: str, messages: list[Message]) -> dict[str, float]:
    """End to end while publishing: first publish -> last applied, one worker."""
    live = f"{bench.name}-live"
    topics = {
        "AB_TOPIC_ASSIGNMENTS": f"{live}.assignments",
        "AB_TOPIC_CONVERSIONS": f"{live}.conversions",
    }
    env = {**bench.env, **topics, "AB_CONSUMER_GROUP": live, "AB_KEY_PREFIX": live}
    settings = settings_for(env)
    partitions = await ensure_topics(settings)
    command = [sys.executable, "-m", "worker", "run", "--loglevel", "warning", "--engine", engine]
    print(f"end to end: {engine}, 1 worker, publishing concurrently...", flush=True)
    with processes(bench, f"live-{engine}", [command], env) as running:
        # Ready once it wrote the meta key; then give the consumer time to join the group.
        while not await bench.redis.exists(keys.meta_key(live)):
            if (problem := running.alive()) is not None:
                raise RuntimeError(f"end to end: {problem}")
            await asyncio.sleep(0.2)
        await asyncio.sleep(5)
        started = time.perf_counter()
        publish_eps = await publish(settings, messages, with_definitions=False)

        async def progress() -> int:
            return await applied(bench.redis, live, partitions)

        _, finished, _ = await wait_for(
            f"end to end {engine}", len(messages), progress, running.alive
        )
    await measure_and_delete(bench.redis, live)
    eps = len(messages) / (finished - started)
    print(f"end to end ({engine}, 1 worker): {eps:,.0f} events/s; publishing {publish_eps:,.0f}/s")
    return {"engine": engine, "workers": 1.0, "eps": eps, "publish_eps": publish_eps}


async def delete_topics(settings: Settings, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [name for name in names if name in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


def cluster_services(command: str) -> str:
    """`python -m worker services COMMAND --cluster`; its output. The topology has
    addresses of its own: any KAFKA_BOOTSTRAP_SERVERS or REDIS_URL is left out."""
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}
    result = subprocess.run(
        [sys.executable, "-m", "worker", "services", command, "--cluster"],
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"services {command} --cluster failed: {result.stdout}{result.stderr}")
    return result.stdout


async def run(args: argparse.Namespace) -> dict[str, object]:
    name = f"bench{uuid.uuid4().hex[:8]}"
    env = {
        **topic_env(name),
        "AB_PARTITIONS": str(args.partitions),
        "AB_BATCH_SIZE": str(args.batch_size),
    }
    topology = None
    started_cluster = False
    if args.cluster:
        print("cluster topology: services up --cluster...", flush=True)
        started_cluster = ": started" in cluster_services("up")
        defaults = Settings.from_env()
        topology = cluster.layout(defaults.services_dir, defaults.cache_dir)
        env = {**topology.environment(), **env}
    try:
        return await run_on(args, name, env, topology)
    finally:
        if started_cluster:
            print("cluster topology: services down --cluster (this run started it)", flush=True)
            cluster_services("down")


async def run_on(
    args: argparse.Namespace,
    name: str,
    env: dict[str, str],
    topology: cluster.ClusterLayout | None,
) -> dict[str, object]:
    """Every contender on the services `env` names (`topology`: the cluster's nodes)."""
    settings = settings_for(env)
    bench = Bench(args, name, env, settings, connect(settings), topology=topology)
    print(f"generating {args.events:,} events over {args.visitors:,} visitors...", flush=True)
    messages, bench.entries = generate(
        args.events, args.visitors, seed=1, unknown_rate=args.unknown_rate
    )
    bench.total = len(messages)
    live_topics = [f"{name}-live.assignments", f"{name}-live.conversions"]
    all_topics = [*topic_env(name).values(), *live_topics]
    engines: dict[str, dict[str, dict[str, float]]] = {}
    figures: dict[str, object] = {}
    try:
        partitions = await ensure_topics(settings)
        print(f"publishing once to {partitions} partitions...", flush=True)
        publish_eps = await publish(settings, messages, with_definitions=True)
        print(f"published at {publish_eps:,.0f} events/s", flush=True)
        ceiling = await ceiling_rate(bench)
        print(f"ceiling (bare aiokafka, read + JSON decode): {ceiling:,.0f} events/s", flush=True)
        baseline = None if args.no_baseline else await baseline_rate(bench)
        if baseline is not None:
            print(f"naive faust baseline: {baseline:,.0f} events/s", flush=True)
        bench.expected = expected_counts(messages)
        for engine in args.engines:
            if engine == QUIX:
                engines[QUIX] = {"1": await quix_rate(bench)}
                if args.workers != [1]:
                    bench.notes.append(f"{QUIX} ran with one process only")
                continue
            for workers in args.workers:
                runs = [
                    await engine_rate(bench, engine, workers, run) for run in range(args.repeat)
                ]
                engines.setdefault(engine, {})[str(workers)] = median_result(runs)
        concurrent = None
        if args.concurrent != "none":
            concurrent = await concurrent_rate(bench, args.concurrent, messages)
        figures = {
            "events": float(bench.total),
            "visitors": float(args.visitors),
            "visitor_experiments": float(bench.entries),
            "partitions": float(partitions),
            "batch_size": float(args.batch_size),
            "publish_eps": publish_eps,
            "ceiling_eps": ceiling,
            "baseline_eps": baseline,
            "engines": engines,
            "concurrent": concurrent,
            "cluster": topology is not None,
            "runs": float(args.repeat),
            "notes": bench.notes,
        }
    finally:
        await delete_topics(settings, all_topics)
        await bench.redis.aclose()
    report(figures, bench)
    return figures


def report(figures: dict[str, object], bench: Bench) -> None:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    bench.notes.append(
        f"machine: {os.cpu_count()} cores, {cpu}; load average at the end {load}. Other work on "
        "the machine (and on the shared Redis, whose used_memory is global) moves the absolute "
        "figures: compare the ratios of one run."
    )
    bench.notes.append(
        "each contender consumed the same pre-published events from the start with its own "
        "consumer group and key prefix; its rate runs from its first to its last applied event"
    )
    ceiling = float(figures["ceiling_eps"])  # type: ignore[arg-type]
    # Ratios to a skipped baseline print as nan.
    baseline = float(figures["baseline_eps"] or "nan")  # type: ignore[arg-type]
    print()
    print(
        f"events: {bench.total:,} ({bench.entries:,} visitor-experiment entries), "
        f"batch {bench.args.batch_size}, partitions {bench.args.partitions}"
        + (", on the cluster topology" if bench.topology else "")
        + (f"; medians of {bench.args.repeat} runs" if bench.args.repeat > 1 else "")
    )
    print(f"ceiling (bare aiokafka consumer, read + JSON decode): {ceiling:>10,.0f} events/s")
    print(f"naive baseline (faust, one Redis round trip an event): {baseline:>9,.0f} events/s")
    print(f"{'engine':<11} {'workers':>7} {'events/s':>10} {'/ceiling':>9} {'/baseline':>10} {'bytes/v-e':>10} {'key bytes/v-e':>14} {'counts':>7}")  # fmt: skip
    engines: dict[str, dict[str, dict[str, float]]] = figures["engines"]  # type: ignore[assignment]
    for engine, by_workers in engines.items():
        for workers, result in by_workers.items():
            eps = result["eps"]
            # quixstreams keeps its state in RocksDB, not Redis: no bytes columns.
            redis_bytes = result.get("bytes_per_visitor_experiment", math.nan)
            key_bytes = result.get("key_bytes_per_visitor_experiment", math.nan)
            print(
                f"{engine:<11} {workers:>7} {eps:>10,.0f} {eps / ceiling:>9.1%} "
                f"{eps / baseline:>9.1f}x {redis_bytes:>10,.0f} {key_bytes:>14,.0f} "
                f"{'match' if result['matched'] else 'DIFFER':>7}"
            )
    for engine, by_workers in engines.items():
        for workers, result in by_workers.items():
            if "cpu" in result:
                print(f"{engine} x{workers}: {describe_cpu(result['cpu'])}")
    peer = engines.get(QUIX, {}).get("1")
    if peer is not None:
        for engine, by_workers in engines.items():
            if engine != QUIX and "1" in by_workers:
                ours = by_workers["1"]["eps"]
                print(
                    f"{engine} x1 / {QUIX} x1: {ours / peer['eps']:.2f}x "
                    f"({ours / peer['eps_to_commit']:.2f}x to its final commit)"
                )
    concurrent = figures.get("concurrent")
    if isinstance(concurrent, dict):
        print(
            f"end to end with concurrent publishing ({concurrent['engine']}, 1 worker, first "
            f"publish -> last applied): {concurrent['eps']:,.0f} events/s "
            f"(publishing alone {concurrent['publish_eps']:,.0f}/s)"
        )
    for note in bench.notes:
        print(f"note: {note}")
    print(f"worker logs: {bench.log_dir}")


def _csv_ints(raw: str) -> list[int]:
    return [int(part) for part in raw.split(",") if part.strip()]


def _csv_engines(raw: str) -> list[str]:
    names = [part.strip().lower() for part in raw.split(",") if part.strip()]
    return [name if name == QUIX else engine_name(name, "--engines") for name in names]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--visitors", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=500, help="AB_BATCH_SIZE of the workers")
    parser.add_argument(
        "--engines", type=_csv_engines, default=list(ENGINES),
        help=f"comma-separated contenders among {', '.join(CONTENDERS)} (default: our engines; "
        f"{QUIX} is the peer, see above)",
    )  # fmt: skip
    parser.add_argument(
        "--quix-python", type=Path,
        help=f"python with bench/requirements-quix.lock installed (default: {QUIX_VENV.name}, "
        "created on first use)",
    )  # fmt: skip
    parser.add_argument("--workers", type=_csv_ints, help="comma-separated worker counts (default: 1,2; 1,2,3 with --cluster)")  # fmt: skip
    parser.add_argument(
        "--baseline-events", type=int, default=200_000,
        help="events over which the naive baseline is timed (0: all of them)",
    )  # fmt: skip
    parser.add_argument("--no-baseline", action="store_true", help="skip the naive baseline")
    parser.add_argument(
        "--unknown-rate", type=float, default=0.0,
        help="share of events naming an undefined experiment (dead-lettered; default 0)",
    )  # fmt: skip
    parser.add_argument(
        "--concurrent", default=engine_name(None), choices=[*ENGINES, "none"],
        help="engine measured end to end with concurrent publishing (default: the default engine)",
    )  # fmt: skip
    parser.add_argument(
        "--cluster", action="store_true",
        help="run on the cluster topology (services up --cluster) and measure CPU per event: "
        "the default engine, 1, 2 and 3 workers, no baseline, no end-to-end run, unless named",
    )  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="runs of each engine and worker count; the figures are their medians")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    given = {arg.partition("=")[0] for arg in sys.argv[1:]}
    if args.workers is None:
        args.workers = [1, 2, 3] if args.cluster else [1, 2]
    if args.cluster:
        # One engine is enough on the cluster: the figures wanted are its scaling and costs.
        if "--engines" not in given:
            args.engines = [engine_name(None)]
        if "--concurrent" not in given:
            args.concurrent = "none"
        if "--baseline-events" not in given:
            args.no_baseline = True
    figures = asyncio.run(run(args))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
