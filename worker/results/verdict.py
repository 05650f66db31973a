"""A variant's result against the reference in plain words, for people: the results
page and the ``results`` command say it the same way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from worker.results.contract import VariantStatistics

Tone = Literal["good", "bad", "neutral"]


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
