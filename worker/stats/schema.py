"""The analysis request and result: validated plain data shared by the CLI and the worker."""

from __future__ import annotations

import math
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from worker.stats.bandits import DEFAULT_MIN_UNITS, DEFAULT_MIN_WEIGHT
from worker.stats.common import Direction, Interval, LiftFallback, LiftType, RelativeMethod
from worker.stats.corrections import Correction
from worker.stats.sequential import DEFAULT_TUNING
from worker.stats.srm import DEFAULT_SRM_THRESHOLD

Metric = Literal["proportion", "mean", "ratio"]

# Σy² may fall a hair below (Σy)²/n through rounding in the producer's own sums.
_SUM_SQUARES_SLACK = 1e-9

# Counts beyond 2**53 are not exact in float64, where all the arithmetic happens.
_MAX_EXACT_COUNT = 2**53

_INPUT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PriorInput(BaseModel):
    """A proper Gaussian prior on the relative lift (carried to the scale tested on).

    Its mean must exceed -1 (-100 %): a log-ratio lift cannot reach it.
    """

    model_config = _INPUT

    mean: float = Field(0.0, gt=-1)
    variance: float = Field(gt=0)


class VariantInput(BaseModel):
    """One arm's sufficient statistics.

    Proportions need ``n`` and ``sum`` (converted units); means add ``sum_squares``;
    ratios add the denominator's sums and the per-unit numerator × denominator sum.
    CUPED (``AnalysisRequest.cuped``) adds the pre-period covariate's sums: x is each
    unit's value of the same metric in the days before it entered (0/1 for a
    proportion), ``covariate_sum`` is Σx, ``covariate_sum_squares`` Σx² and
    ``covariate_product_sum`` Σxy over the arm's units; all three or none.
    """

    model_config = _INPUT

    id: str = Field(min_length=1)
    control: bool = False
    n: int = Field(ge=0, le=_MAX_EXACT_COUNT)
    sum: float
    sum_squares: float | None = None
    denominator_sum: float | None = None
    denominator_sum_squares: float | None = None
    main_denominator_sum_product: float | None = None
    covariate_sum: float | None = None
    covariate_sum_squares: float | None = None
    covariate_product_sum: float | None = None


class AnalysisRequest(BaseModel):
    """Everything needed to analyse one goal of one experiment.

    ``cuped: true`` adjusts every arm by regression on its pre-period covariate
    (``worker.stats.cuped``); proportion and mean metrics only, and every variant must
    carry the covariate sums.
    """

    model_config = _INPUT

    metric: Metric
    engine: Literal["frequentist", "bayesian"] = "frequentist"
    sequential: bool = False
    sequential_tuning: float = Field(DEFAULT_TUNING, gt=0, le=_MAX_EXACT_COUNT)
    test_direction: Direction = "two_sided"
    difference: LiftType = "relative"
    # "ratio" reproduces gbstats 0.8.0, whose relative-lift test over-declares lower
    # treatments at low counts; "log_ratio" holds alpha in both directions.
    relative_method: RelativeMethod = "log_ratio"
    # Below 0.5: one-sided confidence sequences are built at 2·alpha (as in gbstats).
    alpha: float = Field(0.05, gt=0, lt=0.5)
    prior: PriorInput | None = None
    correction: Correction = "none"
    weights: list[Annotated[float, Field(ge=0)]] | None = None
    srm_threshold: float = Field(DEFAULT_SRM_THRESHOLD, gt=0, lt=1)
    bandit_min_weight: float = Field(DEFAULT_MIN_WEIGHT, ge=0, le=1)
    bandit_min_units: int = Field(DEFAULT_MIN_UNITS, ge=0)
    cuped: bool = False
    variants: list[VariantInput] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        controls = [v for v in self.variants if v.control]
        if len(controls) != 1:
            raise ValueError(f"exactly one variant must have control: true, got {len(controls)}")
        ids = [v.id for v in self.variants]
        if len(set(ids)) != len(ids):
            raise ValueError("variant ids must be unique")
        if self.weights is not None:
            if len(self.weights) != len(self.variants):
                raise ValueError(
                    f"weights has {len(self.weights)} entries but there are "
                    f"{len(self.variants)} variants"
                )
            if sum(self.weights) <= 0:
                raise ValueError("weights must not all be zero")
        if self.cuped and self.metric == "ratio":
            raise ValueError(
                "cuped applies to proportion and mean metrics; a ratio metric cannot be adjusted"
            )
        for variant in self.variants:
            _check_variant(variant, self.metric)
            if self.cuped and variant.covariate_sum is None:
                raise ValueError(
                    f"variant {variant.id!r}: cuped needs covariate_sum, "
                    "covariate_sum_squares and covariate_product_sum"
                )
        return self


def _check_variant(variant: VariantInput, metric: Metric) -> None:
    """Reject sufficient statistics that no real data could produce."""
    where = f"variant {variant.id!r}"
    if metric == "proportion":
        if not 0 <= variant.sum <= variant.n:
            raise ValueError(f"{where}: sum (conversions) must be between 0 and n")
        _check_covariate(where, variant, sum_squares=variant.sum)
        return
    required = ["sum_squares"]
    if metric == "ratio":
        required += ["denominator_sum", "denominator_sum_squares", "main_denominator_sum_product"]
    missing = [name for name in required if getattr(variant, name) is None]
    if missing:
        raise ValueError(f"{where}: a {metric} metric needs {', '.join(missing)}")
    _check_sum_squares(where, "sum_squares", variant.n, variant.sum, variant.sum_squares)
    if metric == "ratio":
        _check_sum_squares(
            where,
            "denominator_sum_squares",
            variant.n,
            variant.denominator_sum,
            variant.denominator_sum_squares,
        )
    assert variant.sum_squares is not None
    _check_covariate(where, variant, sum_squares=variant.sum_squares)


def _check_covariate(where: str, variant: VariantInput, sum_squares: float) -> None:
    """All three covariate sums or none, each consistent with the metric's own sums.

    ``sum_squares`` is the metric's Σy² (Σy for a 0/1 metric). The centred cross-product
    is bounded by Cauchy–Schwarz: |Σ(x - x̄)(y - ȳ)|² <= Σ(x - x̄)² · Σ(y - ȳ)².
    """
    names = ("covariate_sum", "covariate_sum_squares", "covariate_product_sum")
    given = [getattr(variant, name) is not None for name in names]
    if not any(given):
        return
    if not all(given):
        missing = [name for name, present in zip(names, given, strict=True) if not present]
        raise ValueError(f"{where}: covariate sums come together; missing {', '.join(missing)}")
    total, squares, product = (
        variant.covariate_sum,
        variant.covariate_sum_squares,
        variant.covariate_product_sum,
    )
    assert total is not None and squares is not None and product is not None
    _check_sum_squares(where, "covariate_sum_squares", variant.n, total, squares)
    if variant.n == 0:
        if product != 0:
            raise ValueError(f"{where}: sums must be 0 when n is 0")
        return
    centred_xx = max(squares - total * (total / variant.n), 0.0)
    centred_yy = max(sum_squares - variant.sum * (variant.sum / variant.n), 0.0)
    centred_xy = product - total * (variant.sum / variant.n)
    # Rounding in the producer's sums and in these differences, relative to their terms.
    slack = _SUM_SQUARES_SLACK * (abs(product) + abs(total * (variant.sum / variant.n)))
    if abs(centred_xy) > math.sqrt(centred_xx * centred_yy) * (1.0 + _SUM_SQUARES_SLACK) + slack:
        raise ValueError(
            f"{where}: covariate_product_sum is farther from covariate_sum·sum/n than "
            "Cauchy–Schwarz allows, which no data can produce"
        )


def _check_sum_squares(
    where: str, name: str, n: int, total: float | None, sum_squares: float | None
) -> None:
    """Σy² >= (Σy)²/n (Cauchy–Schwarz), and no sums at all without units."""
    assert total is not None and sum_squares is not None
    if n == 0:
        if total != 0 or sum_squares != 0:
            raise ValueError(f"{where}: sums must be 0 when n is 0")
        return
    if sum_squares < total * (total / n) * (1.0 - _SUM_SQUARES_SLACK):
        raise ValueError(f"{where}: {name} is smaller than sum²/n, which no data can produce")


class VariantResult(BaseModel):
    """One treatment compared with the control.

    ``lift``, ``ci``, ``ci_adjusted``, ``se`` and ``risk`` are on the scale
    ``lift_type`` names: the request's ``difference``, except where a relative lift is
    undefined (``lift_fallback`` says why) and the absolute difference is reported
    instead: a relative lift over a negative control mean would reverse its sign.

    The frequentist engine fills ``p_value``/``p_value_adjusted`` and leaves
    ``chance_to_win``/``risk`` None; the Bayesian engine does the opposite, with ``ci``
    the credible interval, ``lift`` the posterior mean (the posterior median for a
    log-ratio lift) and ``ci_adjusted`` equal to ``ci`` (corrections act on p-values).
    A relative lift tested as a log ratio has an asymmetric interval, and ``se`` is
    then the linearised (gbstats) standard error. Any number that is undefined for the
    data is None; an interval side is None when it is unbounded (one-sided tests).
    """

    id: str
    lift_type: LiftType
    lift_fallback: LiftFallback | None = None
    lift: float | None = None
    ci: Interval | None = None
    ci_adjusted: Interval | None = None
    se: float | None = None
    p_value: float | None = None
    p_value_adjusted: float | None = None
    chance_to_win: float | None = None
    risk: tuple[float, float] | None = None
    reliability: float | None = None
    improvement: float | None = None
    variance_reduction: float | None = None
    """With CUPED: 1 - (variance of the adjusted estimate) / (variance of the raw one),
    on the scale tested (about ρ², the squared metric–covariate correlation; negative
    if the adjustment widened the interval). None without CUPED or where either
    estimate is undefined."""


class AnalysisResult(BaseModel):
    """The analysis of one goal: per-treatment comparisons and experiment-wide checks."""

    control: str
    variants: list[VariantResult]
    srm_p_value: float | None
    srm_alarm: bool
    probability_best: dict[str, float] | None
    bandit_weights: dict[str, float]
    bandit_updated: bool
    cuped_theta: float | None = None
    """With CUPED: the slope θ shared by all arms (each adjusted by -θ·(x̄_arm - x̄));
    0 when the covariate has no spread, and the analysis is then the raw one. None
    without CUPED."""
