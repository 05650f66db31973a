"""Stored experiment definitions, parsed once per distinct stored text, and whether an
answer depends on the recorded end date."""

from __future__ import annotations

from functools import lru_cache

from worker.events.experiment import ExperimentDefinition, ExperimentStatus
from worker.store.connection import Redis
from worker.store.definitions import stored_definition

PARSED_DEFINITIONS = 256


async def load_definition(
    redis: Redis, prefix: str, experiment_id: str
) -> ExperimentDefinition | None:
    """The stored definition, parsed once per distinct stored text."""
    raw = await stored_definition(redis, prefix, experiment_id)
    return None if raw is None else parse_definition(raw)


@lru_cache(maxsize=PARSED_DEFINITIONS)
def parse_definition(raw: bytes) -> ExperimentDefinition:
    """A stored definition's model. Shared between requests: callers never mutate it
    (they use ``model_copy``)."""
    return ExperimentDefinition.model_validate_json(raw)


def needs_ended_at(definition: ExperimentDefinition) -> bool:
    """Whether answers read the end date the worker recorded (``mida_routes.ended_at``)."""
    return definition.ended_at is None and definition.status is ExperimentStatus.COMPLETED
