"""CUPED in the result document (issue 15, item 9): beside the raw statistics.

The expected numbers come from per-visitor (pre-entry X, post-entry Y) values generated
here, adjusted by an ordinary least-squares fit computed independently with numpy.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from worker.api.kameleoon.shapes import REFERENCE, variation_data
from worker.api.mida.params import ResultParams
from worker.api.mida.shapes import result_response
from worker.api.ui.render import ExperimentPage, experiment_page
from worker.cli.results_command import _verdict_text, goal_result
from worker.events.experiment import ExperimentDefinition
from worker.results.contract import ResultDocument
from worker.results.experiment_result import result_document
from worker.results.query import ResultQuery
from worker.results.query_totals import QueryTotals
from worker.results.variant_totals import VariantTotals

VISITORS = 2000
NOW = datetime(2024, 1, 30, 12, tzinfo=UTC)


def definition(cuped_days: int = 14) -> ExperimentDefinition:
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
            "goals": [{"key": "buy", "name": "Buy", "type": "revenue", "primary": True}],
            "stats": {"engine": "frequentist", "sequential": False, "cuped_days": cuped_days},
        }
    )


def visitors(seed: int = 7) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per arm, every visitor's (X, Y): Y follows X closely, B lifts Y by 1."""
    rng = np.random.default_rng(seed)
    arms = {}
    for variant, effect in (("a", 0.0), ("b", 1.0)):
        x = rng.gamma(2.0, 10.0, VISITORS)
        y = 5.0 + 0.9 * x + effect + rng.normal(0.0, 6.0, VISITORS)
        arms[variant] = (x, y)
    return arms


def row(variant: str, x: np.ndarray, y: np.ndarray, covariate: bool = True) -> VariantTotals:
    totals = VariantTotals(
        variant,
        visitors=len(y),
        visits=len(y),
        conversions=len(y),
        converted_visits=len(y),
        goal_events=len(y),
        goal_events_sum_squares=len(y),
        orders=len(y),
        revenue=float(y.sum()),
        revenue_sum_squares=float((y * y).sum()),
    )
    if covariate:
        totals.covariate_sum = float(x.sum())
        totals.covariate_sum_squares = float((x * x).sum())
        totals.covariate_product_sum = float((x * y).sum())
    return totals


def document(
    cuped_days: int = 14, covariate: bool = True, query: ResultQuery | None = None
) -> ResultDocument:
    arms = visitors()
    rows = [row(v, *arms[v], covariate=covariate) for v in ("a", "b")]
    return result_document(definition(cuped_days), {"buy": QueryTotals(rows)}, query)


def test_cuped_statistics_are_the_least_squares_adjusted_lift_beside_the_raw_one() -> None:
    arms = visitors()
    # Within-arm pooled slope: one intercept per arm, one slope (numpy's own fit).
    xs = np.concatenate([arms["a"][0], arms["b"][0]])
    ys = np.concatenate([arms["a"][1], arms["b"][1]])
    in_b = np.concatenate([np.zeros(VISITORS), np.ones(VISITORS)])
    design = np.column_stack([1.0 - in_b, in_b, xs])
    (_, _, theta), *_ = np.linalg.lstsq(design, ys, rcond=None)
    adjusted = {v: arms[v][1].mean() - theta * (arms[v][0].mean() - xs.mean()) for v in "ab"}

    shown = document()
    block = shown.goals["buy"]
    treatment = block.variants[1]
    assert block.cuped_theta == pytest.approx(theta, rel=1e-9)
    assert treatment.cuped_statistics is not None and treatment.statistics is not None
    assert treatment.cuped_statistics.lift == pytest.approx(
        adjusted["b"] / adjusted["a"] - 1.0, rel=1e-9
    )
    assert treatment.statistics.lift == pytest.approx(
        arms["b"][1].mean() / arms["a"][1].mean() - 1.0, rel=1e-9
    )
    # X explains most of Y: the adjusted interval is far narrower than the raw one.
    raw, cuped = treatment.statistics.ci, treatment.cuped_statistics.ci
    assert raw is not None and cuped is not None
    assert cuped[0] is not None and cuped[1] is not None
    assert raw[0] is not None and raw[1] is not None
    assert cuped[1] - cuped[0] < 0.6 * (raw[1] - raw[0])
    reduction = treatment.cuped_statistics.variance_reduction
    assert reduction is not None and reduction > 0.6
    assert block.variants[0].cuped_statistics is None  # the reference


def test_no_cuped_when_turned_off_without_covariate_or_per_visit() -> None:
    assert document(cuped_days=0).goals["buy"].variants[1].cuped_statistics is None
    without = document(covariate=False).goals["buy"]
    assert without.variants[1].cuped_statistics is None and without.cuped_theta is None
    per_visit = document(query=ResultQuery(count_unit="visits")).goals["buy"]
    assert per_visit.variants[1].cuped_statistics is None


def kameleoon_goal(doc: ResultDocument) -> dict[str, Any]:
    data = variation_data({REFERENCE: doc.goals}, ["buy"])["variationData"]["b"]
    goals: dict[str, Any] = data["breakdownData"][REFERENCE]["generalData"]["goalsData"]
    return goals["buy"]


def test_every_shape_shows_the_adjusted_lift_with_its_own_statistics() -> None:
    doc = document()
    adjusted = doc.goals["buy"].variants[1].cuped_statistics
    assert adjusted is not None and adjusted.improvement is not None
    assert adjusted.variance_reduction is not None
    experiment = definition()

    mida = result_response(experiment, doc, "buy", None, NOW).variants[1]
    assert mida.cuped_improvement == adjusted.improvement
    assert mida.cuped_variance_reduction == pytest.approx(
        100.0 * adjusted.variance_reduction, abs=0.01
    )
    assert mida.cuped_statistics is not None and mida.cuped_statistics.p_value == adjusted.p_value
    assert (
        result_response(experiment, document(cuped_days=0), "buy", None, NOW)
        .variants[1]
        .cuped_improvement
        is None
    )

    kameleoon = kameleoon_goal(doc)
    assert kameleoon["cupedImprovementRate"] == adjusted.improvement
    assert adjusted.reliability is not None
    assert kameleoon["cupedReliability"] == pytest.approx(100.0 * adjusted.reliability)
    assert "cupedImprovementRate" not in kameleoon_goal(document(cuped_days=0))

    shown = goal_result(experiment, doc, "buy")
    treatment = next(row for row in shown.variants if not row.is_reference)
    assert f"CUPED-adjusted {adjusted.improvement:+.1f} %" in _verdict_text(treatment, shown)

    html = experiment_page(
        ExperimentPage(
            definition=experiment,
            result=result_response(experiment, doc, "buy", None, NOW),
            document=doc,
            params=ResultParams(goal_key="buy"),
            action="/ui/experiments/exp",
            key=None,
            days=[],
            daily=[],
            cumulative=[],
        )
    )
    assert "CUPED-adjusted improvement" in html and "CUPED-adjusted interval" in html
