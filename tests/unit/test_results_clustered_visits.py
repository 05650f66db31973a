"""Per-visit metrics are clustered by visitor (issue 15, item 6).

A visitor's visits are not independent draws: a visitor who likes the product converts
on many of their visits. Analysed as independent, visits understate the variance and
an A/A test declares differences too often. With the visit unit the document analyses
each per-visit metric as a ratio (converted visits, goal events or revenue over visits)
with the visitor as the unit sampled, by the delta method. The expected numbers here
come from per-visitor values generated in the test and summed in plain Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from worker.events.experiment import ExperimentDefinition
from worker.results.contract import ResultDocument
from worker.results.experiment_result import result_document
from worker.results.query import ResultQuery
from worker.results.query_totals import QueryTotals
from worker.results.variant_totals import VariantTotals
from worker.stats import AnalysisRequest, analyze_goals
from worker.stats.power import treatment_power

VISITS = ResultQuery(count_unit="visits")


def definition(**stats: Any) -> ExperimentDefinition:
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
                {"key": "signup", "name": "Signup", "primary": True},
                {"key": "buy", "name": "Buy", "type": "revenue"},
                {"key": "click", "name": "Click", "type": "count"},
            ],
            "stats": {"engine": "frequentist", "sequential": False} | stats,
        }
    )


class Visitors:
    """Per-visitor values of one arm: visits V, converted visits C, goal events E, revenue R."""

    def __init__(self, seed: int, n: int, propensity: tuple[float, float]) -> None:
        rng = np.random.default_rng(seed)
        p = rng.beta(*propensity, size=n)
        self.visits = [int(v) for v in 1 + rng.poisson(2.0, size=n)]
        self.converted = [int(rng.binomial(v, q)) for v, q in zip(self.visits, p, strict=True)]
        self.events = [c + int(e) for c, e in zip(self.converted, rng.poisson(0.5, n), strict=True)]
        self.revenue = [round(30.0 * c + float(rng.uniform(0, 5)) * c, 2) for c in self.converted]

    def totals(self, variant: str, cohort_sums: bool = True) -> VariantTotals:
        """The arm's counters; without ``cohort_sums`` as counters written before the
        per-visitor visit sums were kept."""
        v, c, e, r = self.visits, self.converted, self.events, self.revenue
        row = VariantTotals(
            variant,
            visitors=len(v),
            visits=sum(v),
            conversions=sum(1 for x in c if x > 0),
            converted_visits=sum(c),
            goal_events=sum(e),
            goal_events_sum_squares=sum(x * x for x in e),
            orders=sum(c),
            revenue=sum(r),
            revenue_sum_squares=sum(x * x for x in r),
        )
        if cohort_sums:
            row.cohort_visits = sum(v)
            row.cohort_visits_sum_squares = sum(x * x for x in v)
            row.converted_visits_sum_squares = sum(x * x for x in c)
            row.visits_converted_visits_product = sum(x * y for x, y in zip(v, c, strict=True))
            row.visits_goal_events_product = sum(x * y for x, y in zip(v, e, strict=True))
            row.visits_revenue_product = sum(x * y for x, y in zip(v, r, strict=True))
        return row

    def numerator(self, goal: str) -> Sequence[float]:
        values: dict[str, Sequence[float]] = {
            "signup": self.converted,
            "buy": self.revenue,
            "click": self.events,
        }
        return values[goal]


CONTROL = Visitors(1, 600, (1.0, 7.0))
TREATMENT = Visitors(2, 640, (1.3, 7.0))


def totals(cohort_sums: bool = True) -> dict[str, QueryTotals]:
    rows = [CONTROL.totals("a", cohort_sums), TREATMENT.totals("b", cohort_sums)]
    return {goal: QueryTotals(rows) for goal in ("signup", "buy", "click")}


def ratio_request(goal: str) -> AnalysisRequest:
    """The per-visit ratio of ``goal``, visitors as units, from the per-visitor values."""
    variants = []
    for variant, arm in (("a", CONTROL), ("b", TREATMENT)):
        m, d = arm.numerator(goal), arm.visits
        variants.append(
            {
                "id": variant,
                "control": variant == "a",
                "n": len(d),
                "sum": sum(m),
                "sum_squares": sum(x * x for x in m),
                "denominator_sum": sum(d),
                "denominator_sum_squares": sum(x * x for x in d),
                "main_denominator_sum_product": sum(x * y for x, y in zip(m, d, strict=True)),
            }
        )
    return AnalysisRequest.model_validate(
        {"metric": "ratio", "sequential": False, "alpha": 0.05, "variants": variants}
    )


def statistics(document: ResultDocument, goal: str, field: str = "statistics") -> dict[str, Any]:
    row = document.model_dump(mode="json")["goals"][goal]["variants"][1]
    return {k: v for k, v in row[field].items() if k != "power"}


def delta_variance(m: Sequence[float], d: Sequence[float]) -> tuple[float, float]:
    """(ΣM/ΣD, the per-visitor variance of that ratio by the delta method), by hand."""
    n = len(d)
    mean_m, mean_d = sum(m) / n, sum(d) / n
    var_m = sum((x - mean_m) ** 2 for x in m) / (n - 1)
    var_d = sum((x - mean_d) ** 2 for x in d) / (n - 1)
    cov = sum((x - mean_m) * (y - mean_d) for x, y in zip(m, d, strict=True)) / (n - 1)
    ratio = mean_m / mean_d
    return ratio, (var_m + ratio * ratio * var_d - 2 * ratio * cov) / (mean_d * mean_d)


@pytest.mark.parametrize("goal", ["signup", "buy", "click"])
def test_per_visit_metrics_are_ratios_with_the_visitor_as_unit(goal: str) -> None:
    document = result_document(definition(), totals(), VISITS)
    block = document.goals[goal]
    assert block.unit == "visits" and block.visit_analysis == "clustered"
    # The rows still show visits as the units of the rates.
    assert [row.units for row in block.variants] == [sum(CONTROL.visits), sum(TREATMENT.visits)]
    (expected,) = analyze_goals([ratio_request(goal)], "none")
    assert statistics(document, goal) == expected.variants[0].model_dump(mode="json")
    # The lift and its standard error, by hand: per-visit rates and the delta method.
    rate_a, var_a = delta_variance(CONTROL.numerator(goal), CONTROL.visits)
    rate_b, var_b = delta_variance(TREATMENT.numerator(goal), TREATMENT.visits)
    shown = block.variants[1].statistics
    assert shown is not None
    assert shown.lift == pytest.approx(rate_b / rate_a - 1.0, rel=1e-9)
    se = math.sqrt(var_b / 640 / rate_a**2 + var_a / 600 * rate_b**2 / rate_a**4)
    assert shown.se == pytest.approx(se, rel=1e-9)


def test_a_value_goals_conversion_rate_per_visit_is_clustered_too() -> None:
    document = result_document(definition(), totals(), VISITS)
    (expected,) = analyze_goals([ratio_request("signup")], "none")
    assert statistics(document, "buy", "conversion_statistics") == expected.variants[0].model_dump(
        mode="json"
    )


def test_counters_without_visit_sums_fall_back_to_independent_visits_and_say_so() -> None:
    document = result_document(definition(), totals(cohort_sums=False), VISITS)
    block = document.goals["signup"]
    assert block.visit_analysis == "unclustered"
    proportion = AnalysisRequest.model_validate(
        {
            "metric": "proportion",
            "sequential": False,
            "variants": [
                {"id": "a", "control": True, "n": sum(CONTROL.visits)}
                | {"sum": sum(CONTROL.converted)},
                {"id": "b", "n": sum(TREATMENT.visits), "sum": sum(TREATMENT.converted)},
            ],
        }
    )
    (expected,) = analyze_goals([proportion], "none")
    assert statistics(document, "signup") == expected.variants[0].model_dump(mode="json")
    # Independent visits understate the spread of visitors' correlated visits.
    clustered = result_document(definition(), totals(), VISITS).goals["signup"].variants[1]
    naive = block.variants[1].statistics
    assert clustered.statistics is not None and naive is not None
    assert naive.se is not None and clustered.statistics.se is not None
    assert naive.se < 0.9 * clustered.statistics.se


def test_partial_visit_sums_fall_back_rather_than_fail() -> None:
    # Sums that no complete per-visitor data can give (ΣV² < (ΣV)²/n): counters that
    # began keeping them while visitors were already counted.
    rows = [CONTROL.totals("a"), TREATMENT.totals("b")]
    rows[1].cohort_visits_sum_squares = rows[1].cohort_visits
    document = result_document(definition(), {"signup": QueryTotals(rows)}, VISITS)
    assert document.goals["signup"].visit_analysis == "unclustered"


def test_the_visitor_unit_is_not_a_visit_analysis() -> None:
    document = result_document(definition(), totals(), ResultQuery())
    assert all(block.visit_analysis is None for block in document.goals.values())
    published = document.model_dump(mode="json")["goals"]["signup"]
    assert published["visit_analysis"] is None and published["unit"] == "visitors"


def test_clustered_power_counts_visitors() -> None:
    exp = definition(minimum_detectable_effect=0.1)
    document = result_document(exp, totals(), VISITS, days_with_data=4.0)
    request = ratio_request("signup").model_copy(update={"weights": [0.5, 0.5]})
    expected = treatment_power(request, effect=0.1)["b"]
    assert expected is not None
    shown = document.goals["signup"].variants[1].statistics
    assert shown is not None and shown.power is not None
    units = math.ceil(expected.fixed_horizon.units_needed)
    assert shown.power.fixed_horizon.units_needed == units
    assert shown.power.fixed_horizon.mde == expected.fixed_horizon.mde
    # 1240 visitors over 4 days: 310 a day.
    assert shown.power.fixed_horizon.days_needed == pytest.approx(units / 310)


AA_TREATMENTS = 39
AA_REPLICATIONS = 40
AA_VISITORS = 1000
AA_CONTROL_VISITORS = 20_000
"""A/A replications, each one document: a large control keeps the 39 comparisons that
share it nearly independent (their z-scores correlate at about 1000 / 21000), so
the 1560 comparisons per analysis estimate a false-positive rate to ±0.6 %."""


def aa_sums(rng: np.random.Generator, visitors: int) -> list[np.ndarray]:
    """Per replication: ΣV, ΣC, ΣV², ΣC², ΣV·C and converters of an arm whose visitors
    each convert on every visit with their own propensity p ~ Beta(1, 7)."""
    shape = (AA_REPLICATIONS, visitors)
    p = rng.beta(1.0, 7.0, size=shape)
    v = 1 + rng.poisson(2.0, size=shape)
    c = rng.binomial(v, p)
    return [x.sum(axis=-1) for x in (v, c, v * v, c * c, v * c, c > 0)]


def aa_row(variant: str, visitors: int, sums: list[np.ndarray], i: int, clustered: bool) -> Any:
    v, c, vv, cc, vc, converters = (int(x[i]) for x in sums)
    row = VariantTotals(
        variant, visitors=visitors, visits=v, conversions=converters, converted_visits=c
    )
    if clustered:
        row.cohort_visits, row.cohort_visits_sum_squares = v, vv
        row.converted_visits_sum_squares, row.visits_converted_visits_product = cc, vc
    return row


def test_an_aa_test_per_visit_holds_alpha_only_when_clustered() -> None:
    ids = [f"v{i}" for i in range(AA_TREATMENTS + 1)]
    exp = ExperimentDefinition.model_validate(
        {
            "id": "aa",
            "project_key": "shop",
            "name": "A/A",
            "status": "live",
            "variants": [
                {"id": ids[0], "name": "A", "is_control": True, "traffic_weight": 20},
                *({"id": i, "name": i, "traffic_weight": 1} for i in ids[1:]),
            ],
            "goals": [{"key": "signup", "name": "Signup", "primary": True}],
            "stats": {"engine": "frequentist", "sequential": False},
        }
    )
    rng = np.random.default_rng(1)
    control = aa_sums(rng, AA_CONTROL_VISITORS)
    treatments = [aa_sums(rng, AA_VISITORS) for _ in ids[1:]]
    rejected = {True: 0, False: 0}
    analyses: dict[bool, set[str | None]] = {True: set(), False: set()}
    for i in range(AA_REPLICATIONS):
        for clustered in (True, False):
            rows = [aa_row(ids[0], AA_CONTROL_VISITORS, control, i, clustered)] + [
                aa_row(variant, AA_VISITORS, sums, i, clustered)
                for variant, sums in zip(ids[1:], treatments, strict=True)
            ]
            block = result_document(exp, {"signup": QueryTotals(rows)}, VISITS).goals["signup"]
            analyses[clustered].add(block.visit_analysis)
            for row in block.variants[1:]:
                assert row.statistics is not None and row.statistics.p_value is not None
                rejected[clustered] += row.statistics.p_value < 0.05
    comparisons = AA_REPLICATIONS * AA_TREATMENTS
    margin = 0.05 + 3 * math.sqrt(0.05 * 0.95 / comparisons)
    assert analyses == {True: {"clustered"}, False: {"unclustered"}}
    # Measured: 0.044 clustered (68 of 1560), 0.081 for visits taken as independent (127).
    assert rejected[True] / comparisons <= margin
    assert rejected[False] / comparisons >= 0.07
