"""`python -m worker run`: the ingestion worker (faust or plain aiokafka engine)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging

from worker.config import ENGINES, Settings, engine_name
from worker.errors import ConfigurationError, ServiceUnavailable
from worker.ingestion.topics import ensure_topics
from worker.services import kafka_server
from worker.store import connection


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the worker: consume events, keep counters in Redis",
        description="Consume ab.assignments, ab.conversions and ab.experiments and keep exact "
        "counters in Redis. Configure with KAFKA_BOOTSTRAP_SERVERS, REDIS_URL and AB_* variables.",
    )
    parser.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        help="ingestion engine (default: AB_INGESTION_ENGINE, else aiokafka); both count exactly",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
        if args.engine is not None:
            settings = dataclasses.replace(settings, ingestion_engine=engine_name(args.engine))
    except ValueError as error:
        raise ConfigurationError(str(error)) from error
    if not kafka_server.answers(settings.kafka_bootstrap_servers):
        raise ServiceUnavailable(
            f"Kafka at {settings.kafka_bootstrap_servers} does not answer: start it with "
            "'python -m worker services up' or set KAFKA_BOOTSTRAP_SERVERS."
        )
    if not connection.answers(settings.redis_url):
        raise ServiceUnavailable(
            f"Redis at {settings.redis_url} does not answer: start it with "
            "'python -m worker services up' or set REDIS_URL."
        )
    # Topics first, so the consumer subscribes to topics with the intended partitions.
    asyncio.run(ensure_topics(settings))
    # Imported here: each engine pulls in only its own consumer library's machinery.
    if settings.ingestion_engine == "aiokafka":
        from worker.ingestion import consumer_loop

        logging.getLogger().setLevel(args.loglevel.upper())  # faust sets its own
        return consumer_loop.run(settings)
    from worker.ingestion import app

    return app.run(settings, args.loglevel)
