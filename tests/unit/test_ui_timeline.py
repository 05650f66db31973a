"""The results page's decision history: one escaped line per event, newest first."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from html import unescape
from typing import Any

from worker.api.ui.render import decision_timeline
from worker.events.experiment import ExperimentDefinition
from worker.results.contract import AllocationUpdated, SrmCleared

AT = datetime(2026, 11, 20, 10, 30, 5, tzinfo=timezone(timedelta(hours=2)))

BANDIT = ExperimentDefinition.model_validate(
    {
        "id": "exp",
        "project_key": "shop",
        "name": "Checkout",
        "status": "live",
        "type": "mab",
        "variants": [
            {"id": "a", "name": "A", "is_control": True},
            {"id": "b", "name": '<b>"New" & more</b>'},
        ],
        "goals": [{"key": "buy", "name": "Buy", "primary": True}],
        "stats": {"engine": "bayesian"},
    }
)


def header(kind: str, sequence: int) -> dict[str, Any]:
    return {
        "kind": kind,
        "experiment_id": "exp",
        "variant_id": None,
        "goal": "buy",
        "sequence": sequence,
        "idempotency_key": f"exp:{kind}:-:{sequence}",
        "computed_at": AT,
    }


def test_an_empty_history_says_so() -> None:
    html = decision_timeline(BANDIT, [])
    assert '<p class="note">No decisions yet.</p>' in html and "<ol>" not in html


def test_each_event_is_one_item_in_the_given_order_with_its_utc_time_and_escaped_names() -> None:
    moved = AllocationUpdated.model_validate(
        header("allocation_updated", 1)
        | {
            "weights": {"a": 0.25, "b": 0.75},
            "previous_weights": {"a": 0.5, "b": 0.5},
            "probability_best": None,
        }
    )
    cleared = SrmCleared.model_validate(header("srm_cleared", 1))
    html = decision_timeline(BANDIT, [cleared, moved])
    assert html.count("<li ") == 2
    assert html.index('data-kind="srm_cleared"') < html.index('data-kind="allocation_updated"')
    assert '<time datetime="2026-11-20T08:30:05+00:00">2026-11-20 08:30:05 UTC</time>' in html
    assert "Sample ratio mismatch alarm reset by an operator" in html
    # Escaped, however the escaper spells its entities: the text reads back unchanged.
    assert (
        'Bandit weights moved: A 50.0 % → 25.0 %, <b>"New" & more</b> 50.0 % → 75.0 %'
    ) in unescape(html)
    assert "<b>" not in html and '"New"' not in html and "& more" not in html
