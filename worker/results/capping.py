"""Percentile caps, fixed at launch: ``Goal.cap_percentile`` resolved into ``Goal.cap``.

The sink caps each visitor's value as it counts it, so the cap must be one number for the
experiment's whole life (a replay must count as the first run did). A percentile of the
experiment's own data would move as it grows; the goal's per-visitor values in the days
before launch give a number that is known at launch and never changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from worker.errors import InvalidInput
from worker.events.experiment import ExperimentDefinition, ExperimentStatus, GoalType
from worker.stats.capping import percentile_cap
from worker.store.connection import Redis
from worker.store.goal_history import visitor_goal_values

DEFAULT_LOOKBACK_DAYS = 14


@dataclass(frozen=True)
class ResolvedCap:
    """One goal's cap as resolved: what the operator is told."""

    goal: str
    percentile: float
    cap: float
    visitors: int


def needs_resolving(definition: ExperimentDefinition) -> bool:
    """Whether the definition goes live with a percentile cap not yet turned into a value."""
    return bool(definition.unfixed_caps())


def keep_fixed_caps(
    definition: ExperimentDefinition, stored: ExperimentDefinition | None
) -> ExperimentDefinition:
    """``definition`` with the caps an already-live ``stored`` definition fixed at its
    launch: publishing the same file again must not take the percentile again (the
    worker refuses a cap that changes on a live experiment)."""
    if stored is None or stored.status is ExperimentStatus.DRAFT:
        return definition
    fixed = {goal.key: goal.cap for goal in stored.goals if goal.cap is not None}
    goals = [
        goal.model_copy(update={"cap": fixed[goal.key]})
        if goal.cap is None and goal.cap_percentile is not None and goal.key in fixed
        else goal
        for goal in definition.goals
    ]
    return definition.model_copy(update={"goals": goals})


async def resolve_percentile_caps(
    redis: Redis,
    prefix: str,
    definition: ExperimentDefinition,
    launch: datetime,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[ExperimentDefinition, list[ResolvedCap]]:
    """The definition with every unresolved ``cap_percentile`` turned into ``cap``.

    Values are per visitor, over the ``lookback_days`` before ``launch``: revenue sums for
    revenue goals, event counts for count goals, among visitors with the goal's events.
    Raises InvalidInput when a goal has no such visitor (there is nothing to take a
    percentile of: the operator sets ``cap`` instead).
    """
    until_ms = int(launch.timestamp() * 1000)
    since_ms = int((launch - timedelta(days=lookback_days)).timestamp() * 1000)
    goals = []
    resolved = []
    for goal in definition.goals:
        if goal.cap_percentile is None or goal.cap is not None:
            goals.append(goal)
            continue
        values = await visitor_goal_values(
            redis,
            prefix,
            goal.key,
            since_ms,
            until_ms,
            revenue=goal.type is GoalType.REVENUE,
            progress=_for_goal(progress, goal.key),
        )
        cap = percentile_cap(values, goal.cap_percentile)
        if cap is None:
            raise InvalidInput(
                f"{definition.id}: goal {goal.key!r} has cap_percentile {goal.cap_percentile:g} "
                f"but no visitor had its events in the {lookback_days} days before launch: "
                "set cap to a value instead."
            )
        goals.append(goal.model_copy(update={"cap": cap}))
        resolved.append(ResolvedCap(goal.key, goal.cap_percentile, cap, len(values)))
    return definition.model_copy(update={"goals": goals}), resolved


def _for_goal(
    progress: Callable[[str, int, int], None] | None, goal: str
) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    report = progress
    return lambda done, total: report(goal, done, total)
