"""The results pages as HTML text (pure: results in, markup out).

Numbers come from the same Mida shapes the JSON API answers with, so the page and the
API always agree. Every user-controlled text (names, ids, form values) is escaped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date
from html import escape

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

AUTH_NOTE = (
    "Authenticate with <code>Authorization: Bearer &lt;key&gt;</code>, "
    "<code>x-api-key: &lt;key&gt;</code>, or <code>?key=&lt;key&gt;</code> in the address "
    "so a browser can open the page (a key in an address stays in the browser history: "
    "to show results to someone else, send a share link instead)."
)
MIN_SAMPLE = 100
"""Visitors every arm needs before the lift chart's axis is fitted to its interval."""
POLL_SECONDS = 10
"""How often the page script asks whether a new snapshot landed."""
STATIC = "/ui/static"
"""Where the stylesheet and the page script are served (routes.static)."""


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


def document_page(title: str, body: str, script: bool = False, main: str = "") -> str:
    """A complete HTML document with the shared stylesheet, the authentication footer
    and, with ``script``, the page script (both static files: the Content-Security-Policy
    allows no inline style or script); ``main`` holds attributes of ``<main>`` (constant
    or escaped by the caller)."""
    tag = f'<script src="{STATIC}/page.js" defer></script>' if script else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{escape(title)}</title><link rel="stylesheet" href="{STATIC}/page.css">'
        f'{tag}</head><body><a class="skip" href="#main">Skip to the results</a>'
        f'<main id="main" {main}>{body}<footer>{AUTH_NOTE}</footer></main></body></html>'
    )


def error_page(status_code: int, message: str) -> str:
    """The page of a failed request: the status and the API's one-sentence message."""
    return document_page(
        f"Error {status_code}",
        f'<h1>Error {status_code}</h1><p class="error" id="error">{escape(message)}</p>',
    )


def list_page(project_key: str, experiments: Sequence[tuple[ExperimentDefinition, str]]) -> str:
    """The project's experiments, each (definition, address of its page) as a link."""
    rows = "".join(
        f'<tr><td><a href="{escape(href)}">{escape(d.name)}</a></td>'
        f"<td>{escape(d.id)}</td><td>{escape(d.status.value)}</td>"
        f"<td>{len(d.variants)}</td><td>{escape(d.stats.engine.value)}</td></tr>"
        for d, href in experiments
    )
    body = (
        f"<h1>Experiments of {escape(project_key)}</h1>"
        f'<p class="meta">{len(experiments)} experiments</p>'
        '<div class="scroll"><table><thead><tr><th>Name</th><th>Id</th><th>Status</th>'
        "<th>Variants</th><th>Engine</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )
    return document_page(f"Experiments of {project_key}", body)


def experiment_page(page: ExperimentPage) -> str:
    """The results page of one experiment and goal."""
    result, definition = page.result, page.definition
    threshold = result.confidence_threshold_percent
    srm = result.srm_p_value
    srm_text = "" if srm is None else f" · sample ratio check p = {p_value_text(srm)}"
    goal_type = GoalType(result.goal.goal_type)
    block = page.document.goals[result.goal.goal_key]
    top = [
        f"<h1>{escape(result.test_name)}</h1>",
        f'<p class="meta">{escape(result.test_id)} · {escape(result.status)} · '
        f"{escape(result.stats_engine)} engine at {threshold:g} % · goal "
        f"<strong>{escape(result.goal.goal_name)}</strong> · "
        f'<span id="total-visitors">{result.total_visitors:,}</span> visitors{srm_text}</p>',
        settings_note(page.document.settings),
        decision_banner(page),
        decision_timeline(page.definition, page.history),
        goal_overview(page),
    ]
    results = [
        *goal_notes(block),
        "<h2>Variants</h2>",
        variant_table(result.variants, threshold, goal_type),
        *power_section(block),
    ]
    for segment in result.breakdowns or []:
        results += [
            f"<h2>{escape(result.breakdown_by or '')} = {escape(segment.criteria)}</h2>",
            variant_table(segment.variants, threshold, goal_type),
        ]
    results += charts(page)
    body = (
        f'<div id="live-top" data-live>{"".join(top)}</div>'
        + filter_form(definition, page.params, result.goal.goal_key, page.action, page.key)
        + '<p id="live-status" class="status" role="status" aria-live="polite"></p>'
        + share_section(page)
        + f'<div id="live-results" data-live>{"".join(results)}</div>'
    )
    live = (
        f'data-stamp="{escape(page.stamp)}" data-stamp-url="{escape(page.stamp_url)}" '
        f'data-poll-seconds="{POLL_SECONDS}"'
    )
    return document_page(f"{result.test_name} — results", body, script=True, main=live)


def share_section(page: ExperimentPage) -> str:
    """Create or revoke the experiment's share link (with a key that may write); shown
    by the page script, and only on a page opened with a key."""
    if page.share_api is None:
        return ""
    return (
        f'<section id="share" hidden data-api="{escape(page.share_api)}"><h2>Share</h2>'
        '<p class="note">A share link shows these results to anyone who has it, without '
        "a key. Creating or revoking it needs a key that may write.</p>"
        '<div class="share-row"><label>Key that may write<input type="password" '
        f'id="share-key" autocomplete="off" value="{escape(page.key or "")}"></label>'
        '<button type="button" id="share-create">Create share link</button>'
        '<button type="button" class="secondary" id="share-revoke">Revoke</button></div>'
        '<p id="share-output" role="status" aria-live="polite"></p></section>'
    )


def decision_banner(page: ExperimentPage) -> str:
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
    paragraphs = "".join(f"<p>{escape(line)}</p>" for line in lines)
    return (
        f'<section class="banner {tone}" id="decision" data-state="{tone}" role="status">'
        f"<h2>{escape(heading)}</h2>{paragraphs}</section>"
    )


def decision_timeline(definition: ExperimentDefinition, history: Sequence[AnyDecisionEvent]) -> str:
    """The experiment's decision events, newest first: when (UTC) and what happened."""
    names = {variant.id: variant.name for variant in definition.variants}
    items = "".join(_timeline_item(event, names) for event in history)
    listing = f"<ol>{items}</ol>" if items else '<p class="note">No decisions yet.</p>'
    return (
        '<section class="timeline" id="decision-history" aria-labelledby="history-title">'
        f'<h2 id="history-title">Decision history</h2>{listing}</section>'
    )


def _timeline_item(event: AnyDecisionEvent, names: dict[str, str]) -> str:
    at = event.computed_at.astimezone(UTC)
    return (
        f'<li data-kind="{escape(event.kind)}"><time datetime="{escape(at.isoformat())}">'
        f"{at:%Y-%m-%d %H:%M:%S} UTC</time> {escape(decision_text(event, names))}</li>"
    )


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


def goal_overview(page: ExperimentPage) -> str:
    """Every goal's lift per treatment with its interval on one axis, coloured by
    verdict at the threshold (the goal's own metric: the conversion rate, or a revenue
    or count goal's value per visitor), the primary goal marked, CUPED beside raw."""
    threshold = page.result.confidence_threshold_percent
    rows: list[IntervalRow] = []
    for goal in page.definition.goals:
        block = page.document.goals[goal.key]
        lift = (VALUE_LIFTS.get(block.type) or [CONVERSION_RATE])[0]
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
    return (
        "<h2>All goals</h2>"
        + interval_chart(f"Lift of every goal at {threshold:g} %", rows, "goal-overview")
        + '<p class="note">Green: better than the control at the threshold; red: worse; '
        "grey: not conclusive. The bar is the interval of the lift. CUPED rows, when the "
        "experiment uses CUPED, are the same lift adjusted for each visitor's value before "
        "entry; the raw row above it is what decisions read.</p>"
    )


def charts(page: ExperimentPage) -> list[str]:
    """The cumulative charts: visitors, conversion rate and lift per variant by day
    (a revenue or count goal's other lifts are in the table), the lift's axis fitted from the first day every arm has ``MIN_SAMPLE`` visitors."""
    labels = [day.isoformat() for day in page.days]
    goal = page.result.goal.goal_key
    fitted = fit_start(visitor_counts(page.cumulative, goal), MIN_SAMPLE)
    return [
        "<h2>Over time</h2>",
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
            "Lift against the control with its interval (cumulative)",
            labels,
            lift_lines(page.definition, page.cumulative, goal),
            zero_line=True,
            fit_from=fitted,
            y_title="Relative lift of the conversion rate, % of the control's rate",
            x_title="Entry day",
            chart_id="lift-chart",
        ),
        '<p class="note">Every chart is cumulative: each day counts every visitor who '
        "entered up to that day; the lift and its band are the engine's result for those "
        "visitors, computed afresh for each day. The lift's axis is fitted to the days "
        f"from which every variant has at least {MIN_SAMPLE} visitors; earlier days, "
        "whose intervals are very wide, are drawn faded and cut at the axis. Hover over a "
        "point for its values.</p>",
    ]


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
    return f'<p class="meta settings">{escape(" · ".join(parts))}</p>'


def filter_form(
    definition: ExperimentDefinition,
    params: ResultParams,
    goal: str,
    action: str,
    key: str | None,
) -> str:
    """Every Mida result parameter as a GET field (``goal`` selected; a blank field is
    no filter), so the page's address always reproduces the view."""
    goals = "".join(
        _option(g.key, f"{g.name}{' (primary)' if g.primary else ''}", goal)
        for g in definition.goals
    )
    breakdowns = _option("", "none", params.breakdown_by) + "".join(
        _option(name, name, params.breakdown_by) for name in BREAKDOWNS
    )
    hidden = "" if key is None else f'<input type="hidden" name="key" value="{escape(key)}">'
    return (
        f'<form method="get" action="{escape(action)}" class="query" id="query">{hidden}'
        f'<label>Goal (goal_key)<select name="goal_key">{goals}</select></label>'
        f"{_input('start_date', 'From (start_date)', params.start_date, 'date')}"
        f"{_input('end_date', 'To (end_date)', params.end_date, 'date')}"
        f"{_input('tz', 'Hours from UTC (tz)', params.tz, 'number', 'min=-12 max=14 step=1')}"
        f"{_input('filter_by', 'Presets (filter_by)', params.filter_by, 'text')}"
        f'<label>Breakdown (breakdown_by)<select name="breakdown_by">{breakdowns}</select>'
        "</label>"
        f"{_input('min_count', 'Goal events per visitor (min_count)', params.min_count, 'number', 'min=1')}"
        f"{_input('timeframe_days', 'Days after entry (timeframe_days)', params.timeframe_days, 'number', 'min=1 max=3650')}"
        f"{_textarea('custom_filter', 'Custom filter (custom_filter, JSON)', one_custom_filter(params.custom_filter), CUSTOM_FILTER_HINT, CUSTOM_FILTER_BUILDER)}"
        f"{_textarea('event_attribute', 'Goal event attributes (event_attribute, JSON)', params.event_attribute, EVENT_ATTRIBUTE_HINT, EVENT_ATTRIBUTE_BUILDER)}"
        '<div class="wide"><button type="submit">Apply</button></div></form>'
        '<p class="note">filter_by takes presets, comma-separated: mobile, desktop, new, '
        "returning, paid, country-US, europe…; dates select visitors by their entry day in "
        "the tz offset.</p>"
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


def goal_notes(block: GoalBlock) -> list[str]:
    """What the reader must know before reading the goal's numbers: its cap, and
    per-visit numbers analysed as independent visits."""
    notes = []
    if block.cap is not None:
        value = "Revenue" if block.type is GoalType.REVENUE else "Goal events"
        notes.append(f'<p class="note" id="cap">{value} capped at {block.cap:g} per visitor.</p>')
    if block.visit_analysis == "unclustered":
        notes.append(f'<p class="note" id="unclustered">{escape(UNCLUSTERED_NOTE)}</p>')
    return notes


def power_section(block: GoalBlock) -> list[str]:
    """Per treatment, the lift each test detects now and what it still needs for the
    planned lift (nothing where power is undefined)."""
    rows = [
        (row.name, row.statistics.power)
        for row in block.variants
        if row.statistics is not None and row.statistics.power is not None
    ]
    if not rows:
        return []
    unit = power_unit(block.unit, block.visit_analysis)
    cells = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape(horizon_text(power.fixed_horizon, unit))}</td>"
        f"<td>{escape(horizon_text(power.sequential, unit))}</td></tr>"
        for name, power in rows
    )
    return [
        "<h2>Power</h2>",
        f'<p class="note">For a lift of {escape(power_target(rows[0][1]))} power: the lift '
        f"each test detects now, and the {unit} (all variants) and days it still needs at "
        "the pace so far. The sequential test may be read at any time; the fixed-horizon "
        "test only once, at its planned sample.</p>",
        '<div class="scroll"><table class="power"><thead><tr><th>Variant</th>'
        "<th>Fixed horizon</th><th>Sequential</th></tr></thead>"
        f"<tbody>{cells}</tbody></table></div>",
    ]


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


def variant_table(variants: Sequence[ResultVariant], threshold: float, goal: GoalType) -> str:
    """Per-variant numbers and, per metric, its lift with its own interval and verdict:
    the conversion rate, then a revenue or count goal's value per visitor (and a
    revenue goal's revenue per order)."""
    lifts = [CONVERSION_RATE, *VALUE_LIFTS.get(goal, [])]
    if any(v.cuped_statistics is not None for v in variants):
        lifts.append(CUPED_LIFT)
    revenue = goal is GoalType.REVENUE
    head = "".join(
        f"<th>{escape(name)}</th>"
        for name in (
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
        )
    )
    rows = []
    for v in variants:
        cells = [
            f"<td>{escape(v.name)}{' (control)' if v.is_control else ''}</td>",
            f'<td class="visitors">{v.visitors:,}</td>',
            f'<td class="conversions">{v.conversions:,}</td>',
            f'<td class="rate">{v.conversion_rate:.2f} %</td>',
            *((f'<td class="revenue">{v.revenue:,.2f}</td>',) if revenue else ()),
            *(cell for lift in lifts for cell in _lift_cells(v, lift, threshold)),
        ]
        rows.append(f'<tr data-variant="{escape(v.variant_id)}">{"".join(cells)}</tr>')
    return (
        f'<div class="scroll"><table class="variants"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _lift_cells(variant: ResultVariant, lift: Lift, threshold: float) -> list[str]:
    """One metric's lift, its interval (with the clipping note) and its verdict."""
    improvement, stats = lift.improvement(variant), lift.statistics(variant)
    interval = _interval(stats)
    note = None if stats is None else stats.interval_note
    said = _verdict(variant.is_control, improvement, stats, threshold)
    band = "—" if interval is None else _band_text(interval)
    return [
        f"<td>{'—' if improvement is None else f'{improvement:+.2f} %'}</td>",
        f"<td>{band}"
        + ("" if note is None else f' <span class="note">({escape(note)})</span>')
        + "</td>",
        f'<td class="{said.tone}">{escape(said.text)}</td>',
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
    """Per treatment: its lift over the control (percent) and the engine's interval."""
    goal_type = goal_of(definition, goal).type
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
                [row.improvement for row in rows],
                [_interval(row.statistics) for row in rows],
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


def _option(value: str, label: str, selected: str | None) -> str:
    chosen = " selected" if value == (selected or "") else ""
    return f'<option value="{escape(value)}"{chosen}>{escape(label)}</option>'


def _input(name: str, label: str, value: str | int | None, kind: str, extra: str = "") -> str:
    """A labelled input; ``extra`` holds constant attributes (never user input)."""
    return (
        f'<label>{escape(label)}<input type="{kind}" id="field-{name}" name="{name}" '
        f'value="{escape(str(value or ""))}" {extra}></label>'
    )


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


def _textarea(name: str, label: str, value: str | None, hint: str, builder: str) -> str:
    """A labelled multi-line field across the form, described by ``hint``, with the
    page script's condition builder configured by ``builder`` (JSON)."""
    return (
        f'<label class="wide">{escape(label)}<textarea name="{name}" id="field-{name}" '
        f'rows="2" spellcheck="false" aria-describedby="hint-{name}" '
        f'data-builder="{escape(builder)}">{escape(value or "")}'
        f'</textarea><span class="note" id="hint-{name}">{escape(hint)}</span></label>'
    )
