"""`python -m worker experiments apply FILE | list | delete ID | reset-srm ID`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from worker.config import Settings
from worker.errors import InvalidInput, NotFound, ServiceUnavailable, UnreadableFile
from worker.events.adapters import DefinitionError, parse_definition
from worker.events.experiment import ExperimentDefinition
from worker.ingestion.topics import ensure_topics
from worker.producer import new_producer
from worker.results.capping import (
    DEFAULT_LOOKBACK_DAYS,
    keep_fixed_caps,
    needs_resolving,
    resolve_percentile_caps,
)
from worker.results.decisions import reset_srm
from worker.results.snapshot_job import load_decision_state, record_decisions
from worker.store.connection import connect
from worker.store.definitions import load_definition, load_definitions


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "experiments",
        help="publish, list or delete experiment definitions",
        description="Definitions go to the compacted ab.experiments topic; the worker reads them.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    apply = actions.add_parser(
        "apply",
        help="validate FILE (native, LaunchDarkly or Experiments API shape) and publish it",
    )
    apply.add_argument("file", type=Path, help="JSON file: one definition or a list of them")
    apply.add_argument("--project", help="project key, for shapes that do not carry one")
    apply.add_argument("--dry-run", action="store_true", help="validate and print, publish nothing")
    apply.add_argument(
        "--cap-lookback-days",
        type=int,
        default=DEFAULT_LOOKBACK_DAYS,
        metavar="DAYS",
        help="a live goal's cap_percentile is taken over the per-visitor values of this many "
        f"days before now (default {DEFAULT_LOOKBACK_DAYS})",
    )
    apply.set_defaults(handler=handle_apply)
    listing = actions.add_parser("list", help="the definitions the worker has read")
    listing.set_defaults(handler=handle_list)
    delete = actions.add_parser("delete", help="publish a tombstone for experiment ID")
    delete.add_argument("experiment_id")
    delete.set_defaults(handler=handle_delete)
    reset = actions.add_parser(
        "reset-srm",
        help="reset experiment ID's raised SRM alarm (publishes srm_cleared); "
        "decisions resume at the next interval",
    )
    reset.add_argument("experiment_id")
    reset.set_defaults(handler=handle_reset_srm)


def read_definitions(path: Path, project_key: str | None) -> list[ExperimentDefinition]:
    """Every definition of a file, or a WorkerError naming the file and the problem."""
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise UnreadableFile(f"{path} does not exist.") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UnreadableFile(f"{path} is not valid JSON: {error}.") from error
    items = payload if isinstance(payload, list) else [payload]
    definitions = []
    for index, item in enumerate(items):
        try:
            definitions.append(parse_definition(item, project_key))
        except DefinitionError as error:
            where = f"{path} (item {index})" if isinstance(payload, list) else str(path)
            raise InvalidInput(f"{where}: {error}.") from error
    return definitions


async def publish(settings: Settings, records: list[tuple[str, bytes | None]]) -> None:
    """Send (key, value) records to the experiments topic and wait for the broker's ack."""
    producer = new_producer(settings.kafka_bootstrap_servers, request_timeout_ms=10000)
    try:
        await producer.start()
    except Exception as error:
        await producer.stop()
        raise ServiceUnavailable(
            f"Kafka at {settings.kafka_bootstrap_servers} does not answer ({error}): start it with "
            "'python -m worker services up' or set KAFKA_BOOTSTRAP_SERVERS."
        ) from error
    try:
        await ensure_topics(settings)
        for key, value in records:
            await producer.send_and_wait(settings.topic_experiments, value=value, key=key.encode())
    finally:
        await producer.stop()


def handle_apply(args: argparse.Namespace) -> int:
    definitions = read_definitions(args.file, args.project)
    if args.cap_lookback_days < 1:
        raise InvalidInput("--cap-lookback-days must be at least 1.")
    settings = Settings.from_env()
    if any(needs_resolving(definition) for definition in definitions):
        definitions = asyncio.run(
            fix_percentile_caps(settings, definitions, args.cap_lookback_days)
        )
    if args.dry_run:
        print(json.dumps([d.model_dump(mode="json") for d in definitions], indent=2))
        return 0
    asyncio.run(publish(settings, [(d.id, d.model_dump_json().encode()) for d in definitions]))
    for definition in definitions:
        print(
            f"published {definition.id} ({definition.status.value}, "
            f"{len(definition.variants)} variants) to {settings.topic_experiments}"
        )
    return 0


async def fix_percentile_caps(
    settings: Settings, definitions: list[ExperimentDefinition], lookback_days: int
) -> list[ExperimentDefinition]:
    """Live definitions with their percentile caps turned into values, each one reported."""

    def progress(goal: str, done: int, total: int) -> None:
        print(f"  cap of {goal}: read partition {done}/{total}", file=sys.stderr, flush=True)

    fixed = []
    async with connect(settings) as redis:
        for definition in definitions:
            stored = await load_definition(redis, settings.key_prefix, definition.id)
            definition = keep_fixed_caps(definition, stored)
            if needs_resolving(definition):
                print(f"{definition.id}: fixing percentile caps at launch", file=sys.stderr)
                definition, resolved = await resolve_percentile_caps(
                    redis,
                    settings.key_prefix,
                    definition,
                    datetime.now(UTC),
                    lookback_days,
                    progress,
                )
                for cap in resolved:
                    print(
                        f"{definition.id}: goal {cap.goal} capped at {cap.cap:g}, the "
                        f"{cap.percentile:g}th percentile of {cap.visitors} visitors' values "
                        f"in the {lookback_days} days before launch"
                    )
            fixed.append(definition)
    return fixed


def handle_delete(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    asyncio.run(publish(settings, [(args.experiment_id, None)]))
    print(f"published a tombstone for {args.experiment_id}")
    return 0


def handle_reset_srm(args: argparse.Namespace) -> int:
    """An SRM alarm never clears by itself: an operator who found and fixed the cause
    resets it here. The worker publishes the `srm_cleared` event with its next interval."""
    settings = Settings.from_env()

    async def reset() -> int:
        async with connect(settings) as redis:
            definition = await load_definition(redis, settings.key_prefix, args.experiment_id)
            if definition is None:
                raise NotFound(f"No experiment {args.experiment_id!r} is known.")
            state = await load_decision_state(redis, settings.key_prefix, definition.id)
            decisions = reset_srm(definition, state, datetime.now(UTC))
            return await record_decisions(redis, settings, definition.id, decisions)

    if asyncio.run(reset()):
        print(f"SRM alarm of {args.experiment_id} reset: srm_cleared queued for ab.winners")
    else:
        print(f"{args.experiment_id} has no SRM alarm raised: nothing to reset")
    return 0


def handle_list(args: argparse.Namespace) -> int:
    settings = Settings.from_env()

    async def fetch() -> list[ExperimentDefinition]:
        async with connect(settings) as redis:
            return await load_definitions(redis, settings.key_prefix)

    for definition in asyncio.run(fetch()):
        print(f"{definition.id:<30} {definition.status.value:<10} {definition.name}")
    return 0
