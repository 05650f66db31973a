"""Planning and Lua-sink cost per event, in process: what bounds ingestion besides Kafka.

Plans the ingestion benchmark's generated events (bench/ingestion.py's `generate`)
with the worker's own planners, then applies them through `BatchSink` on the local
Redis in batches of 500 per partition, and prints microseconds per event for each
step and the script's own time from Redis's `INFO commandstats`. It prints figures and
asserts nothing; run it against two trees (PYTHONPATH) to compare them.

    .venv/bin/python bench/plan_and_sink.py [--events N] [--visitors N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingestion import definitions, generate  # noqa: E402

from worker.config import Settings  # noqa: E402
from worker.events.experiment import ExperimentDefinition  # noqa: E402
from worker.ingestion.commands import (  # noqa: E402
    SourceMessage,
    plan_assignment,
    plan_conversion,
    sink_rules,
)
from worker.ingestion.partitioning import partition_for  # noqa: E402
from worker.store.batch_sink import BatchSink, SinkSettings  # noqa: E402
from worker.store.connection import connect  # noqa: E402
from worker.store.sink_protocol import SinkCommand  # noqa: E402

PARTITIONS = 12
BATCH = 500


def messages(events: int, visitors: int) -> list[tuple[str, SourceMessage]]:
    """The generated events as records of 12 partitions, published now, in order."""
    generated, _ = generate(events, visitors, seed=1)
    offsets: dict[tuple[str, int], int] = {}
    published = int(time.time() * 1000)
    out = []
    for number, (kind, key, value) in enumerate(generated):
        partition = partition_for((key or b"").decode(), PARTITIONS)
        offset = offsets.get((kind, partition), 0)
        offsets[(kind, partition)] = offset + 1
        record = SourceMessage(kind, partition, offset, key, value, timestamp_ms=published + number)
        out.append((kind, record))
    return out


async def apply(
    commands: dict[int, list[SinkCommand]],
    count: int,
    catalog: dict[str, ExperimentDefinition],
) -> None:
    settings = Settings.from_env()
    prefix = f"bench-sink-{int(time.time())}"
    async with connect(settings) as redis:
        sink = BatchSink(redis, SinkSettings(prefix, 7 * 86400, 3_600_000, assignments_topic="a"))
        await redis.config_resetstat()
        started = time.perf_counter()
        for partition, planned in commands.items():
            for first in range(0, len(planned), BATCH):
                await sink.apply(
                    partition, planned[first : first + BATCH], [], rules=sink_rules(catalog)
                )
        wall = time.perf_counter() - started
        stats = await redis.info("commandstats")
        script = stats.get("cmdstat_evalsha") or stats.get("cmdstat_eval") or {"usec": 0}
        print(
            f"sink: {wall / count * 1e6:.1f} us/event wall, {script['usec'] / count:.1f} us/event in Lua"
        )
        keys = [key async for key in redis.scan_iter(match=f"{prefix}:*", count=5000)]
        for first in range(0, len(keys), 5000):
            await redis.unlink(*keys[first : first + 5000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--visitors", type=int, default=20_000)
    args = parser.parse_args()
    records = messages(args.events, args.visitors)
    catalog = {d.id: d for d in (ExperimentDefinition.model_validate(x) for x in definitions())}
    started = time.perf_counter()
    plans = [
        (plan_assignment if kind == "a" else plan_conversion)(record, catalog, PARTITIONS)
        for kind, record in records
    ]
    print(f"plan: {(time.perf_counter() - started) / len(records) * 1e6:.1f} us/event")
    by_partition: dict[int, list[SinkCommand]] = {}
    for (_, record), plan in zip(records, plans, strict=True):
        by_partition.setdefault(record.partition, []).append(plan.command)
    asyncio.run(apply(by_partition, len(records), catalog))


if __name__ == "__main__":
    main()
