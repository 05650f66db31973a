"""`python -m worker stats` end to end, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from worker.cli.stats_command import parse_request
from worker.errors import WorkerError

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_stats(stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", "stats"],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )


def test_prints_the_analysis_as_json() -> None:
    request = {
        "metric": "proportion",
        "engine": "frequentist",
        "sequential": False,
        "test_direction": "two_sided",
        "difference": "relative",
        "relative_method": "ratio",  # gbstats 0.8.0's test of the relative lift
        "alpha": 0.05,
        "prior": None,
        "correction": "none",
        "weights": [0.5, 0.5],
        "variants": [
            {"id": "0", "control": True, "n": 28, "sum": 14, "sum_squares": 14},
            {"id": "1", "n": 30, "sum": 16, "sum_squares": 16},
        ],
    }
    completed = run_stats(json.dumps(request))
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    (variant,) = result["variants"]
    assert variant["id"] == "1"
    assert round(variant["lift"], 5) == 0.06667
    assert [round(bound, 5) for bound in variant["ci"]] == [-0.47767, 0.61101]
    assert round(variant["se"], 5) == 0.2717
    assert round(variant["p_value"], 5) == 0.80707
    assert variant["chance_to_win"] is None and variant["risk"] is None
    assert variant["lift_type"] == "relative" and variant["lift_fallback"] is None
    assert set(result) >= {"srm_p_value", "probability_best", "bandit_weights"}
    # The default log-ratio test keeps gbstats' lift and standard error, not its interval.
    del request["relative_method"]
    default = json.loads(run_stats(json.dumps(request)).stdout)["variants"][0]
    assert default["lift"] == variant["lift"]
    assert default["se"] == pytest.approx(variant["se"], rel=1e-12)
    assert [round(bound, 5) for bound in default["ci"]] == [-0.35977, 0.77715]
    assert round(default["p_value"], 5) == 0.80093


def test_invalid_input_exits_2_with_one_line() -> None:
    variants = [{"id": "a", "control": True, "n": -1, "sum": 0}, {"id": "b", "n": 5, "sum": 1}]
    for stdin in ("{not json", json.dumps({"metric": "proportion", "variants": variants})):
        completed = run_stats(stdin)
        assert completed.returncode == 2
        assert completed.stdout == ""
        lines = completed.stderr.strip().splitlines()
        assert len(lines) == 1, completed.stderr
        assert lines[0].startswith("error: ")


def proportion(*variants: dict[str, Any], **settings: Any) -> str:
    return json.dumps({"metric": "proportion", "variants": list(variants), **settings})


CONTROL = {"id": "a", "control": True, "n": 10, "sum": 1}
TREATMENT = {"id": "b", "n": 10, "sum": 2}


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("{not json", "stdin is not valid JSON (Expecting property name enclosed in double quotes"),
        (proportion(TREATMENT), "exactly one variant must have control: true, got 0"),
        (proportion(CONTROL, CONTROL), "exactly one variant must have control: true, got 2"),
        (proportion(CONTROL, {**TREATMENT, "n": -1}), "variants.1.n: Input should be greater"),
        (proportion(CONTROL, {**TREATMENT, "sum": 11}), "variant 'b': sum (conversions) must be"),
        (proportion(CONTROL, TREATMENT, weights=[1]), "weights has 1 entries but there are 2"),
        (proportion(CONTROL, TREATMENT, alpha=0.6), "alpha: Input should be less than 0.5"),
        (proportion(CONTROL, TREATMENT, engine="magic"), "engine: Input should be"),
        (proportion(CONTROL, TREATMENT, colour="red"), "colour: Extra inputs are not permitted"),
        (
            json.dumps({"metric": "mean", "variants": [CONTROL, TREATMENT]}),
            "variant 'a': a mean metric needs sum_squares",
        ),
        (
            json.dumps({"metric": "ratio", "variants": [{**CONTROL, "sum_squares": 1}, TREATMENT]}),
            "needs denominator_sum, denominator_sum_squares, main_denominator_sum_product",
        ),
        (
            json.dumps(
                {"metric": "mean", "variants": [{**CONTROL, "sum": 5, "sum_squares": 1}, TREATMENT]}
            ),
            "variant 'a': sum_squares is smaller than sum²/n",
        ),
    ],
)
def test_invalid_input_is_one_clear_sentence(stdin: str, message: str) -> None:
    with pytest.raises(WorkerError) as caught:
        parse_request(stdin)
    assert caught.value.exit_code == 2
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
