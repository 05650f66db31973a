"""A variant's result against the reference in plain words, for people: the results
page and the ``results`` command say it the same way (and so the notes and the power
numbers beside it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from worker.results.contract import HorizonPower, PowerEstimate, VariantStatistics, VisitAnalysis
from worker.results.query import CountUnit
from worker.stats.common import Interval

Tone = Literal["good", "bad", "neutral"]

CLIPPED_NOTE = (
    "The interval reaches below -100 %, which a metric that cannot be negative cannot "
    "fall by; it is shown from -100 %."
)
"""Said beside a relative interval shown clipped at -100 %."""

UNCLUSTERED_NOTE = (
    "Visits are analysed as independent: these counters predate the per-visitor visit "
    "sums, and a visitor's visits resemble each other, so significance is overstated."
)
"""Said beside per-visit results whose goal block's ``visit_analysis`` is ``unclustered``."""


@dataclass(frozen=True)
class Verdict:
    """A sentence on a variant against the reference, and its tone."""

    text: str
    tone: Tone


def verdict(
    *,
    reference: bool,
    chance_to_beat_percent: float | None,
    p_value: float | None,
    improvement: float | None,
    threshold_percent: float,
) -> Verdict:
    """The verdict on one variant: the Bayesian chance to beat the reference when the
    engine gave one, else the p-value (adjusted, when a correction is configured)
    against the confidence threshold; ``improvement`` only tells better from worse."""
    if reference:
        return Verdict("Baseline", "neutral")
    if chance_to_beat_percent is not None:
        chance = chance_to_beat_percent
        tone: Tone = (
            "good"
            if chance >= threshold_percent
            else "bad"
            if chance <= 100 - threshold_percent
            else "neutral"
        )
        return Verdict(f"{chance:.0f} % chance to beat control", tone)
    if p_value is not None:
        significant = p_value < (100 - threshold_percent) / 100
        worse = (improvement or 0.0) < 0
        tone = ("bad" if worse else "good") if significant else "neutral"
        label = "significant" if significant else "not significant"
        return Verdict(f"p = {p_value_text(p_value)} ({label} at {threshold_percent:g} %)", tone)
    return Verdict("Not enough data yet", "neutral")


def reported_p_value(statistics: VariantStatistics) -> float | None:
    """The p-value people are shown: adjusted for multiple comparisons when a
    correction is configured, else the raw one."""
    if statistics.p_value_adjusted is None:
        return statistics.p_value
    return statistics.p_value_adjusted


def p_value_text(value: float) -> str:
    """A p-value to three decimals, or ``< 0.001``."""
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def shown_interval(
    statistics: VariantStatistics, non_negative: bool
) -> tuple[Interval | None, str | None]:
    """The interval of a relative lift as people are shown it (a fraction), and its note.

    The corrected interval when there is one (for the Bayesian engine it is the
    credible interval itself); none where the engine fell back to the absolute
    difference (a non-positive base), which has no relative reading. ``non_negative``
    says the metric cannot be negative (see ``clipped_relative``).
    """
    interval = statistics.ci_adjusted or statistics.ci
    if interval is None or statistics.lift_type != "relative":
        return None, None
    return clipped_relative(interval, non_negative)


def clipped_relative(interval: Interval, non_negative: bool) -> tuple[Interval, str | None]:
    """A relative interval as people are shown it, and the note to show beside it.

    A non-negative metric (a conversion rate, events per visitor) cannot fall by more
    than 100 %, yet an interval tested on the ratio itself (documents stored before
    the log-ratio test, ``relative_method: ratio``) can reach below; it is shown from
    -100 % with ``CLIPPED_NOTE``. Revenue may be negative (refunds), so its interval
    is shown as computed.
    """
    low, high = interval
    if not non_negative or all(side is None or side >= -1.0 for side in interval):
        return interval, None
    return (
        None if low is None else max(low, -1.0),
        None if high is None else max(high, -1.0),
    ), CLIPPED_NOTE


def power_unit(unit: CountUnit, visit_analysis: VisitAnalysis | None) -> CountUnit:
    """The units a goal's power section counts: its unit, but visitors where per-visit
    metrics were analysed with the visitor as unit."""
    return "visitors" if visit_analysis == "clustered" else unit


def power_target(power: PowerEstimate) -> str:
    """The lift and power the numbers plan for, e.g. ``+5 % at 80 %``."""
    return f"{100.0 * power.effect:+g} % at {100.0 * power.power:g} %"


def horizon_text(horizon: HorizonPower, unit: CountUnit) -> str:
    """One test's power in words: the lift it detects now, and the ``unit`` (and days,
    when known) it still needs for the planned lift."""
    now = (
        "not enough data yet"
        if horizon.mde is None
        else f"{100.0 * horizon.mde:+.1f} % detectable now"
    )
    units = horizon.units_needed
    if units is None:
        return f"{now}; no sample reaches it"
    if units == 0:
        return f"{now}; reached"
    days = "" if horizon.days_needed is None else f" ({horizon.days_needed:.1f} days)"
    return f"{now}; {units:,} more {unit}{days}"
