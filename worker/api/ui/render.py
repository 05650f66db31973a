"""The results pages as HTML text (pure: results in, markup out).

Numbers come from the same Mida shapes the JSON API answers with, so the page and the
API always agree. Each page is a view (plain data: text already formatted) rendered by
a Jinja2 template of ``templates/`` with autoescaping on, so every user-controlled text
(names, ids, form values) is escaped; the charts' SVG, rendered (and escaped) by their
own templates (``charts``), is passed through as markup.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date
from typing import Any

from markupsafe import Markup

from worker.api.mida.models import ResultResponse, ResultVariant, Statistics
from worker.api.mida.params import (
    BREAKDOWNS,
    CRITERIA,
    EVENT_OPERATORS,
    ORDER_OPERATORS,
    SEGMENT_OPERATORS,
    ResultParams,
)
from worker.api.mida.shapes import goal_of, variant_rows
from worker.api.ui.charts import (
    Band,
    IntervalRow,
    Line,
    fit_start,
    interval_chart,
    line_chart,
)
from worker.api.ui.templating import render_template
from worker.events.experiment import ExperimentDefinition, GoalType
from worker.results.contract import (
    AnalysisSettings,
    AnyDecisionEvent,
    GoalBlock,
    ResultDocument,
    SrmCleared,
    SrmDetected,
    WinnerDeclared,
    WinnerWithdrawn,
)
from worker.results.decisions import DecisionState
from worker.results.verdict import (
    UNCLUSTERED_NOTE,
    Verdict,
    horizon_text,
    p_value_text,
    power_target,
    power_unit,
    verdict,
)

MIN_SAMPLE = 100
"""Visitors every arm needs before the lift chart's axis is fitted to its interval."""
POLL_SECONDS = 10
"""How often the page script asks whether a new snapshot landed."""
STATIC = "/ui/static"
"""Where the stylesheet and the page script are served (routes.static)."""
PAGE_DEFAULTS = {"static": STATIC, "script": False, "main_attributes": {}}
"""What base.html needs of a page that does not say: no page script, a bare <main>."""


def render(template: str, **view: Any) -> str:
    """``template`` rendered with ``view`` (plain data; strings are escaped)."""
    return render_template(template, {**PAGE_DEFAULTS, **view})


@dataclass(frozen=True)
class ExperimentPage:
    """Everything the experiment page shows.

    ``document`` is the result document ``result`` was shaped from (its power section,
    cap and notes have no Mida field). ``action`` is the form's address and ``key`` the
    API key to carry in it (when the page was opened with ``?key=``); ``days`` are the
    chart's days, ``daily`` the documents of each day's cohort and ``cumulative`` those
    of all cohorts up to it; ``decision`` is what the worker has decided so far and
    ``history`` its recorded decision events, newest first.
    ``stamp`` tells the stored snapshot the page shows apart from a newer one, which
    ``stamp_url`` answers; ``share_api`` is the address of the experiment's share link
    (None on a page opened with a share link).
    """

    definition: ExperimentDefinition
    result: ResultResponse
    document: ResultDocument
    params: ResultParams
    action: str
    key: str | None
    days: Sequence[date]
    daily: Sequence[ResultDocument]
    cumulative: Sequence[ResultDocument]
    decision: DecisionState = field(default_factory=DecisionState)
    history: Sequence[AnyDecisionEvent] = ()
    stamp: str = ""
    stamp_url: str = ""
    share_api: str | None = None


@dataclass(frozen=True)
class ListRow:
    """One experiment of the list page and the address of its page."""

    href: str
    name: str
    id: str
    status: str
    variants: int
    engine: str


@dataclass(frozen=True)
class Banner:
    """The decision banner: its tone (a CSS class and ``data-state``), heading and lines."""

    tone: str
    heading: str
    lines: list[str]


@dataclass(frozen=True)
class TimelineItem:
    """One decision event: its kind, its UTC time (ISO and as shown) and what it says."""

    kind: str
    datetime: str
    shown: str
    text: str


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, CSS class and a note in brackets after the text."""

    text: str
    css: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class TableRow:
    """One variant's row."""

    variant_id: str
    cells: list[Cell]


@dataclass(frozen=True)
class Table:
    """A variants table under its heading."""

    heading: str
    head: list[str]
    rows: list[TableRow]


@dataclass(frozen=True)
class PowerRow:
    """What one treatment's tests detect now and still need."""

    name: str
    fixed_horizon: str
    sequential: str


@dataclass(frozen=True)
class Power:
    """The power section: the planned lift and power, the unit counted, a row per
    treatment."""

    target: str
    unit: str
    rows: list[PowerRow]


@dataclass(frozen=True)
class Option:
    """One option of a select field."""

    value: str
    label: str
    selected: bool


@dataclass(frozen=True)
class Form:
    """The query form: its address, the key to carry, the options of its selects and,
    per field name, its value, hint and condition-builder configuration (JSON)."""

    action: str
    key: str | None
    goals: list[Option]
    breakdowns: list[Option]
    values: dict[str, str]
    hints: dict[str, str]
    builders: dict[str, str]


@dataclass(frozen=True)
class Share:
    """The share section: the share-link API's address and the key the page has."""

    api: str
    key: str


@dataclass(frozen=True)
class Note:
    """A note on the goal's numbers, with its element id."""

    id: str
    text: str


@dataclass(frozen=True)
class ExperimentView:
    """The experiment page as the template shows it (text formatted, charts as SVG)."""

    test_name: str
    test_id: str
    status: str
    engine: str
    threshold: str
    goal_name: str
    total_visitors: str
    srm_p_value: str | None
    settings: list[str]
    banner: Banner
    history: list[TimelineItem]
    overview: Markup
    form: Form
    share: Share | None
    notes: list[Note]
    tables: list[Table]
    power: Power | None
    charts: list[Markup]
    min_sample: int
    live: dict[str, str]


def error_page(status_code: int, message: str) -> str:
    """The page of a failed request: the status and the API's one-sentence message."""
    return render("error.html", status_code=status_code, message=message)


def list_page(project_key: str, experiments: Sequence[tuple[ExperimentDefinition, str]]) -> str:
    """The project's experiments, each (definition, address of its page) as a link."""
    rows = [
        ListRow(href, d.name, d.id, d.status.value, len(d.variants), d.stats.engine.value)
        for d, href in experiments
    ]
    return render("list.html", project_key=project_key, rows=rows)


def experiment_page(page: ExperimentPage) -> str:
    """The results page of one experiment and goal."""
    view = experiment_view(page)
    return render("experiment.html", page=view, script=True, main_attributes=view.live)


def experiment_view(page: ExperimentPage) -> ExperimentView:
    """What the experiment page shows, from the results it is given."""
    result = page.result
    threshold = result.confidence_threshold_percent
    goal_type = GoalType(result.goal.goal_type)
    block = page.document.goals[result.goal.goal_key]
    tables = [Table("Variants", *_variant_rows(result.variants, threshold, goal_type))]
    tables += [
        Table(
            f"{result.breakdown_by or ''} = {segment.criteria}",
            *_variant_rows(segment.variants, threshold, goal_type),
        )
        for segment in result.breakdowns or []
    ]
    return ExperimentView(
        test_name=result.test_name,
        test_id=result.test_id,
        status=result.status,
        engine=result.stats_engine,
        threshold=f"{threshold:g}",
        goal_name=result.goal.goal_name,
        total_visitors=f"{result.total_visitors:,}",
        srm_p_value=None if result.srm_p_value is None else p_value_text(result.srm_p_value),
        settings=settings_parts(page.document.settings),
        banner=decision_banner(page),
        history=timeline_items(page.definition, page.history),
        overview=goal_overview(page),
        form=filter_form(page.definition, page.params, result.goal.goal_key, page.action, page.key),
        share=None if page.share_api is None else Share(page.share_api, page.key or ""),
        notes=goal_notes(block),
        tables=tables,
        power=power_section(block),
        charts=charts(page),
        min_sample=MIN_SAMPLE,
        live={
            "data-stamp": page.stamp,
            "data-stamp-url": page.stamp_url,
            "data-poll-seconds": str(POLL_SECONDS),
        },
    )


def decision_banner(page: ExperimentPage) -> Banner:
    """What the worker has decided on the primary goal (of the default query, whatever
    the page's filters): an SRM alarm, a winner, a withdrawal, the bandit weights, and
    how many decision events of each kind there were."""
    state, definition = page.decision, page.definition
    names = {variant.id: variant.name for variant in definition.variants}
    primary = next(goal for goal in definition.goals if goal.primary)
    lines: list[str] = []
    if state.srm_alarm:
        tone, heading = "alarm", "Sample ratio mismatch: no winner while the alarm stands"
        srm = page.document.srm_sequential_p_value
        lines.append(
            "The split of visitors departs from the configured weights "
            f"(sequential test p = {'—' if srm is None else p_value_text(srm)} on these "
            "numbers). Some visitors were lost or moved by variant (a redirect, a crash, a "
            "bot filter), so every comparison may be biased. Find the cause; an operator "
            "then resets the alarm with `python -m worker experiments reset-srm`."
        )
    elif state.winner is not None:
        tone = "winner"
        heading = f"Winner declared: {names.get(state.winner, state.winner)}"
        rule = "sequential" if definition.stats.sequential else "fixed-horizon"
        lines.append(
            f"By the {rule} rule of the {definition.stats.engine.value} engine at "
            f"{definition.stats.confidence_threshold_percent:g} % on the primary goal "
            f"{primary.name}: a better lift, significant after Holm's correction across "
            "the variants, with no SRM alarm."
        )
    elif state.sequence.get("winner_withdrawn"):
        tone, heading = "withdrawn", "Winner withdrawn"
        lines.append(
            "A declared winner stopped passing the rule; no variant passes it now on the "
            f"primary goal {primary.name}."
        )
    else:
        tone, heading = "running", "No decision yet"
        lines.append(f"No variant passes the winner rule on the primary goal {primary.name} yet.")
    if state.weights:
        shares = ", ".join(
            f"{names.get(variant, variant)} {100 * weight:.1f} %"
            for variant, weight in state.weights.items()
        )
        lines.append(f"Bandit traffic weights: {shares}.")
    if state.sequence:
        events = ", ".join(
            f"{kind.replace('_', ' ')} × {count}" for kind, count in sorted(state.sequence.items())
        )
        lines.append(f"Decision events so far: {events}.")
    return Banner(tone, heading, lines)


def decision_timeline(definition: ExperimentDefinition, history: Sequence[AnyDecisionEvent]) -> str:
    """The experiment's decision events, newest first: when (UTC) and what happened."""
    return render("timeline.html", items=timeline_items(definition, history))


def timeline_items(
    definition: ExperimentDefinition, history: Sequence[AnyDecisionEvent]
) -> list[TimelineItem]:
    """The timeline's items, one per decision event, in the order given."""
    names = {variant.id: variant.name for variant in definition.variants}
    items = []
    for event in history:
        at = event.computed_at.astimezone(UTC)
        items.append(
            TimelineItem(
                event.kind,
                at.isoformat(),
                f"{at:%Y-%m-%d %H:%M:%S} UTC",
                decision_text(event, names),
            )
        )
    return items


def decision_text(event: AnyDecisionEvent, names: dict[str, str]) -> str:
    """What one decision event says, in a line (unescaped)."""
    name = names.get(event.variant_id or "", event.variant_id or "")
    if isinstance(event, WinnerDeclared):
        rule = event.rule
        return (
            f"Winner declared: {name}, by the {rule.name.replace('_', '-')} rule of the "
            f"{rule.engine.value} engine at {rule.threshold_percent:g} %"
        )
    if isinstance(event, WinnerWithdrawn):
        why = "by the SRM alarm" if event.reason == "srm_alarm" else "no longer passing the rule"
        return f"Winner withdrawn: {name}, {why}"
    if isinstance(event, SrmDetected):
        p = event.srm_sequential_p_value
        return (
            "Sample ratio mismatch alarm raised "
            f"(sequential test p = {'—' if p is None else p_value_text(p)})"
        )
    if isinstance(event, SrmCleared):
        return "Sample ratio mismatch alarm reset by an operator"
    shares = ", ".join(
        f"{names.get(variant, variant)} {100 * event.previous_weights.get(variant, 0.0):.1f} % "
        f"→ {100 * weight:.1f} %"
        for variant, weight in event.weights.items()
    )
    return f"Bandit weights moved: {shares}"


def goal_overview(page: ExperimentPage) -> Markup:
    """Every goal's lift per treatment with its interval on one axis, coloured by
    verdict at the threshold (the goal's own metric: the conversion rate, or a revenue
    or count goal's value per visitor), the primary goal marked, CUPED beside raw."""
    threshold = page.result.confidence_threshold_percent
    rows: list[IntervalRow] = []
    for goal in page.definition.goals:
        block = page.document.goals[goal.key]
        lift = own_lift(block.type)
        marker = " ★ primary" if goal.primary else ""
        rows.append(IntervalRow(f"{goal.name}{marker} ({lift.title.lower()})"))
        for variant in variant_rows(page.definition, block.variants, block.type)[1:]:
            for shown, label in ((lift, variant.name), (CUPED_LIFT, f"{variant.name} CUPED")):
                stats = shown.statistics(variant)
                if stats is None:
                    continue
                improvement = shown.improvement(variant)
                said = _verdict(False, improvement, stats, threshold)
                interval = _interval(stats)
                rows.append(
                    IntervalRow(
                        f"  {label}",
                        improvement,
                        interval,
                        said.tone,
                        f"{goal.name}, {label}: "
                        f"{'—' if improvement is None else f'{improvement:+.2f} %'}"
                        f"{'' if interval is None else ' (' + _band_text(interval) + ')'}"
                        f" · {said.text}",
                    )
                )
    # Rendered, and escaped, by the chart's own template.
    return Markup(interval_chart(f"Lift of every goal at {threshold:g} %", rows, "goal-overview"))


def charts(page: ExperimentPage) -> list[Markup]:
    """The cumulative charts: visitors, conversion rate and the lift of the goal's own
    metric per variant by day (a revenue or count goal's other lifts are in the
    table), the lift's axis fitted from the first day every arm has ``MIN_SAMPLE``
    visitors."""
    labels = [day.isoformat() for day in page.days]
    goal = page.result.goal.goal_key
    fitted = fit_start(visitor_counts(page.cumulative, goal), MIN_SAMPLE)
    metric = own_lift(GoalType(page.result.goal.goal_type)).title.lower()
    drawn = [
        line_chart(
            "Visitors per variant (cumulative)",
            labels,
            visitor_lines(page.cumulative, goal),
            unit="",
            y_title="Visitors who entered up to the day",
            x_title="Entry day",
            chart_id="visitors-chart",
        ),
        line_chart(
            "Conversion rate per variant (cumulative)",
            labels,
            rate_lines(page.daily, goal),
            y_title="Converted visitors, % of visitors",
            x_title="Entry day",
            chart_id="rate-chart",
        ),
        line_chart(
            f"Lift of the {metric} against the control with its interval (cumulative)",
            labels,
            lift_lines(page.definition, page.cumulative, goal),
            zero_line=True,
            fit_from=fitted,
            y_title=f"Relative lift of the {metric}, % of the control's {metric}",
            x_title="Entry day",
            chart_id="lift-chart",
        ),
    ]
    # Rendered, and escaped, by the charts' own template.
    return [Markup(chart) for chart in drawn]


def visitor_counts(cumulative: Sequence[ResultDocument], goal: str) -> list[list[int]]:
    """Per day, the cumulative visitors of each variant."""
    return [[row.visitors for row in document.goals[goal].variants] for document in cumulative]


def visitor_lines(cumulative: Sequence[ResultDocument], goal: str) -> list[Line]:
    """Cumulative visitors per variant and day."""
    if not cumulative:
        return []
    rows = cumulative[0].goals[goal].variants
    return [
        Line(row.name, [float(day.goals[goal].variants[index].visitors) for day in cumulative])
        for index, row in enumerate(rows)
    ]


def settings_note(settings: AnalysisSettings) -> str:
    """How the numbers were analysed, as the page's line of text."""
    return render("settings.html", parts=settings_parts(settings))


def settings_parts(settings: AnalysisSettings) -> list[str]:
    """How the numbers were analysed: the test, its direction, the prior and CUPED."""
    parts = [
        "sequential (always valid) test" if settings.sequential else "fixed-horizon test",
        settings.test_direction.value.replace("_", "-"),
    ]
    if settings.correction.value != "none":
        parts.append(f"{settings.correction.value} correction")
    if settings.prior is not None:
        parts.append(
            f"prior on the lift: mean {100 * settings.prior.mean:+g} %, "
            f"sd {100 * math.sqrt(settings.prior.variance):g} %"
        )
    if settings.cuped_days:
        parts.append(f"CUPED on the {settings.cuped_days} days before entry")
    return parts


def filter_form(
    definition: ExperimentDefinition,
    params: ResultParams,
    goal: str,
    action: str,
    key: str | None,
) -> Form:
    """Every Mida result parameter as a GET field (``goal`` selected; a blank field is
    no filter), so the page's address always reproduces the view."""
    goals = [
        Option(g.key, f"{g.name}{' (primary)' if g.primary else ''}", g.key == goal)
        for g in definition.goals
    ]
    chosen = params.breakdown_by or ""
    breakdowns = [Option("", "none", chosen == "")] + [
        Option(name, name, name == chosen) for name in BREAKDOWNS
    ]
    values = {
        "start_date": params.start_date,
        "end_date": params.end_date,
        "tz": params.tz,
        "filter_by": params.filter_by,
        "min_count": params.min_count,
        "timeframe_days": params.timeframe_days,
        "custom_filter": one_custom_filter(params.custom_filter),
        "event_attribute": params.event_attribute,
    }
    return Form(
        action=action,
        key=key,
        goals=goals,
        breakdowns=breakdowns,
        values={name: str(value or "") for name, value in values.items()},
        hints={"custom_filter": CUSTOM_FILTER_HINT, "event_attribute": EVENT_ATTRIBUTE_HINT},
        builders={
            "custom_filter": CUSTOM_FILTER_BUILDER,
            "event_attribute": EVENT_ATTRIBUTE_BUILDER,
        },
    )


CUSTOM_FILTER_HINT = (
    "An AND of OR groups: "
    '[[{"criteria": "device", "operator": "==", "value": "mobile"}]]. Criteria: '
    + ", ".join(sorted(CRITERIA))
    + ". Operators: "
    + ", ".join(SEGMENT_OPERATORS)
    + "."
)
CUSTOM_FILTER_BUILDER = json.dumps(
    {
        "outer": "and",
        "inner": "or",
        "fields": ["criteria", "operator", "value", "key"],
        "options": {
            "criteria": sorted([*CRITERIA, "utm"]),
            "operator": [*SEGMENT_OPERATORS, *ORDER_OPERATORS],
        },
    }
)
"""custom_filter's builder: an AND of OR groups; ``key`` names an attribute, a query
parameter or a utm field."""
EVENT_ATTRIBUTE_BUILDER = json.dumps(
    {
        "outer": "or",
        "inner": "and",
        "fields": ["key", "operand", "value"],
        "options": {"operand": list(EVENT_OPERATORS)},
    }
)
"""event_attribute's builder: an OR of AND groups on the goal event's attributes."""
EVENT_ATTRIBUTE_HINT = (
    "An OR of AND groups on the goal event's attributes: "
    '[[{"key": "currency", "operand": "==", "value": "USD"}]]. Operands: '
    + ", ".join(EVENT_OPERATORS)
    + "."
)


def goal_notes(block: GoalBlock) -> list[Note]:
    """What the reader must know before reading the goal's numbers: its cap, and
    per-visit numbers analysed as independent visits."""
    notes = []
    if block.cap is not None:
        value = "Revenue" if block.type is GoalType.REVENUE else "Goal events"
        notes.append(Note("cap", f"{value} capped at {block.cap:g} per visitor."))
    if block.visit_analysis == "unclustered":
        notes.append(Note("unclustered", UNCLUSTERED_NOTE))
    return notes


def power_section(block: GoalBlock) -> Power | None:
    """Per treatment, the lift each test detects now and what it still needs for the
    planned lift (None where power is undefined)."""
    rows = [
        (row.name, row.statistics.power)
        for row in block.variants
        if row.statistics is not None and row.statistics.power is not None
    ]
    if not rows:
        return None
    unit = power_unit(block.unit, block.visit_analysis)
    return Power(
        power_target(rows[0][1]),
        unit,
        [
            PowerRow(
                name, horizon_text(power.fixed_horizon, unit), horizon_text(power.sequential, unit)
            )
            for name, power in rows
        ],
    )


@dataclass(frozen=True)
class Lift:
    """A metric whose lift the table shows: its title, and where a Mida variant keeps
    the lift and the statistics of that same metric."""

    title: str
    improvement: Callable[[ResultVariant], float | None]
    statistics: Callable[[ResultVariant], Statistics | None]


CONVERSION_RATE = Lift("Conversion rate", lambda v: v.improvement, lambda v: v.statistics)
VALUE_LIFTS = {
    GoalType.REVENUE: [
        Lift(
            "Revenue per visitor",
            lambda v: v.revenue_per_visitor_improvement,
            lambda v: v.revenue_per_visitor_statistics,
        ),
        Lift("Revenue per order", lambda v: v.aov_improvement, lambda v: v.aov_statistics),
    ],
    GoalType.COUNT: [
        Lift(
            "Events per visitor",
            lambda v: v.events_per_visitor_improvement,
            lambda v: v.events_per_visitor_statistics,
        )
    ],
}
"""The further lifts of a revenue or count goal: first its value per visitor, the
metric decisions read, then a revenue goal's revenue per order; a conversion goal
shows the conversion rate only."""

CUPED_LIFT = Lift("CUPED-adjusted", lambda v: v.cuped_improvement, lambda v: v.cuped_statistics)
"""The goal's own metric adjusted by CUPED (pre-entry values): when a variant has it."""


def own_lift(goal: GoalType) -> Lift:
    """The metric a goal's decisions read: a revenue or count goal's value per visitor,
    a conversion goal's conversion rate."""
    return (VALUE_LIFTS.get(goal) or [CONVERSION_RATE])[0]


def variant_table(variants: Sequence[ResultVariant], threshold: float, goal: GoalType) -> str:
    """Per-variant numbers and, per metric, its lift with its own interval and verdict:
    the conversion rate, then a revenue or count goal's value per visitor (and a
    revenue goal's revenue per order)."""
    head, rows = _variant_rows(variants, threshold, goal)
    return render("variants.html", table=Table("", head, rows))


def _variant_rows(
    variants: Sequence[ResultVariant], threshold: float, goal: GoalType
) -> tuple[list[str], list[TableRow]]:
    """A variants table's column names and rows."""
    lifts = [CONVERSION_RATE, *VALUE_LIFTS.get(goal, [])]
    if any(v.cuped_statistics is not None for v in variants):
        lifts.append(CUPED_LIFT)
    revenue = goal is GoalType.REVENUE
    head = [
        "Variant",
        "Visitors",
        "Conversions",
        "Conversion rate",
        *(("Revenue",) if revenue else ()),
        *(
            f"{lift.title} {column}"
            for lift in lifts
            for column in ("improvement", "interval", "verdict")
        ),
    ]
    rows = [
        TableRow(
            v.variant_id,
            [
                Cell(f"{v.name}{' (control)' if v.is_control else ''}"),
                Cell(f"{v.visitors:,}", "visitors"),
                Cell(f"{v.conversions:,}", "conversions"),
                Cell(f"{v.conversion_rate:.2f} %", "rate"),
                *((Cell(f"{v.revenue:,.2f}", "revenue"),) if revenue else ()),
                *(cell for lift in lifts for cell in _lift_cells(v, lift, threshold)),
            ],
        )
        for v in variants
    ]
    return head, rows


def _lift_cells(variant: ResultVariant, lift: Lift, threshold: float) -> list[Cell]:
    """One metric's lift, its interval (with the clipping note) and its verdict."""
    improvement, stats = lift.improvement(variant), lift.statistics(variant)
    interval = _interval(stats)
    said = _verdict(variant.is_control, improvement, stats, threshold)
    return [
        Cell("—" if improvement is None else f"{improvement:+.2f} %"),
        Cell(
            "—" if interval is None else _band_text(interval),
            note=None if stats is None else stats.interval_note,
        ),
        Cell(said.text, said.tone),
    ]


def _verdict(
    reference: bool, improvement: float | None, stats: Statistics | None, threshold: float
) -> Verdict:
    """The verdict on one metric of a variant of Mida's shape (its statistics already in
    percent, its p-value already the adjusted one when a correction is configured)."""
    return verdict(
        reference=reference,
        chance_to_beat_percent=None if stats is None else stats.chance_to_beat_control,
        p_value=None if stats is None else stats.p_value,
        improvement=improvement,
        threshold_percent=threshold,
    )


def rate_lines(daily: Sequence[ResultDocument], goal: str) -> list[Line]:
    """Cumulative conversion rate (percent) per variant, accumulated over daily cohorts."""
    names: dict[str, str] = {}
    totals: dict[str, list[tuple[int, int]]] = {}
    for document in daily:
        for row in document.goals[goal].variants:
            variant = row.variant_id
            names[variant] = row.name
            visitors, conversions = (totals.get(variant) or [(0, 0)])[-1]
            totals.setdefault(variant, []).append(
                (visitors + row.visitors, conversions + row.conversions)
            )
    return [
        Line(names[variant], [100.0 * c / n if n else None for n, c in series])
        for variant, series in totals.items()
    ]


def lift_lines(
    definition: ExperimentDefinition, cumulative: Sequence[ResultDocument], goal: str
) -> list[Line]:
    """Per treatment: the lift of the goal's own metric over the control (percent) and
    the engine's interval of that same lift (``own_lift``: the pair the table and the
    API show, and decisions read)."""
    goal_type = goal_of(definition, goal).type
    lift = own_lift(goal_type)
    days = [
        variant_rows(definition, document.goals[goal].variants, goal_type)
        for document in cumulative
    ]
    if not days:
        return []
    # The control line is the zero rule; it keeps its place so colours match the rates.
    lines = [Line(days[0][0].name, [None] * len(days))]
    for index, treatment in enumerate(days[0][1:], start=1):
        rows = [day[index] for day in days]
        lines.append(
            Line(
                treatment.name,
                [lift.improvement(row) for row in rows],
                [_interval(lift.statistics(row)) for row in rows],
            )
        )
    return lines


def _interval(stats: Statistics | None) -> Band:
    """The engine's interval of the lift in percent, when both sides are bounded."""
    if stats is None:
        return None
    interval = stats.credible_interval or stats.confidence_interval
    if interval is None or interval[0] is None or interval[1] is None:
        return None
    return interval[0], interval[1]


def _band_text(interval: tuple[float, float]) -> str:
    return f"{interval[0]:+.1f} % to {interval[1]:+.1f} %"


def one_custom_filter(value: str | list[str] | None) -> str | None:
    """The form's one custom_filter field for the parameter given once or repeated: the
    repeated parts (an AND, each a group or a list of groups, already validated by the
    query) as one JSON list of their groups."""
    if value is None or isinstance(value, str):
        return value
    groups: list[object] = []
    for part in value:
        parsed = json.loads(part)
        groups.extend(parsed if isinstance(parsed, list) else [parsed])
    return json.dumps(groups)
