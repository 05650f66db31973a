"""Percentile caps fixed at launch: resolved from the visitor states the sink wrote."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from tests.integration.test_sink_read_order import (
    DAY,
    PARTITIONS,
    PUBLISHED,
    Record,
    Sink,
    assignment,
    conversion,
    sink,
)
from worker.errors import InvalidInput
from worker.events.experiment import ExperimentDefinition
from worker.ingestion.partitioning import partition_for
from worker.results.capping import needs_resolving, resolve_percentile_caps

pytestmark = pytest.mark.integration
__all__ = ["sink"]

LAUNCH = DAY + timedelta(days=2)


def launching(goal_type: str, percentile: float = 90.0, goal: str = "buy") -> ExperimentDefinition:
    return ExperimentDefinition.model_validate(
        {
            "id": "capped",
            "project_key": "shop",
            "name": "capped",
            "status": "live",
            "variants": [
                {"id": "0", "name": "A", "is_control": True},
                {"id": "1", "name": "B"},
            ],
            "goals": [
                {
                    "key": goal,
                    "name": goal,
                    "type": goal_type,
                    "primary": True,
                    "cap_percentile": percentile,
                }
            ],
        }
    )


async def fill(sink: Sink) -> dict[str, list[tuple[float, float]]]:
    """Visitors with purchases before, inside and after the one-day window before launch.

    Returns each visitor's (hours after DAY, value) of its purchases.
    """
    purchases: dict[str, list[tuple[float, float]]] = {}
    for n in range(40):
        visitor = f"cap-{n}"
        # before the window, inside it (several per visitor, some none), after launch
        hours = [1.0] + [24.0 + 0.5 * k for k in range(n % 4)] + [49.0]
        purchases[visitor] = [(hour, float(3 * n + 7 * k + 1)) for k, hour in enumerate(hours)]
    batches: dict[int, list[tuple[int, Record]]] = {}
    for visitor, events in purchases.items():
        partition = partition_for(visitor, PARTITIONS)
        batch = batches.setdefault(partition, [])
        batch.append((len(batch), assignment(visitor, "x1", "0", DAY, PUBLISHED)))
        for k, (hour, value) in enumerate(events):
            at = DAY + timedelta(hours=hour, seconds=k)
            batch.append((len(batch), conversion(visitor, at, PUBLISHED + len(batch), value)))
    for partition, batch in batches.items():
        await sink.apply(partition, batch)
    return purchases


def higher_percentile(values: list[float], percentile: float) -> float:
    ordered = sorted(values)
    return ordered[math.ceil((len(ordered) - 1) * percentile / 100)]


async def test_a_revenue_percentile_is_fixed_from_the_window_before_launch(sink: Sink) -> None:
    purchases = await fill(sink)
    in_window = {
        visitor: [value for hour, value in events if 24 <= hour < 48]
        for visitor, events in purchases.items()
    }
    revenues = [sum(values) for values in in_window.values() if values]
    counts = [float(len(values)) for values in in_window.values() if values]
    definition = launching("revenue")
    assert needs_resolving(definition)

    fixed, resolved = await resolve_percentile_caps(
        sink.redis, sink.prefix, definition, LAUNCH, lookback_days=1
    )

    assert fixed.goals[0].cap == higher_percentile(revenues, 90.0)
    assert (resolved[0].visitors, resolved[0].cap) == (len(revenues), fixed.goals[0].cap)
    assert not needs_resolving(fixed)
    counted, _ = await resolve_percentile_caps(
        sink.redis, sink.prefix, launching("count", 75.0), LAUNCH, lookback_days=1
    )
    assert counted.goals[0].cap == higher_percentile(counts, 75.0)


async def test_a_goal_without_history_asks_for_a_value(sink: Sink) -> None:
    await fill(sink)
    with pytest.raises(InvalidInput, match="no visitor had its events"):
        await resolve_percentile_caps(
            sink.redis, sink.prefix, launching("revenue", goal="signup"), LAUNCH, lookback_days=1
        )


def test_a_draft_is_resolved_only_when_it_goes_live() -> None:
    draft = launching("revenue").model_dump() | {"status": "draft"}
    assert not needs_resolving(ExperimentDefinition.model_validate(draft))
