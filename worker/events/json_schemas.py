"""JSON Schemas of every topic's payload, generated from the pydantic models into schemas/.

Producers and consumers outside Python validate against these files; the models stay
the source of truth. `python -m worker schemas` checks the committed files against the
models and `python -m worker schemas --write` regenerates them.

``MODELS`` holds the topics whose models live here, in events/. The output topics'
models (`ab.results`, `ab.winners`) are the results layer's contract, which sits above
events/, so the full registry is assembled where both are in reach, by the `schemas`
command (``worker.cli.schemas_command.TOPIC_MODELS``); the functions below take the
registry as an argument.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from worker.events.assignment import Assignment
from worker.events.conversion import Conversion
from worker.events.dead_letter import DeadLetter
from worker.events.experiment import ExperimentDefinition

DIALECT = "https://json-schema.org/draft/2020-12/schema"


Registry = Mapping[str, type[BaseModel]]
"""Schema file name → the model of the topic's messages."""

MODELS: Registry = {
    "ab.assignments.schema.json": Assignment,
    "ab.conversions.schema.json": Conversion,
    "ab.experiments.schema.json": ExperimentDefinition,
    "ab.dead-letter.schema.json": DeadLetter,
}


def _close_pattern_properties(node: Any) -> None:
    # pydantic renders dict[PatternKey, V] as patternProperties only, which lets any
    # key that misses the pattern through; the model rejects such keys.
    if isinstance(node, dict):
        if "patternProperties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for child in node.values():
            _close_pattern_properties(child)
    elif isinstance(node, list):
        for child in node:
            _close_pattern_properties(child)


def _sorted(node: Any) -> Any:
    # Sorted keys keep the files byte-stable whatever order pydantic emits them in;
    # list order (enum, required, anyOf) is meaningful and kept.
    if isinstance(node, dict):
        return {key: _sorted(node[key]) for key in sorted(node)}
    if isinstance(node, list):
        return [_sorted(child) for child in node]
    return node


def generate(models: Registry) -> dict[str, dict[str, Any]]:
    """Every schema file's content by file name, with keys in sorted order."""
    schemas = {}
    for filename, model in models.items():
        schema = model.model_json_schema(mode="validation")
        _close_pattern_properties(schema)
        schema["$schema"] = DIALECT
        schema["$comment"] = (
            f"Generated from {model.__module__}.{model.__qualname__} by "
            "'python -m worker schemas --write'; do not edit by hand."
        )
        schemas[filename] = _sorted(schema)
    return schemas


def render(schema: dict[str, Any]) -> str:
    """The exact text of a schema file."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def changes(directory: Path, models: Registry) -> dict[str, str]:
    """Files of `directory` that differ from the models: name -> "create" or "update"."""
    pending = {}
    for filename, schema in generate(models).items():
        path = directory / filename
        if not path.exists():
            pending[filename] = "create"
        elif path.read_text(encoding="utf-8") != render(schema):
            pending[filename] = "update"
    return pending


def write(directory: Path, models: Registry) -> list[str]:
    """(Re)write the files that differ from the models; returns their names."""
    directory.mkdir(parents=True, exist_ok=True)
    schemas = generate(models)
    pending = changes(directory, models)
    for filename in pending:
        (directory / filename).write_text(render(schemas[filename]), encoding="utf-8")
    return list(pending)
