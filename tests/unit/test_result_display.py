"""What the results page and the results command show beside the lifts (issue 15):
power (item 13), revenue per order (item 11), the goal's cap (item 10) and how
per-visit numbers were analysed (item 6)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, date, datetime

from tests.unit.result_rows import buyer_totals
from worker.api.mida.params import ResultParams
from worker.api.mida.shapes import result_response
from worker.api.ui.render import ExperimentPage, experiment_page, lift_lines
from worker.cli.results_command import GoalResult, _verdict_text, goal_result, notes, power_lines
from worker.events.experiment import ExperimentDefinition
from worker.results.contract import HorizonPower, ResultDocument
from worker.results.experiment_result import result_document
from worker.results.query import ResultQuery
from worker.results.query_totals import QueryTotals
from worker.results.verdict import UNCLUSTERED_NOTE, horizon_text

NOW = datetime(2024, 1, 30, 12, tzinfo=UTC)
BUYERS = {
    "0": [(1, 40.0), (2, 90.0), (1, 35.0), (3, 150.0), (1, 55.0), (1, 42.0), (2, 70.0)] * 20,
    "1": [(1, 60.0), (1, 75.0), (2, 160.0), (1, 58.0), (4, 230.0), (1, 66.0), (2, 120.0)] * 20,
}
VISITORS = 2000
DAYS = 8.0


def definition() -> ExperimentDefinition:
    return ExperimentDefinition.model_validate(
        {
            "id": "cart",
            "project_key": "shop",
            "name": "Cart",
            "status": "live",
            "started_at": "2024-01-15T10:30:00+00:00",
            "variants": [
                {"id": "0", "name": "Control", "is_control": True},
                {"id": "1", "name": "Red"},
            ],
            "goals": [
                {"key": "buy", "name": "Buy", "type": "revenue", "primary": True, "cap": 250},
                {"key": "signup", "name": "Signup"},
            ],
            "stats": {"engine": "frequentist", "sequential": False},
        }
    )


def document(query: ResultQuery | None = None) -> ResultDocument:
    rows = [buyer_totals(v, VISITORS, BUYERS[v]) for v in ("0", "1")]
    totals = {goal: QueryTotals(rows) for goal in ("buy", "signup")}
    return result_document(definition(), totals, query, days_with_data=DAYS)


def page(doc: ResultDocument, goal: str = "buy", days: Sequence[date] = ()) -> str:
    """The experiment page of ``doc``, with ``doc`` again as every day's daily and
    cumulative document."""
    experiment = definition()
    return experiment_page(
        ExperimentPage(
            definition=experiment,
            result=result_response(experiment, doc, goal, None, NOW),
            document=doc,
            params=ResultParams(goal_key=goal),
            action="/ui/experiments/cart",
            key=None,
            days=list(days),
            daily=[doc] * len(days),
            cumulative=[doc] * len(days),
        )
    )


def test_horizon_text_says_the_lift_detected_now_and_what_is_still_needed() -> None:
    assert horizon_text(
        HorizonPower(mde=0.1234, units_needed=4560, days_needed=3.25), "visitors"
    ) == ("+12.3 % detectable now; 4,560 more visitors (3.2 days)")
    assert horizon_text(HorizonPower(mde=0.02, units_needed=0, days_needed=0.0), "visitors") == (
        "+2.0 % detectable now; reached"
    )
    assert horizon_text(HorizonPower(mde=None, units_needed=None, days_needed=None), "visits") == (
        "not enough data yet; no sample reaches it"
    )
    assert horizon_text(HorizonPower(mde=0.5, units_needed=10, days_needed=None), "visits") == (
        "+50.0 % detectable now; 10 more visits"
    )


def test_the_page_shows_power_per_treatment() -> None:
    doc = document()
    power = doc.goals["buy"].variants[1].statistics.power  # type: ignore[union-attr]
    assert power is not None
    html = page(doc)
    section = html.split('<table class="power">', 1)[1].split("</table>", 1)[0]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", section)
    assert cells == [
        "Red",
        horizon_text(power.fixed_horizon, "visitors"),
        horizon_text(power.sequential, "visitors"),
    ]
    # The units still needed are visitors at 4000 over 8 days: 500 a day.
    units = power.fixed_horizon.units_needed
    assert units is not None and power.fixed_horizon.days_needed == units / 500
    assert "+5 % at 80 % power" in html


def test_the_page_shows_the_cap_and_revenue_per_order() -> None:
    html = page(document())
    assert "Revenue capped at 250 per visitor" in html
    assert "Revenue per order improvement" in html and "Revenue per order verdict" in html
    treatment = re.search(r'<tr data-variant="1">(.*?)</tr>', html)
    assert treatment is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", treatment.group(1))
    # 769 over 12 orders against 482 over 11, the same per buyer pattern repeated.
    assert cells[11] == f"{100.0 * ((769 / 12) / (482 / 11) - 1.0):+.2f} %"
    assert "capped" not in page(document(), "signup")


def result(doc: ResultDocument, goal: str = "buy") -> GoalResult:
    return goal_result(definition(), doc, goal)


def test_the_command_states_the_cap_and_the_visit_analysis() -> None:
    assert notes(result(document())) == ["revenue capped at 250 per visitor"]
    assert notes(result(document(), "signup")) == []
    visits = result(document(ResultQuery(count_unit="visits")))
    assert notes(visits) == [
        "revenue capped at 250 per visitor",
        "per-visit numbers analysed with the visitor as unit (visits of one visitor are "
        "not independent)",
    ]
    rows = [buyer_totals(v, VISITORS, BUYERS[v]) for v in ("0", "1")]
    for row in rows:
        row.cohort_visits = 0
    old = result_document(
        definition(), {"signup": QueryTotals(rows)}, ResultQuery(count_unit="visits")
    )
    assert notes(result(old, "signup")) == [UNCLUSTERED_NOTE]


def test_the_command_prints_power_and_revenue_per_order() -> None:
    shown = result(document())
    power = shown.variants[1].statistics.power  # type: ignore[union-attr]
    assert power is not None
    assert power_lines(shown) == [
        "power of 1 for +5 % at 80 %: fixed horizon "
        + horizon_text(power.fixed_horizon, "visitors")
        + "; sequential "
        + horizon_text(power.sequential, "visitors")
    ]
    per_order = shown.variants[1].revenue_per_order_statistics
    assert per_order is not None and per_order.improvement is not None
    line = _verdict_text(shown.variants[1], shown)
    assert f"; revenue per order {per_order.improvement:+.1f} % [" in line
    assert _verdict_text(shown.variants[0], shown) == "Baseline"


def test_clustered_power_counts_visitors_even_with_the_visit_unit() -> None:
    shown = result(document(ResultQuery(count_unit="visits")))
    line = power_lines(shown)[0]
    assert " more visitors" in line and " more visits" not in line


def test_the_lift_chart_draws_the_goal_metric_the_table_pairs_with_its_interval() -> None:
    """A revenue goal's lift chart is revenue per visitor with its own interval (the
    metric decisions read), as the table's and the API's pair; a conversion goal's
    is the conversion rate."""
    doc = document()
    experiment = definition()
    for goal, improvement, statistics, title in (
        (
            "buy",
            "revenue_per_visitor_improvement",
            "revenue_per_visitor_statistics",
            "revenue per visitor",
        ),
        ("signup", "improvement", "statistics", "conversion rate"),
    ):
        treatment = result_response(experiment, doc, goal, None, NOW).variants[1]
        stats = getattr(treatment, statistics)
        assert stats is not None and stats.confidence_interval is not None
        control, line = lift_lines(experiment, [doc, doc], goal)
        assert control.values == [None, None]
        assert line.values == [getattr(treatment, improvement)] * 2
        assert line.band == [tuple(stats.confidence_interval)] * 2
        shown = page(doc, goal, days=[date(2024, 1, 15), date(2024, 1, 16)])
        chart = shown.split('id="lift-chart"', 1)[1].split("</svg>", 1)[0]
        assert f"Lift of the {title} against the control" in chart
        assert f"Relative lift of the {title}, % of the control" in chart
