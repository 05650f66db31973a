"""The experiment's run as answers report it: when it ended, and for how many days it
ran."""

from __future__ import annotations

from datetime import UTC, datetime

from worker.events.experiment import ExperimentDefinition, ExperimentStatus
from worker.store.connection import Redis
from worker.store.snapshots import load_ended_at


def needs_ended_at(definition: ExperimentDefinition) -> bool:
    """Whether answers read the end date the worker recorded (:func:`ended_at`)."""
    return definition.ended_at is None and definition.status is ExperimentStatus.COMPLETED


async def ended_at(redis: Redis, prefix: str, definition: ExperimentDefinition) -> datetime | None:
    """The definition's end, else the time the worker first saw it completed."""
    if not needs_ended_at(definition):
        return definition.ended_at
    recorded = await load_ended_at(redis, prefix, definition.id)
    if recorded is None:
        return None
    try:
        moment = datetime.fromisoformat(recorded)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def days_running(definition: ExperimentDefinition, ended_at: datetime | None, now: datetime) -> int:
    """Whole days from the start to the end (or now); 0 before a start is known."""
    if definition.started_at is None:
        return 0
    return max(((ended_at or now) - definition.started_at).days, 0)
