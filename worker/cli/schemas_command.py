"""`python -m worker schemas [--write]`: check or regenerate the JSON Schemas in schemas/."""

from __future__ import annotations

import argparse
from pathlib import Path

from worker.errors import CheckFailed, UnreadableFile
from worker.events import json_schemas
from worker.results import contract

TOPIC_MODELS: json_schemas.Registry = {**json_schemas.MODELS, **contract.TOPIC_MODELS}
"""Every topic's schema file and model: the events' and the results layer's."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `schemas` subcommand."""
    parser = subparsers.add_parser(
        "schemas",
        help="check (or --write) the JSON Schemas generated from the topic models",
        description="Without --write, list the schema files that differ from the pydantic "
        "models and exit 1 if any do (a check for CI); with --write, regenerate them.",
    )
    parser.add_argument(
        "--write", action="store_true", help="(re)write the files that differ from the models"
    )
    parser.add_argument(
        "--directory",
        type=Path,
        default=Path("schemas"),
        help="where the schema files live (default: ./schemas, run from the repository root)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Check or write the schema files; exit code 1 when a check finds differences."""
    directory: Path = args.directory
    if args.write:
        written = json_schemas.write(directory, TOPIC_MODELS)
        for filename in written:
            print(f"wrote {directory / filename}")
        print(f"{len(TOPIC_MODELS)} schemas in {directory}, {len(written)} rewritten")
        return 0
    if not directory.is_dir():
        raise UnreadableFile(
            f"{directory} is not a directory: run from the repository root, pass --directory, "
            "or create the files with 'python -m worker schemas --write'."
        )
    pending = json_schemas.changes(directory, TOPIC_MODELS)
    if not pending:
        print(f"{len(TOPIC_MODELS)} schemas in {directory} match the models")
        return 0
    for filename, action in pending.items():
        print(f"would {action} {directory / filename}")
    raise CheckFailed(
        f"{len(pending)} schema file(s) in {directory} differ from the models: "
        "run 'python -m worker schemas --write' and commit the result."
    )
