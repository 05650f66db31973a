"""The plain-language verdict the results page and the ``results`` command share."""

from __future__ import annotations

import pytest

from worker.results.verdict import Verdict, verdict


@pytest.mark.parametrize(
    ("reference", "chance", "p_value", "improvement", "expected"),
    [
        (True, None, None, None, Verdict("Baseline", "neutral")),
        (False, 97.4, None, 3.0, Verdict("97 % chance to beat control", "good")),
        (False, 3.0, None, -3.0, Verdict("3 % chance to beat control", "bad")),
        (False, 60.0, None, 1.0, Verdict("60 % chance to beat control", "neutral")),
        (False, None, 0.0004, -2.0, Verdict("p = < 0.001 (significant at 95 %)", "bad")),
        (False, None, 0.012, 2.0, Verdict("p = 0.012 (significant at 95 %)", "good")),
        (False, None, 0.3, 2.0, Verdict("p = 0.300 (not significant at 95 %)", "neutral")),
        (False, None, None, None, Verdict("Not enough data yet", "neutral")),
    ],
)
def test_a_variant_is_judged_by_its_engine_against_the_threshold(
    reference: bool,
    chance: float | None,
    p_value: float | None,
    improvement: float | None,
    expected: Verdict,
) -> None:
    said = verdict(
        reference=reference,
        chance_to_beat_percent=chance,
        p_value=p_value,
        improvement=improvement,
        threshold_percent=95.0,
    )
    assert said == expected
