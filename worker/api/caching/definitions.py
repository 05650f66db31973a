"""Stored experiment definitions, parsed once per distinct stored text.

Every authenticated request needs its experiment's definition. The stored text is read
from Redis each time, so a changed definition is seen at once; only parsing it, most of
the cost, is remembered, keyed by the text itself.
"""

from __future__ import annotations

from functools import lru_cache

from worker.events.experiment import ExperimentDefinition
from worker.store.connection import Redis
from worker.store.definitions import stored_definition

PARSED_DEFINITIONS = 256


async def load_parsed_definition(
    redis: Redis, prefix: str, experiment_id: str
) -> ExperimentDefinition | None:
    """The stored definition, parsed once per distinct stored text."""
    raw = await stored_definition(redis, prefix, experiment_id)
    return None if raw is None else parsed_definition(raw)


@lru_cache(maxsize=PARSED_DEFINITIONS)
def parsed_definition(raw: bytes) -> ExperimentDefinition:
    """A stored definition's model. Shared between requests: callers never mutate it
    (they use ``model_copy``)."""
    return ExperimentDefinition.model_validate_json(raw)
