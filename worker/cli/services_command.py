"""`python -m worker services up|down|status`."""

from __future__ import annotations

import argparse
import time

from worker.config import Settings
from worker.services import provision


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "services",
        help="start, stop or inspect the local Kafka broker and Redis server",
        description="Local Kafka (KRaft, jars from Maven Central) and Redis (Debian package). "
        "When KAFKA_BOOTSTRAP_SERVERS / REDIS_URL are set those are used and nothing is provisioned.",
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="the cluster topology instead: three Kafka brokers and a Redis Cluster of six "
        "nodes (three primaries, three replicas) on ports of their own; up prints the "
        "variables to export",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if args.action == "up":
        started = time.monotonic()
        for line in (provision.up_cluster if args.cluster else provision.up)(settings):
            print(line)
        print(f"services ready in {time.monotonic() - started:.1f} s")
        return 0
    if args.action == "down":
        for line in (provision.down_cluster if args.cluster else provision.down)(settings):
            print(line)
        return 0
    statuses = (provision.status_cluster if args.cluster else provision.status)(settings)
    for service in statuses:
        print(service.describe())
    return 0 if all(service.answering for service in statuses) else 1
