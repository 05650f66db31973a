"""CUPED (regression adjustment on a pre-period covariate) against independent numbers.

The expectations are computed from the per-unit values with numpy: θ is the slope of an
ordinary least-squares fit of y on x with one intercept per arm, and each arm's adjusted
per-unit variance is the variance of y - θx, computed directly.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from worker.stats import AnalysisRequest, analyze
from worker.stats.cuped import CupedSums, cuped_arms, pooled_theta
from worker.stats.metrics import mean_arm, proportion_arm

REPO_ROOT = Path(__file__).resolve().parents[2]

CONTROL_Y = np.array([3.0, 5.0, 4.0, 8.0, 6.0, 2.5])
CONTROL_X = np.array([2.0, 4.0, 3.0, 7.0, 4.0, 1.0])
TREATMENT_Y = np.array([6.0, 7.0, 5.0, 9.0, 8.0, 7.0, 4.0])
TREATMENT_X = np.array([3.0, 5.0, 2.0, 6.0, 5.0, 4.0, 2.5])

# 0/1 values: converted in the experiment (y) and in the days before it (x).
CONVERTED_C_Y = np.array([1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0], dtype=float)
CONVERTED_C_X = np.array([1, 0, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0], dtype=float)
CONVERTED_T_Y = np.array([1, 1, 0, 1, 1, 0, 1, 0, 1, 1], dtype=float)
CONVERTED_T_X = np.array([1, 0, 0, 1, 1, 0, 0, 0, 1, 1], dtype=float)


def variant(
    variant_id: str, y: np.ndarray, x: np.ndarray | None, *, control: bool = False
) -> dict[str, Any]:
    """The sufficient statistics a producer would send for these units."""
    payload: dict[str, Any] = {
        "id": variant_id,
        "control": control,
        "n": len(y),
        "sum": float(y.sum()),
        "sum_squares": float((y * y).sum()),
    }
    if x is not None:
        payload |= {
            "covariate_sum": float(x.sum()),
            "covariate_sum_squares": float((x * x).sum()),
            "covariate_product_sum": float((x * y).sum()),
        }
    return payload


def request(
    metric: str, arms: Sequence[tuple[np.ndarray, np.ndarray | None]], **settings: Any
) -> dict:
    return {
        "metric": metric,
        "variants": [
            variant(str(i), y, x, control=i == 0) for i, (y, x) in enumerate(arms, start=0)
        ],
        **settings,
    }


def least_squares_theta(arms: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Slope on x of y ~ x + one intercept per arm (the ANCOVA fit)."""
    y = np.concatenate([a[0] for a in arms])
    x = np.concatenate([a[1] for a in arms])
    dummies = np.zeros((len(y), len(arms)))
    start = 0
    for column, (arm_y, _) in enumerate(arms):
        dummies[start : start + len(arm_y), column] = 1.0
        start += len(arm_y)
    coefficients, *_ = np.linalg.lstsq(np.column_stack([x, dummies]), y, rcond=None)
    return float(coefficients[0])


def sums(y: np.ndarray, x: np.ndarray) -> CupedSums:
    return CupedSums(
        n=len(y),
        total=float(y.sum()),
        sum_squares=float((y * y).sum()),
        covariate_total=float(x.sum()),
        covariate_sum_squares=float((x * x).sum()),
        cross_sum=float((x * y).sum()),
    )


class TestHandComputed:
    def test_mean_metric_theta_means_and_variances(self) -> None:
        arms = [(CONTROL_Y, CONTROL_X), (TREATMENT_Y, TREATMENT_X)]
        theta = least_squares_theta(arms)
        pooled_x = np.concatenate([CONTROL_X, TREATMENT_X]).mean()
        raw = [mean_arm(len(y), float(y.sum()), float((y * y).sum())) for y, _ in arms]

        adjusted, got_theta = cuped_arms(raw, [sums(y, x) for y, x in arms], bernoulli=False)

        assert got_theta == pytest.approx(theta, rel=1e-12)
        assert pooled_theta([sums(y, x) for y, x in arms]) == pytest.approx(theta, rel=1e-12)
        for arm, (y, x) in zip(adjusted, arms, strict=True):
            assert arm.n == len(y)
            assert arm.mean == pytest.approx(y.mean() - theta * (x.mean() - pooled_x), rel=1e-12)
            assert arm.variance == pytest.approx(np.var(y - theta * x, ddof=1), rel=1e-12)

    def test_proportion_metric_uses_the_bernoulli_divisor(self) -> None:
        arms = [(CONVERTED_C_Y, CONVERTED_C_X), (CONVERTED_T_Y, CONVERTED_T_X)]
        theta = least_squares_theta(arms)
        pooled_x = np.concatenate([CONVERTED_C_X, CONVERTED_T_X]).mean()
        raw = [proportion_arm(len(y), float(y.sum())) for y, _ in arms]

        adjusted, got_theta = cuped_arms(raw, [sums(y, x) for y, x in arms], bernoulli=True)

        assert got_theta == pytest.approx(theta, rel=1e-12)
        for arm, (y, x) in zip(adjusted, arms, strict=True):
            assert arm.mean == pytest.approx(y.mean() - theta * (x.mean() - pooled_x), rel=1e-12)
            # p(1 - p) is the variance with divisor n; so are the covariate's moments.
            assert arm.variance == pytest.approx(np.var(y - theta * x, ddof=0), rel=1e-12)

    def test_analysis_reports_the_adjusted_difference_theta_and_reduction(self) -> None:
        arms = [(CONTROL_Y, CONTROL_X), (TREATMENT_Y, TREATMENT_X)]
        theta = least_squares_theta(arms)
        payload = request("mean", arms, cuped=True, difference="absolute")

        result = analyze(AnalysisRequest.model_validate(payload))

        (treatment,) = result.variants
        expected_lift = (TREATMENT_Y.mean() - theta * TREATMENT_X.mean()) - (
            CONTROL_Y.mean() - theta * CONTROL_X.mean()
        )
        adjusted_var = (
            np.var(TREATMENT_Y - theta * TREATMENT_X, ddof=1) / 7
            + np.var(CONTROL_Y - theta * CONTROL_X, ddof=1) / 6
        )
        raw_var = np.var(TREATMENT_Y, ddof=1) / 7 + np.var(CONTROL_Y, ddof=1) / 6
        assert result.cuped_theta == pytest.approx(theta, rel=1e-12)
        assert treatment.lift == pytest.approx(expected_lift, rel=1e-12)
        assert treatment.se == pytest.approx(math.sqrt(adjusted_var), rel=1e-12)
        assert treatment.variance_reduction == pytest.approx(1 - adjusted_var / raw_var)
        assert treatment.variance_reduction is not None
        assert 0 < treatment.variance_reduction < 1

    def test_three_arms_share_one_theta(self) -> None:
        third_y = np.array([4.0, 6.0, 3.0, 9.5, 7.0])
        third_x = np.array([2.0, 5.0, 1.0, 8.0, 6.0])
        arms = [(CONTROL_Y, CONTROL_X), (TREATMENT_Y, TREATMENT_X), (third_y, third_x)]
        payload = request("mean", arms, cuped=True, difference="absolute")

        result = analyze(AnalysisRequest.model_validate(payload))

        theta = least_squares_theta(arms)
        assert result.cuped_theta == pytest.approx(theta, rel=1e-12)
        third = result.variants[1]
        assert third.lift == pytest.approx(
            (third_y.mean() - theta * third_x.mean())
            - (CONTROL_Y.mean() - theta * CONTROL_X.mean()),
            rel=1e-12,
        )


class TestConstantCovariate:
    @pytest.mark.parametrize("metric", ["proportion", "mean"])
    @pytest.mark.parametrize("engine", ["frequentist", "bayesian"])
    @pytest.mark.parametrize("sequential", [False, True])
    def test_equals_the_raw_analysis_exactly(
        self, metric: str, engine: str, sequential: bool
    ) -> None:
        ys = (CONVERTED_C_Y, CONVERTED_T_Y) if metric == "proportion" else (CONTROL_Y, TREATMENT_Y)
        constant = [np.full(len(y), 3.0) for y in ys]
        settings = {"engine": engine, "sequential": sequential}
        raw = analyze(
            AnalysisRequest.model_validate(
                request(metric, list(zip(ys, constant, strict=True)), **settings)
            )
        )
        adjusted = analyze(
            AnalysisRequest.model_validate(
                request(metric, list(zip(ys, constant, strict=True)), cuped=True, **settings)
            )
        )

        assert adjusted.cuped_theta == 0.0
        assert raw.cuped_theta is None
        (treatment,) = adjusted.variants
        assert treatment.variance_reduction == 0.0
        raw_dump = raw.model_dump(exclude={"cuped_theta"})
        adjusted_dump = adjusted.model_dump(exclude={"cuped_theta"})
        adjusted_dump["variants"][0]["variance_reduction"] = None
        assert adjusted_dump == raw_dump


class TestValidation:
    def base(self, **changes: Any) -> dict[str, Any]:
        payload = request("mean", [(CONTROL_Y, CONTROL_X), (TREATMENT_Y, TREATMENT_X)])
        payload["variants"][1] |= changes
        return payload

    def test_all_three_covariate_sums_or_none(self) -> None:
        payload = self.base()
        del payload["variants"][1]["covariate_product_sum"]
        with pytest.raises(ValidationError, match="covariate_product_sum"):
            AnalysisRequest.model_validate(payload)

    def test_covariate_sum_squares_below_sum_squared_over_n(self) -> None:
        with pytest.raises(ValidationError, match="covariate_sum_squares is smaller"):
            AnalysisRequest.model_validate(self.base(covariate_sum_squares=1.0))

    def test_product_sum_beyond_cauchy_schwarz(self) -> None:
        centred = float(((TREATMENT_X - TREATMENT_X.mean()) * TREATMENT_Y).sum())
        bound = math.sqrt(
            ((TREATMENT_X - TREATMENT_X.mean()) ** 2).sum()
            * ((TREATMENT_Y - TREATMENT_Y.mean()) ** 2).sum()
        )
        too_large = float((TREATMENT_X * TREATMENT_Y).sum()) - centred + bound * 1.01
        with pytest.raises(ValidationError, match="covariate_product_sum"):
            AnalysisRequest.model_validate(self.base(covariate_product_sum=too_large))
        # Perfect correlation is the bound itself, which real data can reach.
        AnalysisRequest.model_validate(self.base(covariate_product_sum=too_large - bound * 0.01))

    def test_cuped_needs_the_covariate_on_every_variant(self) -> None:
        payload = request("mean", [(CONTROL_Y, CONTROL_X), (TREATMENT_Y, TREATMENT_X)], cuped=True)
        for name in ("covariate_sum", "covariate_sum_squares", "covariate_product_sum"):
            del payload["variants"][0][name]
        with pytest.raises(ValidationError, match="variant '0': cuped needs covariate_sum"):
            AnalysisRequest.model_validate(payload)

    def test_cuped_refuses_ratio_metrics(self) -> None:
        payload = request("ratio", [(CONTROL_Y, CONTROL_X), (TREATMENT_Y, TREATMENT_X)], cuped=True)
        for v in payload["variants"]:
            v |= {
                "denominator_sum": v["n"],
                "denominator_sum_squares": v["n"],
                "main_denominator_sum_product": v["sum"],
            }
        with pytest.raises(ValidationError, match="cuped applies to proportion and mean"):
            AnalysisRequest.model_validate(payload)

    def test_covariate_sums_without_cuped_are_accepted_and_unused(self) -> None:
        with_sums = analyze(AnalysisRequest.model_validate(self.base()))
        without = request("mean", [(CONTROL_Y, None), (TREATMENT_Y, None)])
        assert with_sums == analyze(AnalysisRequest.model_validate(without))


def test_the_calculator_takes_cuped_requests() -> None:
    payload = request(
        "proportion",
        [(CONVERTED_C_Y, CONVERTED_C_X), (CONVERTED_T_Y, CONVERTED_T_X)],
        cuped=True,
    )
    completed = subprocess.run(
        [sys.executable, "-m", "worker", "stats"],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    theta = least_squares_theta([(CONVERTED_C_Y, CONVERTED_C_X), (CONVERTED_T_Y, CONVERTED_T_X)])
    assert result["cuped_theta"] == pytest.approx(theta, rel=1e-12)
    assert 0 < result["variants"][0]["variance_reduction"] < 1


def test_close_to_gbstats_published_regression_adjusted_sequential_result() -> None:
    """gbstats is not installed here; its own test ``test_sequential_test_runs_ra``
    (packages/stats/tests/frequentist/test_tests.py) publishes the regression-adjusted
    sequential relative lift for these sums: 0.50338, interval (-0.50969, 1.51646),
    standard error 0.33341. gbstats pools the two arms as one sample for θ and divides
    the relative lift by the unadjusted control mean, so the numbers agree to 1e-4,
    not to gbstats' 5 decimals."""
    payload = {
        "metric": "mean",
        "sequential": True,
        "relative_method": "ratio",
        "cuped": True,
        "variants": [
            {
                "id": "a",
                "control": True,
                "n": 3000,
                "sum": 1396.87,
                "sum_squares": 52377.9767,
                "covariate_sum": 16.87,
                "covariate_sum_squares": 527.9767,
                "covariate_product_sum": 1,
            },
            {
                "id": "b",
                "n": 3461,
                "sum": 2422.7,
                "sum_squares": 134698.29,
                "covariate_sum": 22.7,
                "covariate_sum_squares": 1348.29,
                "covariate_product_sum": 1,
            },
        ],
    }

    (treatment,) = analyze(AnalysisRequest.model_validate(payload)).variants

    assert treatment.lift == pytest.approx(0.50338, abs=1e-4)
    assert treatment.ci == pytest.approx((-0.50969, 1.51646), abs=1e-4)
    assert treatment.se == pytest.approx(0.33341, abs=1e-4)
