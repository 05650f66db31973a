"""Revenue per order and the goal's cap in the result document (issue 15, items 10, 11).

Revenue per order is ΣR / ΣO over visitors: a ratio whose unit sampled is the visitor
(the orders of one visitor are not independent), compared with the reference by the
delta method, in a correction family of its own so the goals' corrected p-values do
not move. The expected numbers come from per-visitor orders and revenue listed here.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from worker.events.experiment import ExperimentDefinition
from worker.results.experiment_result import result_document
from worker.results.query import ResultQuery
from worker.results.query_totals import QueryTotals
from worker.results.variant_totals import VariantTotals
from worker.stats import AnalysisRequest, analyze_goals

# Per visitor (orders, revenue); the rest of each arm's visitors bought nothing.
BUYERS = {
    "a": [(1, 40.0), (2, 90.0), (1, 35.0), (3, 150.0), (1, 55.0), (1, 42.0), (2, 70.0)],
    "b": [(1, 60.0), (1, 75.0), (2, 160.0), (1, 58.0), (4, 230.0), (1, 66.0), (2, 120.0)],
}
VISITORS = 100


def definition(cap: float | None = None) -> ExperimentDefinition:
    return ExperimentDefinition.model_validate(
        {
            "id": "exp",
            "project_key": "shop",
            "name": "Checkout",
            "status": "live",
            "variants": [
                {"id": "a", "name": "A", "is_control": True},
                {"id": "b", "name": "B"},
            ],
            "goals": [
                {"key": "buy", "name": "Buy", "type": "revenue", "primary": True, "cap": cap},
                {"key": "click", "name": "Click", "type": "count", "cap": 10},
                {"key": "signup", "name": "Signup"},
            ],
            "stats": {"engine": "frequentist", "sequential": False, "correction": "holm"},
        }
    )


def row(variant: str, order_sums: bool = True) -> VariantTotals:
    buyers = BUYERS[variant]
    totals = VariantTotals(
        variant,
        visitors=VISITORS,
        visits=VISITORS,
        conversions=len(buyers),
        converted_visits=len(buyers),
        goal_events=sum(o for o, _ in buyers),
        goal_events_sum_squares=sum(o * o for o, _ in buyers),
        orders=sum(o for o, _ in buyers),
        revenue=sum(r for _, r in buyers),
        revenue_sum_squares=sum(r * r for _, r in buyers),
    )
    if order_sums:
        totals.orders_sum_squares = sum(o * o for o, _ in buyers)
        totals.revenue_orders_product = sum(o * r for o, r in buyers)
    return totals


def totals(order_sums: bool = True) -> dict[str, QueryTotals]:
    rows = [row("a", order_sums), row("b", order_sums)]
    return {goal: QueryTotals(rows) for goal in ("buy", "click", "signup")}


def per_visitor(variant: str) -> tuple[list[float], list[float]]:
    """(orders, revenue) of every visitor of the arm, buyers or not."""
    buyers = BUYERS[variant]
    idle = [0.0] * (VISITORS - len(buyers))
    return [float(o) for o, _ in buyers] + idle, [r for _, r in buyers] + idle


def test_revenue_per_order_is_a_ratio_over_visitors_with_its_interval() -> None:
    document = result_document(definition(), totals())
    shown = document.goals["buy"].variants[1].revenue_per_order_statistics
    assert shown is not None
    # By hand: the two arms' revenue per order and the delta-method variance.
    summary = {}
    for variant in ("a", "b"):
        orders, revenue = per_visitor(variant)
        n = len(orders)
        mean_o, mean_r = sum(orders) / n, sum(revenue) / n
        var_o = sum((o - mean_o) ** 2 for o in orders) / (n - 1)
        var_r = sum((r - mean_r) ** 2 for r in revenue) / (n - 1)
        cov = sum((o - mean_o) * (r - mean_r) for o, r in zip(orders, revenue, strict=True))
        ratio = mean_r / mean_o
        variance = (var_r + ratio**2 * var_o - 2 * ratio * cov / (n - 1)) / mean_o**2
        summary[variant] = (ratio, variance / n)
    (ra, va), (rb, vb) = summary["a"], summary["b"]
    assert ra == pytest.approx(482.0 / 11) and rb == pytest.approx(769.0 / 12)
    assert shown.lift == pytest.approx(rb / ra - 1.0, rel=1e-9)
    # The log ratio's interval, mapped back to a relative lift (Welch dof, so wider
    # than the normal one by a hair at 100 visitors an arm).
    log_se = math.sqrt(vb / rb**2 + va / ra**2)
    assert shown.ci is not None and shown.ci[0] is not None and shown.ci[1] is not None
    normal = (
        math.expm1(math.log(rb / ra) - 1.96 * log_se),
        math.expm1(math.log(rb / ra) + 1.96 * log_se),
    )
    assert shown.ci[0] == pytest.approx(normal[0], abs=0.01)
    assert shown.ci[1] == pytest.approx(normal[1], abs=0.01)
    assert shown.p_value is not None and shown.p_value_adjusted == shown.p_value


def test_revenue_per_order_is_a_family_of_its_own() -> None:
    with_orders = result_document(definition(), totals())
    without = result_document(definition(), totals(order_sums=False))
    # Counters without per-visitor order sums leave it out, and nothing else moves.
    assert without.goals["buy"].variants[1].revenue_per_order_statistics is None
    for goal in ("buy", "click", "signup"):
        for kept, plain in zip(
            with_orders.goals[goal].variants, without.goals[goal].variants, strict=True
        ):
            assert kept.statistics == plain.statistics
            assert kept.conversion_statistics == plain.conversion_statistics
    # Alone in its family, Holm leaves its p-value as it is.
    request = AnalysisRequest.model_validate(
        {
            "metric": "ratio",
            "sequential": False,
            "variants": [
                {"id": r.variant_id, "control": r.variant_id == "a", "n": r.visitors}
                | {"sum": r.revenue, "sum_squares": r.revenue_sum_squares}
                | {"denominator_sum": r.orders, "denominator_sum_squares": r.orders_sum_squares}
                | {"main_denominator_sum_product": r.revenue_orders_product}
                for r in (row("a"), row("b"))
            ],
        }
    )
    (expected,) = analyze_goals([request], "holm")
    shown = with_orders.goals["buy"].variants[1].revenue_per_order_statistics
    assert shown is not None
    assert shown.model_dump(mode="json") == expected.variants[0].model_dump(mode="json")


def test_only_revenue_treatments_carry_revenue_per_order() -> None:
    published: dict[str, Any] = result_document(definition(), totals()).model_dump(mode="json")
    for goal in ("click", "signup"):
        assert all(
            "revenue_per_order_statistics" not in v for v in published["goals"][goal]["variants"]
        )
    control, treatment = published["goals"]["buy"]["variants"]
    assert "revenue_per_order_statistics" not in control
    assert treatment["revenue_per_order_statistics"]["lift_type"] == "relative"


def test_the_goal_block_states_its_cap() -> None:
    document = result_document(definition(cap=250.0), totals(), ResultQuery())
    assert document.goals["buy"].cap == 250.0
    assert document.goals["click"].cap == 10
    published = document.model_dump(mode="json")["goals"]
    assert published["signup"]["cap"] is None
    assert result_document(definition(), totals()).goals["buy"].cap is None
