"""`python -m worker demo`: publish the demo experiments and send live traffic."""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from datetime import UTC, datetime

import orjson

from worker.cli.experiments_command import publish
from worker.config import Settings
from worker.demo.experiments import DEMO_EXPERIMENTS
from worker.demo.traffic import visitor_events
from worker.errors import InvalidInput
from worker.producer import new_producer


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="publish two demo experiments and send realistic live traffic",
        description="Publishes demo-checkout (a real +25 %% purchase effect) and demo-aa (no "
        "difference), then sends visitors' assignments and conversions until stopped.",
    )
    parser.add_argument(
        "--rate", type=float, default=20.0, help="new visitors per second (default 20)"
    )
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--visitors", type=int, help="stop after this many visitors")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible traffic")
    parser.add_argument("--no-apply", action="store_true", help="do not publish the experiments")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if args.rate <= 0:
        raise InvalidInput("--rate must be above 0.")
    settings = Settings.from_env()
    if not args.no_apply:
        asyncio.run(
            publish(settings, [(e.id, e.model_dump_json().encode()) for e in DEMO_EXPERIMENTS])
        )
        print("published demo-checkout and demo-aa")
    asyncio.run(send_traffic(settings, args))
    return 0


async def send_traffic(settings: Settings, args: argparse.Namespace) -> None:
    """Send visitors at the requested rate, printing progress every five seconds."""
    rng = random.Random(args.seed)
    topics = {"assignment": settings.topic_assignments, "conversion": settings.topic_conversions}
    producer = new_producer(settings.kafka_bootstrap_servers, linger_ms=20)
    await producer.start()
    started = last_report = time.monotonic()
    visitors = events = 0
    try:
        while True:
            elapsed = time.monotonic() - started
            if (args.duration and elapsed >= args.duration) or (
                args.visitors and visitors >= args.visitors
            ):
                break
            behind = int(elapsed * args.rate) - visitors
            if behind <= 0:
                await asyncio.sleep(min(0.05, 1 / args.rate))
                continue
            now = datetime.now(UTC)
            for _ in range(behind):
                for kind, event in visitor_events(rng, now):
                    await producer.send(
                        topics[kind], orjson.dumps(event), key=event["visitor_id"].encode()
                    )
                    events += 1
                visitors += 1
            if time.monotonic() - last_report >= 5:
                last_report = time.monotonic()
                print(f"demo: {visitors:,} visitors, {events:,} events sent", flush=True)
    except asyncio.CancelledError:
        pass
    finally:
        await producer.stop()
    print(f"demo: done, {visitors:,} visitors, {events:,} events sent")
