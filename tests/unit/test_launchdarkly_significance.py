"""LaunchDarkly's ``significanceThreshold``: one documented scale, read and written.

LaunchDarkly documents it as the significance level, a fraction ("Value should be
between 0.0-1.0 inclusive", ``AnalysisConfigRep`` in its REST API), and
``bayesianThreshold`` in percent (0-100). Issue 15, part 7: "5" was read as 95 %
and "0.05" as 99.95 %, while the read shape showed a 95 % experiment as "0.05".
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from worker.events.adapters import (
    DefinitionError,
    launchdarkly_significance_threshold,
    parse_definition,
)

PAYLOAD: dict[str, Any] = {
    "key": "checkout",
    "name": "Checkout",
    "methodology": "frequentist",
    "iteration": {
        "metrics": [{"key": "purchase", "primary": True}],
        "treatments": [
            {"_id": "a", "baseline": True, "allocationPercent": "50"},
            {"_id": "b", "baseline": False, "allocationPercent": "50"},
        ],
    },
}


def with_threshold(value: Any) -> dict[str, Any]:
    payload = copy.deepcopy(PAYLOAD)
    payload["analysisConfig"] = {"significanceThreshold": value}
    return payload


@pytest.mark.parametrize(
    ("threshold", "confidence"),
    [("0.05", 95.0), ("0.1", 90.0), ("0.01", 99.0), ("0.0005", 99.95), (0.05, 95.0)],
)
def test_the_threshold_is_the_significance_level_as_a_fraction(
    threshold: Any, confidence: float
) -> None:
    definition = parse_definition(with_threshold(threshold))
    assert definition.stats.confidence_threshold_percent == confidence


@pytest.mark.parametrize("threshold", ["0.05", "0.1", "0.01", "0.001", "0.0005", "0.2"])
def test_reading_returns_what_was_written(threshold: str) -> None:
    definition = parse_definition(with_threshold(threshold))
    confidence = definition.stats.confidence_threshold_percent
    assert launchdarkly_significance_threshold(confidence) == threshold


def test_a_95_percent_experiment_reads_as_0_05() -> None:
    assert launchdarkly_significance_threshold(95.0) == "0.05"
    assert launchdarkly_significance_threshold(99.9) == "0.001"


@pytest.mark.parametrize(
    ("threshold", "hint"),
    [
        ("5", 'write "0.05"'),  # a percentage: 5 % or 0.05 %?
        ("1", 'write "0.01"'),
        ("0.95", 'write "0.05"'),  # a confidence level, not a significance level
        ("0.5", "between 0 and 0.5"),
        ("0", "between 0 and 0.5"),
        ("-0.05", "between 0 and 0.5"),
        ("five", "must be a number"),
        ("NaN", "must be a number"),
        (True, "must be a number"),
    ],
)
def test_an_ambiguous_or_impossible_threshold_is_refused_with_the_scale(
    threshold: Any, hint: str
) -> None:
    with pytest.raises(DefinitionError, match="significanceThreshold") as error:
        parse_definition(with_threshold(threshold))
    assert hint in str(error.value)
