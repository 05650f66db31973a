"""Every lift is shown with the interval and verdict of its own metric (issue 15, item 8).

A revenue goal whose conversion rate rose by 24 % while revenue per visitor rose by
18.6 %: each shape (Mida, Kameleoon, the results page, the results command) must pair
each lift with the interval of that same metric. The expected lifts come from the raw
counts, the expected intervals from the statistics engine run on each metric alone.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.unit.result_rows import goal_block, variant_row
from worker.api.kameleoon.shapes import variation_data
from worker.api.mida.shapes import result_response, variant_rows
from worker.api.ui.render import variant_table
from worker.cli.results_command import GoalResult, _verdict_text
from worker.events.experiment import ExperimentDefinition, GoalType
from worker.results.contract import ResultDocument, VariantStatistics
from worker.results.experiment_result import result_document
from worker.results.query_totals import QueryTotals
from worker.results.variant_totals import VariantTotals
from worker.results.verdict import CLIPPED_NOTE, clipped_relative
from worker.stats import AnalysisRequest, analyze
from worker.stats.common import Interval
from worker.stats.schema import VariantResult

NOW = datetime(2024, 1, 30, 12, tzinfo=UTC)
VISITORS = 2000
CONVERSIONS = {"0": 200, "1": 248}
REVENUE = {"0": 20_000.0, "1": 23_720.0}
SPREAD = 2500.0
"""Variance of one order's value: Σy² = converters × (mean order² + SPREAD)."""


def sum_squares(variant: str) -> float:
    mean_order = REVENUE[variant] / CONVERSIONS[variant]
    return CONVERSIONS[variant] * (mean_order**2 + SPREAD)


def totals(variant: str) -> VariantTotals:
    return VariantTotals(
        variant,
        visitors=VISITORS,
        visits=VISITORS,
        conversions=CONVERSIONS[variant],
        converted_visits=CONVERSIONS[variant],
        goal_events=CONVERSIONS[variant],
        goal_events_sum_squares=CONVERSIONS[variant],
        orders=CONVERSIONS[variant],
        revenue=REVENUE[variant],
        revenue_sum_squares=sum_squares(variant),
    )


def definition(engine: str) -> ExperimentDefinition:
    return ExperimentDefinition.model_validate(
        {
            "id": "cart",
            "project_key": "shop",
            "name": "Cart",
            "status": "live",
            "started_at": "2024-01-15T10:30:00+00:00",
            "variants": [
                {"id": "0", "name": "Control", "is_control": True, "traffic_weight": 1},
                {"id": "1", "name": "Red", "traffic_weight": 1},
            ],
            "goals": [{"key": "buy", "name": "Buy", "type": "revenue", "primary": True}],
            "stats": {"engine": engine, "sequential": False},
        }
    )


def document(experiment: ExperimentDefinition) -> ResultDocument:
    return result_document(experiment, {"buy": QueryTotals([totals("0"), totals("1")])})


def expected(engine: str, metric: str) -> VariantResult:
    """The engine's comparison on one metric alone, from the raw counts."""
    variants = []
    for variant in ("0", "1"):
        if metric == "proportion":
            sums: dict[str, float] = {"sum": CONVERSIONS[variant]}
        else:
            sums = {"sum": REVENUE[variant], "sum_squares": sum_squares(variant)}
        variants.append({"id": variant, "control": variant == "0", "n": VISITORS} | sums)
    request = {"metric": metric, "engine": engine, "alpha": 0.05, "variants": variants}
    return analyze(AnalysisRequest.model_validate(request)).variants[0]


def percent(interval: Interval | None) -> list[float]:
    assert interval is not None and None not in interval
    return [100.0 * side for side in interval if side is not None]


CONVERSION_LIFT = 100.0 * (CONVERSIONS["1"] / CONVERSIONS["0"] - 1.0)  # +24 %
VALUE_LIFT = 100.0 * (REVENUE["1"] / REVENUE["0"] - 1.0)  # +18.6 %
ENGINES = pytest.mark.parametrize("engine", ["frequentist", "bayesian"])


def test_the_example_lifts_differ() -> None:
    assert (round(CONVERSION_LIFT, 1), round(VALUE_LIFT, 1)) == (24.0, 18.6)


@ENGINES
def test_the_document_keeps_both_metrics(engine: str) -> None:
    treatment = document(definition(engine)).goals["buy"].variants[1]
    assert treatment.statistics is not None and treatment.conversion_statistics is not None
    assert treatment.statistics.improvement == pytest.approx(VALUE_LIFT)
    assert treatment.conversion_statistics.improvement == pytest.approx(CONVERSION_LIFT)
    assert treatment.conversion_statistics.ci == pytest.approx(expected(engine, "proportion").ci)
    assert treatment.statistics.ci == pytest.approx(expected(engine, "mean").ci)
    # Decisions read `statistics`: still the revenue per visitor.
    assert treatment.statistics.reliability == expected(engine, "mean").reliability


@ENGINES
def test_mida_pairs_each_lift_with_its_own_interval(engine: str) -> None:
    experiment = definition(engine)
    response = result_response(experiment, document(experiment), "buy", None, NOW)
    body = response.model_dump(mode="json")
    treatment = body["variants"][1]
    interval = "confidence_interval" if engine == "frequentist" else "credible_interval"
    assert treatment["improvement"] == pytest.approx(CONVERSION_LIFT)
    assert treatment["statistics"][interval] == pytest.approx(
        percent(expected(engine, "proportion").ci), abs=1e-4
    )
    assert treatment["revenue_per_visitor_improvement"] == pytest.approx(VALUE_LIFT)
    assert treatment["revenue_per_visitor_statistics"][interval] == pytest.approx(
        percent(expected(engine, "mean").ci), abs=1e-4
    )
    for statistics in (treatment["statistics"], treatment["revenue_per_visitor_statistics"]):
        low, high = statistics[interval]
        assert statistics["interval_note"] is None
        assert low < (CONVERSION_LIFT if statistics is treatment["statistics"] else VALUE_LIFT)
        assert high > 0


@ENGINES
def test_kameleoon_improvement_rate_has_the_metric_of_its_reliability(engine: str) -> None:
    data = variation_data({"_reference": document(definition(engine)).goals}, ["buy"])
    goal = data["variationData"]["1"]["breakdownData"]["_reference"]["generalData"]
    buy = goal["goalsData"]["buy"]
    value, rate = expected(engine, "mean"), expected(engine, "proportion")
    assert value.reliability is not None and rate.reliability is not None
    assert buy["improvementRate"] == pytest.approx(VALUE_LIFT)
    assert buy["improvementInterval"] == pytest.approx(percent(value.ci))
    assert buy["reliability"] == pytest.approx(100.0 * value.reliability)
    assert buy["conversionRateImprovementRate"] == pytest.approx(CONVERSION_LIFT)
    assert buy["conversionRateImprovementInterval"] == pytest.approx(percent(rate.ci))
    assert buy["conversionRateReliability"] == pytest.approx(100.0 * rate.reliability)


def band(interval: Interval | None) -> str:
    low, high = percent(interval)
    return f"{low:+.1f} % to {high:+.1f} %"


def test_the_results_page_shows_each_lift_with_its_interval() -> None:
    experiment = definition("frequentist")
    variants = variant_rows(
        experiment, document(experiment).goals["buy"].variants, GoalType.REVENUE
    )
    html = variant_table(variants, 95.0, GoalType.REVENUE)
    treatment = re.search(r'<tr data-variant="1">(.*?)</tr>', html)
    assert treatment is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", treatment.group(1))
    # name, visitors, conversions, rate, revenue, then per metric: lift, interval, verdict
    assert cells[5:7] == [
        f"{CONVERSION_LIFT:+.2f} %",
        band(expected("frequentist", "proportion").ci),
    ]
    assert cells[8:10] == [f"{VALUE_LIFT:+.2f} %", band(expected("frequentist", "mean").ci)]
    assert "Conversion rate verdict" in html and "Revenue per visitor verdict" in html


def test_the_results_command_shows_each_lift_with_its_interval() -> None:
    experiment = definition("frequentist")
    goal = document(experiment).goals["buy"]
    result = GoalResult(
        experiment_id="cart",
        status=experiment.status,
        goal="buy",
        goal_type=goal.type,
        unit=goal.unit,
        confidence_threshold_percent=95.0,
        srm_p_value=None,
        variants=goal.variants,
        breakdown=None,
        segments={},
    )
    line = _verdict_text(goal.variants[1], result)
    rate, value = expected("frequentist", "proportion"), expected("frequentist", "mean")
    assert f"conversion rate {CONVERSION_LIFT:+.1f} % [{band(rate.ci)}]" in line
    assert f"revenue per visitor {VALUE_LIFT:+.1f} % [{band(value.ci)}]" in line
    assert _verdict_text(goal.variants[0], result) == "Baseline"


# An interval tested on the ratio itself (a stored document, relative_method "ratio")
# can reach below -100 %, which a metric that cannot be negative cannot fall by.
BELOW = VariantStatistics(
    id="1", lift_type="relative", lift=-0.4, ci=(-1.3, 0.2), improvement=-40.0, reliability=0.1
)


def test_clipping_only_non_negative_metrics() -> None:
    assert clipped_relative((-1.3, 0.2), non_negative=True) == ((-1.0, 0.2), CLIPPED_NOTE)
    assert clipped_relative((-1.3, 0.2), non_negative=False) == ((-1.3, 0.2), None)
    assert clipped_relative((None, 0.2), non_negative=True) == ((None, 0.2), None)


def count_rows() -> list[Any]:
    return [
        variant_row("0", is_control=True, is_reference=True, visitors=100, goal_events=50),
        variant_row(
            "1",
            visitors=100,
            goal_events=30,
            statistics=BELOW,
            conversion_statistics=BELOW,
        ),
    ]


def test_a_count_goal_interval_below_minus_100_is_clipped_with_a_note() -> None:
    rows = count_rows()
    treatment = variant_rows(definition("frequentist"), rows, GoalType.COUNT)[1]
    for statistics in (treatment.statistics, treatment.events_per_visitor_statistics):
        assert statistics is not None
        assert statistics.confidence_interval == (-100.0, 20.0)
        assert statistics.interval_note == CLIPPED_NOTE
    assert treatment.events_per_visitor_improvement == pytest.approx(-40.0)
    html = variant_table([treatment], 95.0, GoalType.COUNT)
    assert html.count("-100.0 % to +20.0 %") == 2 and CLIPPED_NOTE in html
    block = goal_block(rows, GoalType.COUNT)
    buy = variation_data({"_reference": {"n": block}}, ["n"])["variationData"]["1"]
    data = buy["breakdownData"]["_reference"]["generalData"]["goalsData"]["n"]
    assert data["improvementInterval"] == [-100.0, 20.0]
    assert data["improvementIntervalNote"] == CLIPPED_NOTE
    assert data["conversionRateImprovementInterval"] == [-100.0, 20.0]


def test_a_revenue_interval_is_not_clipped() -> None:
    """Revenue may be negative (refunds), so it can fall by more than 100 %."""
    treatment = variant_rows(definition("frequentist"), count_rows(), GoalType.REVENUE)[1]
    assert treatment.revenue_per_visitor_statistics is not None
    assert treatment.revenue_per_visitor_statistics.confidence_interval == (-130.0, 20.0)
    assert treatment.revenue_per_visitor_statistics.interval_note is None
    assert treatment.statistics is not None
    assert treatment.statistics.confidence_interval == (-100.0, 20.0)
