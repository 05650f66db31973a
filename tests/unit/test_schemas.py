"""The committed JSON Schemas in schemas/ match the pydantic models, and say what they should."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from worker.cli import schemas_command
from worker.errors import WorkerError
from worker.events import json_schemas
from worker.events.dead_letter import DeadLetter, Reason, dead_letter_payload, source_message
from worker.events.enums import Device

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
GENERATED = json_schemas.generate(schemas_command.TOPIC_MODELS)


def run_cli(*argv: str) -> int:
    """`python -m worker schemas ARGV`, with a WorkerError turned into its exit code, as
    main() does."""
    parser = argparse.ArgumentParser()
    schemas_command.register(parser.add_subparsers())
    args = parser.parse_args(["schemas", *argv])
    try:
        return int(args.handler(args))
    except WorkerError as error:
        return error.exit_code


def test_one_schema_per_topic() -> None:
    assert sorted(GENERATED) == [
        "ab.assignments.schema.json",
        "ab.conversions.schema.json",
        "ab.dead-letter.schema.json",
        "ab.experiments.schema.json",
        "ab.results.schema.json",
        "ab.winners.schema.json",
    ]


@pytest.mark.parametrize("filename", sorted(GENERATED))
def test_committed_file_matches_the_model(filename: str) -> None:
    path = SCHEMAS_DIR / filename
    assert path.exists(), f"{path} is missing: run 'python -m worker schemas --write'"
    assert path.read_text(encoding="utf-8") == json_schemas.render(GENERATED[filename]), (
        f"{path} and its model drifted apart: run 'python -m worker schemas --write'"
    )


def test_no_stale_schema_files() -> None:
    committed = sorted(path.name for path in SCHEMAS_DIR.glob("*.schema.json"))
    assert committed == sorted(GENERATED)


def test_generation_is_stable_and_sorted() -> None:
    again = json_schemas.generate(schemas_command.TOPIC_MODELS)
    assert {name: json_schemas.render(s) for name, s in again.items()} == {
        name: json_schemas.render(s) for name, s in GENERATED.items()
    }

    def keys_sorted(node: Any) -> bool:
        if isinstance(node, dict):
            return list(node) == sorted(node) and all(keys_sorted(v) for v in node.values())
        if isinstance(node, list):
            return all(keys_sorted(v) for v in node)
        return True

    assert all(keys_sorted(schema) for schema in GENERATED.values())


def test_check_write_cycle_through_the_cli(tmp_path: Path) -> None:
    assert run_cli("--directory", str(tmp_path / "absent")) == 1
    assert run_cli("--directory", str(tmp_path)) == 1
    models = schemas_command.TOPIC_MODELS
    assert json_schemas.changes(tmp_path, models) == dict.fromkeys(GENERATED, "create")

    assert run_cli("--write", "--directory", str(tmp_path)) == 0
    assert json_schemas.changes(tmp_path, models) == {}
    assert run_cli("--directory", str(tmp_path)) == 0

    drifted = tmp_path / "ab.conversions.schema.json"
    drifted.write_text(drifted.read_text().replace('"goal"', '"goal_key"'))
    assert json_schemas.changes(tmp_path, models) == {"ab.conversions.schema.json": "update"}
    assert run_cli("--directory", str(tmp_path)) == 1
    assert json_schemas.write(tmp_path, models) == ["ab.conversions.schema.json"]
    assert json_schemas.changes(tmp_path, models) == {}


@pytest.mark.parametrize("filename", ["ab.assignments.schema.json", "ab.conversions.schema.json"])
def test_visitor_id_pattern(filename: str) -> None:
    visitor_id = GENERATED[filename]["properties"]["visitor_id"]
    assert visitor_id["pattern"] == r"^[A-Za-z0-9_\-]{1,80}$"
    pattern = re.compile(visitor_id["pattern"])
    assert pattern.match("a" * 80) and pattern.match("Visitor_1-x")
    assert not pattern.match("a" * 81)
    assert not pattern.match("has space")
    assert not pattern.match("")
    assert "visitor_id" in GENERATED[filename]["required"]


def test_assignment_schema_shape() -> None:
    schema = GENERATED["ab.assignments.schema.json"]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert schema["required"] == [
        "event_id",
        "experiment_id",
        "variant_id",
        "visitor_id",
        "timestamp",
    ]
    assert schema["properties"]["timestamp"] == {
        "format": "date-time",
        "title": "Timestamp",
        "type": "string",
    }
    assert schema["$defs"]["Device"]["enum"] == [device.value for device in Device]
    assert schema["$defs"]["Context"]["additionalProperties"] is False


def test_attribute_maps_reject_keys_outside_the_pattern() -> None:
    # The model rejects such keys; patternProperties alone would let them through.
    attributes = GENERATED["ab.conversions.schema.json"]["properties"]["attributes"]["anyOf"][0]
    assert attributes["type"] == "object"
    assert attributes["maxProperties"] == 50
    assert list(attributes["patternProperties"]) == [r"^[A-Za-z0-9_.\-]{1,80}$"]
    assert attributes["additionalProperties"] is False


def test_experiment_schema_lists_variants_and_goals() -> None:
    schema = GENERATED["ab.experiments.schema.json"]
    assert {"id", "project_key", "name", "variants", "goals"} <= set(schema["required"])
    assert schema["properties"]["variants"]["minItems"] == 1
    assert schema["$defs"]["ExperimentStatus"]["enum"] == ["draft", "live", "inactive", "completed"]


def test_dead_letter_schema_lists_every_reason() -> None:
    schema = GENERATED["ab.dead-letter.schema.json"]
    assert schema["$defs"]["Reason"]["enum"] == [reason.value for reason in Reason]


@pytest.mark.parametrize(
    ("key", "value", "text"),
    [
        (b"visitor-1", b'{"event_id": "e1"}', '{"event_id": "e1"}'),
        (None, b"\xff\xfe not utf-8", None),
        (b"exp-1", None, None),
    ],
)
def test_real_dead_letters_match_the_schema_model(
    key: bytes | None, value: bytes | None, text: str | None
) -> None:
    message = source_message("ab.assignments", 3, 1234, key, value)
    payload = dead_letter_payload(Reason.SCHEMA_VIOLATION, "visitor_id: bad", message)

    record = DeadLetter.model_validate_json(payload)
    assert record.reason is Reason.SCHEMA_VIOLATION
    assert (record.source.topic, record.source.partition, record.source.offset) == (
        "ab.assignments",
        3,
        1234,
    )
    assert record.value_text == text
    assert record.dead_lettered_at.utcoffset() is not None
    # Every field the producer writes is a required property of the schema, and no more.
    schema = GENERATED["ab.dead-letter.schema.json"]
    assert sorted(orjson.loads(payload)) == sorted(schema["required"])
    assert sorted(schema["properties"]) == sorted(schema["required"])
