"""The plain-language verdict the results page and the ``results`` command share."""

from __future__ import annotations

import pytest

from worker.results.verdict import Verdict, verdict


@pytest.mark.parametrize(
    ("chance", "p_value", "improvement", "expected"),
    [
        (97.4, None, 3.0, Verdict("97 % chance to beat control", "good")),
        (3.0, None, -3.0, Verdict("3 % chance to beat control", "bad")),
        (60.0, None, 1.0, Verdict("60 % chance to beat control", "neutral")),
        (None, 0.0004, -2.0, Verdict("p = < 0.001 (significant at 95 %)", "bad")),
        (None, 0.012, 2.0, Verdict("p = 0.012 (significant at 95 %)", "good")),
        (None, 0.3, 2.0, Verdict("p = 0.300 (not significant at 95 %)", "neutral")),
        (None, None, None, Verdict("Not enough data yet", "neutral")),
    ],
)
def test_a_treatment_is_judged_by_its_engine_against_the_threshold(
    chance: float | None, p_value: float | None, improvement: float | None, expected: Verdict
) -> None:
    said = verdict(
        reference=False,
        chance_to_beat_percent=chance,
        p_value=p_value,
        improvement=improvement,
        threshold_percent=95.0,
    )
    assert said == expected


def test_the_reference_is_the_baseline() -> None:
    said = verdict(
        reference=True,
        chance_to_beat_percent=None,
        p_value=None,
        improvement=None,
        threshold_percent=95.0,
    )
    assert said == Verdict("Baseline", "neutral")
