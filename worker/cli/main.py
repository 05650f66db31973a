"""Command-line entry point: `python -m worker SUBCOMMAND`.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds
its parser and sets ``handler`` to a function taking the parsed arguments and
returning an exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from worker.cli import (
    api_command,
    demo_command,
    experiments_command,
    keys_command,
    migrate_command,
    results_command,
    run_command,
    schemas_command,
    services_command,
    stats_command,
    up_command,
)
from worker.errors import WorkerError

COMMANDS = (
    up_command,
    services_command,
    run_command,
    api_command,
    keys_command,
    experiments_command,
    migrate_command,
    results_command,
    schemas_command,
    stats_command,
    demo_command,
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="python -m worker",
        description="ab-results-worker: A/B-test events in Kafka -> exact results in Redis.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the subcommand, turn expected failures into one clear line."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except WorkerError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
