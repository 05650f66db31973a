"""Sufficient statistics of one arm -> mean and per-unit variance; the lift between two arms.

Formulas follow GrowthBook's gbstats (``models/statistics.py`` and ``utils.py``):
proportions use the Bernoulli variance p(1 - p), sample means and ratio components use
the unbiased (n - 1) variance, ratio metrics and relative lifts use the delta method.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from worker.stats.common import finite

# The variance comes from Σy² - (Σy)²/n, which cancels catastrophically when every
# value is (nearly) the same. A centred sum below this fraction of Σy² is rounding
# noise, not spread: treating it as spread would yield absurdly small standard errors.
_CANCELLATION_TOLERANCE = 1e-10


@dataclass(frozen=True)
class Arm:
    """One arm's summary: units, mean of the per-unit metric and its per-unit variance.

    ``mean`` is None when the arm has no data (no units, or a zero ratio denominator);
    ``variance`` is None when it cannot be estimated (fewer than two units for sample
    means and ratios, no units for proportions).
    """

    n: int
    mean: float | None
    variance: float | None


@dataclass(frozen=True)
class Difference:
    """The estimated lift of treatment over control and what inference needs about it."""

    estimate: float
    variance: float
    """Sampling variance of ``estimate`` (the squared standard error); always positive."""
    dof: float
    """Welch–Satterthwaite degrees of freedom."""
    units: int
    """Units in both arms: the clock of the sequential confidence sequence."""


def proportion_arm(n: int, conversions: float) -> Arm:
    """A conversion-rate arm from its units and converted units."""
    if n <= 0:
        return Arm(n=max(n, 0), mean=None, variance=None)
    rate = conversions / n
    return Arm(n=n, mean=rate, variance=max(rate * (1.0 - rate), 0.0))


def mean_arm(n: int, total: float, sum_squares: float) -> Arm:
    """A per-unit mean arm (e.g. revenue per visitor) from n, Σy and Σy²."""
    if n <= 0:
        return Arm(n=max(n, 0), mean=None, variance=None)
    return Arm(n=n, mean=finite(total / n), variance=_sample_variance(n, total, sum_squares))


def ratio_arm(
    n: int,
    numerator_sum: float,
    numerator_sum_squares: float,
    denominator_sum: float,
    denominator_sum_squares: float,
    cross_sum: float,
) -> Arm:
    """A ratio-of-sums arm (e.g. revenue per order) with its delta-method variance.

    ``cross_sum`` is Σ(M·D) over units. The variance is per unit, so that
    variance / n approximates the sampling variance of ΣM / ΣD.
    """
    if n <= 0 or denominator_sum == 0:
        return Arm(n=max(n, 0), mean=None, variance=None)
    mean = finite(numerator_sum / denominator_sum)
    denominator_mean = denominator_sum / n  # may underflow to zero for a tiny sum
    numerator_variance = _sample_variance(n, numerator_sum, numerator_sum_squares)
    denominator_variance = _sample_variance(n, denominator_sum, denominator_sum_squares)
    if (
        mean is None
        or denominator_mean == 0
        or numerator_variance is None
        or denominator_variance is None
    ):
        return Arm(n=n, mean=mean, variance=None)
    covariance = (cross_sum - numerator_sum * denominator_sum / n) / (n - 1)
    variance = variance_of_ratio(
        numerator_sum / n, numerator_variance, denominator_mean, denominator_variance, covariance
    )
    return Arm(n=n, mean=mean, variance=finite(variance))


def variance_of_ratio(
    mean_m: float, var_m: float, mean_d: float, var_d: float, cov_md: float
) -> float:
    """Delta-method variance of M / D from the moments of M and D (gbstats' formula).

    ``mean_d`` must be nonzero. Clamped at zero: the exact quadratic form is
    non-negative, rounding is not.
    """
    # Products and quotients only: float ** raises OverflowError on huge inputs, and
    # mean_d² can underflow to zero where dividing by mean_d twice cannot.
    ratio = mean_m / mean_d
    value = (var_m + var_d * ratio * ratio - 2.0 * cov_md * ratio) / mean_d / mean_d
    return max(value, 0.0)


def lift(control: Arm, treatment: Arm, relative: bool) -> float | None:
    """Treatment minus control, divided by the control mean when ``relative``.

    None when either mean is missing, or for a relative lift over a zero control mean.
    """
    if control.mean is None or treatment.mean is None:
        return None
    absolute = treatment.mean - control.mean
    if not relative:
        return absolute
    return absolute / control.mean if control.mean != 0 else None


def difference(control: Arm, treatment: Arm, relative: bool) -> Difference | None:
    """The lift with its sampling variance and Welch degrees of freedom.

    None when inference is undefined: a missing lift, fewer than two units in an arm,
    or an arm without spread (zero variance, e.g. 0% or 100% conversion), where the
    normal approximation would claim certainty the data cannot give (as in gbstats).
    """
    control_moments = _mean_and_variance_of_mean(control)
    treatment_moments = _mean_and_variance_of_mean(treatment)
    estimate = lift(control, treatment, relative)
    if control_moments is None or treatment_moments is None or estimate is None:
        return None
    control_mean, control_var = control_moments
    treatment_mean, treatment_var = treatment_moments
    if relative:
        variance = variance_of_ratio(treatment_mean, treatment_var, control_mean, control_var, 0.0)
    else:
        variance = treatment_var + control_var
    # Extreme inputs (a control mean near zero, huge sums) can overflow, and below the
    # smallest normal double the precision 1/variance overflows; no test then.
    if not (sys.float_info.min <= variance < math.inf and math.isfinite(estimate)):
        return None
    # Welch–Satterthwaite on the raw arm variances, for relative lifts too (as gbstats),
    # written with variance shares so that tiny or huge variances cannot under/overflow.
    control_share = control_var / (control_var + treatment_var)
    treatment_share = 1.0 - control_share
    dof = 1.0 / (
        control_share * control_share / (control.n - 1)
        + treatment_share * treatment_share / (treatment.n - 1)
    )
    return Difference(estimate=estimate, variance=variance, dof=dof, units=control.n + treatment.n)


def _mean_and_variance_of_mean(arm: Arm) -> tuple[float, float] | None:
    """(mean, variance of the mean) of an arm fit for inference, else None."""
    if arm.mean is None or arm.variance is None or arm.n < 2 or arm.variance <= 0:
        return None
    return arm.mean, arm.variance / arm.n


def _sample_variance(n: int, total: float, sum_squares: float) -> float | None:
    """Unbiased variance from n, Σy and Σy²; None below two units."""
    if n < 2:
        return None
    centred = sum_squares - total * (total / n)
    if centred <= _CANCELLATION_TOLERANCE * abs(sum_squares):
        return 0.0
    return finite(centred / (n - 1))
