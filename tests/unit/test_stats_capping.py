"""The percentile a cap is fixed at (an observed value, the nearest at or above), and
kept once fixed."""

from __future__ import annotations

import pytest

from worker.events.experiment import ExperimentDefinition
from worker.results.capping import keep_fixed_caps, needs_resolving
from worker.stats.capping import percentile_cap


def test_the_cap_is_an_observed_value_at_or_above_the_percentile() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    # rank (n - 1) * 0.99 = 98.01 -> the next observed value, index 99
    assert percentile_cap(values, 99.0) == 100.0
    assert percentile_cap(values, 50.0) == 51.0
    assert percentile_cap([5.0, 1.0, 3.0], 60.0) == 5.0


def test_no_values_no_cap_and_a_bad_percentile_is_refused() -> None:
    assert percentile_cap([], 99.0) is None
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile_cap([1.0], 100.0)


def capped(status: str, cap: float | None) -> ExperimentDefinition:
    goal = {"key": "buy", "name": "Buy", "type": "revenue", "primary": True}
    return ExperimentDefinition.model_validate(
        {
            "id": "x", "project_key": "p", "name": "X", "status": status,
            "variants": [{"id": "a", "name": "A", "is_control": True}, {"id": "b", "name": "B"}],
            "goals": [goal | {"cap_percentile": 99.0, "cap": cap}],
        }
    )  # fmt: skip


def test_publishing_a_live_file_again_keeps_the_cap_fixed_at_launch() -> None:
    again = keep_fixed_caps(capped("live", None), capped("live", 412.0))
    assert again.goals[0].cap == 412.0 and not needs_resolving(again)
    # Before launch nothing is fixed: the percentile is taken when it goes live.
    assert keep_fixed_caps(capped("live", None), capped("draft", 412.0)).goals[0].cap is None
    assert needs_resolving(capped("live", None)) and not needs_resolving(capped("draft", None))
