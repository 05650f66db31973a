"""Applies a partition's commands with one call of the Lua script (atomic, replay-safe)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

import orjson

from worker.errors import ConfigurationError
from worker.store import keys
from worker.store.connection import Redis
from worker.store.sink_protocol import ExperimentRules, SinkCommand, SinkReply

SCRIPT = resources.files("worker.store").joinpath("apply_batch.lua").read_text()


@dataclass(frozen=True)
class SinkSettings:
    prefix: str
    dedup_window_seconds: int
    conversion_hold_ms: int
    assignments_topic: str


class BatchSink:
    """Owns the loaded script; `apply` is safe to repeat for the same commands."""

    def __init__(self, redis: Redis, settings: SinkSettings) -> None:
        self._redis = redis
        self._settings = settings
        self._script = redis.register_script(SCRIPT)

    async def apply(
        self,
        partition: int,
        commands: Sequence[SinkCommand],
        frozen: list[str],
        expected: dict[str, int] | None = None,
        rules: Mapping[str, ExperimentRules] | None = None,
    ) -> SinkReply:
        """Run the script for one partition; returns its counts (applied, duplicates, ...).

        `expected` (topic -> offset) is what the caller applied last or was positioned
        after; a stored offset behind it applies nothing and returns
        `{"rollback": {topic: stored offset}}` instead. `rules` holds the caps and CUPED
        window of every experiment a visitor of the batch may have entered (all that
        are defined: a conversion counts for each entered experiment); one left out is
        counted without caps or covariate.
        """
        settings = self._settings
        reply = await self._script(
            keys=[keys.offsets_key(settings.prefix, partition)],
            args=[
                keys.partition_base(settings.prefix, partition),
                orjson.dumps(commands),
                orjson.dumps(frozen),
                settings.dedup_window_seconds,
                settings.conversion_hold_ms,
                int(time.time()),
                orjson.dumps(expected or {}),
                settings.assignments_topic,
                orjson.dumps(rules or {}),
            ],
        )
        result: SinkReply = orjson.loads(reply)
        if result.get("legacy_layout"):
            raise ConfigurationError(
                f"partition {partition} of the key prefix {settings.prefix!r} was written by "
                "an earlier key layout (one Redis key per visitor, or whole column strings "
                "with an entrants list); stop the workers and run `python -m worker migrate` "
                "to convert it"
            )
        return result
