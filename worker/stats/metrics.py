"""Sufficient statistics of one arm -> mean and per-unit variance; the lift between two arms.

Formulas follow GrowthBook's gbstats (``models/statistics.py`` and ``utils.py``):
proportions use the Bernoulli variance p(1 - p), sample means and ratio components use
the unbiased (n - 1) variance, ratio metrics and relative lifts use the delta method.

One departure: a relative lift is tested on the log scale by default, log(treatment /
control), with the interval mapped back. gbstats applies the normal approximation to
the ratio itself, whose standard error shrinks with the treatment mean, so at low
counts a lower treatment looks far more certain than a higher one (control 10/1000
against treatment 2/1000: one-sided p = 1.3e-7 where Fisher's exact test gives 0.019)
and lower-is-better tests declare false winners several times more often than alpha.
The log ratio's standard error treats the two arms alike, and its one-sided p-value
on that example is 0.0188.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from worker.stats.common import LiftFallback, LiftType, RelativeMethod, expm1_capped, finite

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
    """The estimated lift of treatment over control and what inference needs about it.

    ``estimate`` and ``variance`` are on the scale the test runs on: the lift itself,
    or with ``log_ratio`` log(treatment mean / control mean), from which
    :meth:`to_lift` maps estimates and interval bounds back to the relative lift.
    """

    estimate: float
    variance: float
    """Sampling variance of ``estimate`` (the squared standard error); always positive."""
    dof: float
    """Welch–Satterthwaite degrees of freedom."""
    units: int
    """Units in both arms: the clock of the sequential confidence sequence."""
    log_ratio: bool = False

    def to_lift(self, value: float) -> float:
        """A value on the test scale (an estimate or a bound) as a lift."""
        if not self.log_ratio:
            return value
        # Monotone, and 0 maps to 0: an interval excludes zero on both scales alike.
        return expm1_capped(value)

    def lift_sd(self, center: float, sd: float) -> float:
        """A standard deviation on the test scale, around ``center``, on the lift scale.

        Linearised for a log ratio: (1 + lift) · sd, which at the estimate is exactly
        gbstats' delta-method standard error of the relative lift.
        """
        return sd * (1.0 + self.to_lift(center)) if self.log_ratio else sd


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

    None when either mean is missing, or for a relative lift over a control mean that
    is not positive: dividing by a negative mean reverses the sign (a treatment that
    lowers revenue from -2 to -3 would show +50 %), and by zero means nothing.
    """
    if control.mean is None or treatment.mean is None:
        return None
    absolute = treatment.mean - control.mean
    if not relative:
        return absolute
    return absolute / control.mean if control.mean > 0 else None


def lift_type_of(
    control: Arm, treatment: Arm, requested: LiftType, method: RelativeMethod = "log_ratio"
) -> tuple[LiftType, LiftFallback | None]:
    """The lift type a comparison reports, and why it is not the requested one.

    A relative lift needs a positive control mean (see :func:`lift`); the log ratio
    also needs a positive treatment mean. Where they are missing, the absolute
    difference is reported instead: its sign is always the sign of treatment minus
    control, so no decision can point the wrong way. A treatment without spread
    (e.g. no conversions yet) cannot be tested on any scale, so it keeps its relative
    lift (-100 % for none) rather than switching scale for nothing.
    """
    if requested == "absolute" or control.mean is None or treatment.mean is None:
        return requested, None
    if control.mean <= 0:
        return "absolute", "control_mean_not_positive"
    if method == "log_ratio" and treatment.mean <= 0 and _testable(treatment):
        return "absolute", "treatment_mean_not_positive"
    return "relative", None


def difference(
    control: Arm, treatment: Arm, relative: bool, method: RelativeMethod = "log_ratio"
) -> Difference | None:
    """The lift with its sampling variance and Welch degrees of freedom.

    A relative lift is tested on the scale ``method`` names (see the module docstring).
    None when inference is undefined: a missing lift (see :func:`lift`), a treatment
    mean that is not positive for a log ratio, fewer than two units in an arm, or an
    arm without spread (zero variance, e.g. 0% or 100% conversion), where the normal
    approximation would claim certainty the data cannot give (as in gbstats).
    """
    control_moments = _mean_and_variance_of_mean(control)
    treatment_moments = _mean_and_variance_of_mean(treatment)
    estimate = lift(control, treatment, relative)
    if control_moments is None or treatment_moments is None or estimate is None:
        return None
    control_mean, control_var = control_moments
    treatment_mean, treatment_var = treatment_moments
    log_ratio = relative and method == "log_ratio"
    if log_ratio:
        if treatment_mean <= 0:
            return None
        # log1p of the lift is exact near zero (and keeps its sign); far below, where
        # the lift may round to -1, the logs of the means are.
        estimate = (
            math.log1p(estimate)
            if estimate > -0.5
            else math.log(treatment_mean) - math.log(control_mean)
        )
        # Delta method on log t - log c: the arms' relative variances add.
        control_part = control_var / control_mean / control_mean
        treatment_part = treatment_var / treatment_mean / treatment_mean
        variance = control_part + treatment_part
    else:
        control_part, treatment_part = control_var, treatment_var
        if relative:
            variance = variance_of_ratio(
                treatment_mean, treatment_var, control_mean, control_var, 0.0
            )
        else:
            variance = treatment_var + control_var
    # Extreme inputs (a control mean near zero, huge sums) can overflow, and below the
    # smallest normal double the precision 1/variance overflows; no test then.
    if not (sys.float_info.min <= variance < math.inf and math.isfinite(estimate)):
        return None
    return Difference(
        estimate=estimate,
        variance=variance,
        dof=_welch_dof(control_part, control.n, treatment_part, treatment.n),
        units=control.n + treatment.n,
        log_ratio=log_ratio,
    )


def _welch_dof(
    control_part: float, n_control: int, treatment_part: float, n_treatment: int
) -> float:
    """Welch–Satterthwaite degrees of freedom of a sum of two arms' variance parts.

    The parts are the arms' contributions to the variance of the estimate; gbstats
    uses the raw variances of the means for relative lifts too, which the ratio
    method keeps. Written with variance shares so that tiny or huge parts cannot
    under- or overflow.
    """
    control_share = control_part / (control_part + treatment_part)
    treatment_share = 1.0 - control_share
    return 1.0 / (
        control_share * control_share / (n_control - 1)
        + treatment_share * treatment_share / (n_treatment - 1)
    )


def _mean_and_variance_of_mean(arm: Arm) -> tuple[float, float] | None:
    """(mean, variance of the mean) of an arm fit for inference, else None."""
    if arm.mean is None or arm.variance is None or not _testable(arm):
        return None
    return arm.mean, arm.variance / arm.n


def _testable(arm: Arm) -> bool:
    """At least two units and some spread: the least a normal approximation needs."""
    return arm.n >= 2 and arm.variance is not None and arm.variance > 0


def _sample_variance(n: int, total: float, sum_squares: float) -> float | None:
    """Unbiased variance from n, Σy and Σy²; None below two units."""
    if n < 2:
        return None
    centred = centred_sum_of_squares(n, total, sum_squares)
    return 0.0 if centred == 0.0 else finite(centred / (n - 1))


def centred_sum_of_squares(n: int, total: float, sum_squares: float) -> float:
    """Σ(y - ȳ)² from n >= 1, Σy and Σy²; exactly 0 where only rounding noise is left."""
    centred = sum_squares - total * (total / n)
    if centred <= _CANCELLATION_TOLERANCE * abs(sum_squares):
        return 0.0
    return centred
