"""The experiment definition the benchmarks publish (two arms, one revenue goal)."""

from __future__ import annotations


def two_arm_definition(experiment_id: str) -> dict[str, object]:
    """A live A/B test with a primary `purchase` revenue goal, in the native shape."""
    return {
        "id": experiment_id,
        "project_key": "bench",
        "name": experiment_id,
        "status": "live",
        "variants": [
            {"id": "0", "name": "A", "is_control": True},
            {"id": "1", "name": "B"},
        ],
        "goals": [{"key": "purchase", "name": "Purchase", "type": "revenue", "primary": True}],
    }
