"""`python -m worker run`: the ingestion worker (faust)."""

from __future__ import annotations

import argparse
import asyncio

import faust

from worker.cli.errors import UserError
from worker.config import Settings
from worker.ingestion.app import create_app
from worker.ingestion.topics import ensure_topics
from worker.services import kafka_server, redis_server


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the worker: consume events, keep counters in Redis",
        description="Consume ab.assignments, ab.conversions and ab.experiments and keep exact "
        "counters in Redis. Configure with KAFKA_BOOTSTRAP_SERVERS, REDIS_URL and AB_* variables.",
    )
    parser.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if not kafka_server.answers(settings.kafka_bootstrap_servers):
        raise UserError(
            f"Kafka at {settings.kafka_bootstrap_servers} does not answer: start it with "
            "'python -m worker services up' or set KAFKA_BOOTSTRAP_SERVERS."
        )
    if not redis_server.answers(settings.redis_url):
        raise UserError(
            f"Redis at {settings.redis_url} does not answer: start it with "
            "'python -m worker services up' or set REDIS_URL."
        )
    # Topics first, so the consumer subscribes to topics with the intended partitions.
    asyncio.run(ensure_topics(settings))
    app, _ = create_app(settings)
    worker = faust.Worker(app, loglevel=args.loglevel)
    worker.execute_from_commandline()
    return 0
