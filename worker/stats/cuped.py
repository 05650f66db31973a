"""CUPED: each arm's mean adjusted by regression on a pre-period covariate.

Each unit's metric y is paired with x, its value of the same metric in the days before
it entered the experiment. The adjusted metric is y - θ(x - x̄), with x̄ the covariate
mean over all arms and one θ shared by all arms (Deng, Xu, Kohavi & Walker 2013). Since
x is measured before assignment it carries no treatment effect, so the adjusted
difference between arms estimates the same lift with a smaller variance, by the share
ρ² of y's variance that x explains.

θ is the within-arm pooled least-squares slope Σ_a C_xy(a) / Σ_a C_xx(a), C the centred
sums of cross-products and squares in arm a; equivalently Σ_a (n_a - 1)·cov_a(x, y) /
Σ_a (n_a - 1)·var_a(x): the slope of the regression of y on x with one intercept per
arm (the ANCOVA estimator). gbstats' ``compute_theta`` instead pools the two compared
arms into one sample around their joint means, and fits one θ per treatment; both
differ from this one by terms of order 1/n, and one θ for all arms makes every
comparison, and the probability to be best, read the same adjusted arms.

The adjusted arm has mean ȳ_a - θ(x̄_a - x̄) and per-unit variance
var(y) - 2θ·cov(x, y) + θ²·var(x) (the variance of y - θx, clamped at 0), with the
divisor n for proportions (as in p(1 - p)) and n - 1 for means. Centring on the
all-arm x̄ keeps the adjusted means on the metric's scale, so relative lifts divide by
a control mean comparable with the raw one; differences between arms are exactly
(ȳ_t - θx̄_t) - (ȳ_c - θx̄_c), gbstats' adjusted difference. Arms adjusted so are plain
:class:`~worker.stats.metrics.Arm` values, which every test reads unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from worker.stats.common import finite
from worker.stats.metrics import Arm, Difference, centred_sum_of_squares


@dataclass(frozen=True)
class CupedSums:
    """One arm's sums over its units: the metric y, the covariate x and their products.

    For a 0/1 metric ``sum_squares`` equals ``total``.
    """

    n: int
    total: float
    """Σy"""
    sum_squares: float
    """Σy²"""
    covariate_total: float
    """Σx"""
    covariate_sum_squares: float
    """Σx²"""
    cross_sum: float
    """Σxy"""


@dataclass(frozen=True)
class _Centred:
    """An arm's centred sums: Σ(x - x̄)² and Σ(x - x̄)(y - ȳ)."""

    xx: float
    xy: float


def _centred(sums: CupedSums) -> _Centred:
    if sums.n <= 0:
        return _Centred(xx=0.0, xy=0.0)
    xx = centred_sum_of_squares(sums.n, sums.covariate_total, sums.covariate_sum_squares)
    yy = centred_sum_of_squares(sums.n, sums.total, sums.sum_squares)
    # Without spread in x or y the cross-products are zero; computed, they would be
    # rounding noise that a θ could amplify.
    if xx == 0.0 or yy == 0.0:
        return _Centred(xx=xx, xy=0.0)
    return _Centred(xx=xx, xy=sums.cross_sum - sums.covariate_total * (sums.total / sums.n))


def pooled_theta(arms: Sequence[CupedSums]) -> float:
    """θ = Σ_a C_xy(a) / Σ_a C_xx(a); 0 when the covariate has no spread in any arm."""
    centred = [_centred(sums) for sums in arms]
    xx = sum(c.xx for c in centred)
    if xx <= 0.0:
        return 0.0
    return finite(sum(c.xy for c in centred) / xx) or 0.0


def adjusted_arm(
    arm: Arm, sums: CupedSums, theta: float, covariate_mean: float, bernoulli: bool
) -> Arm:
    """``arm`` (the raw summary of ``sums``) adjusted by ``theta`` around ``covariate_mean``.

    ``bernoulli`` selects the divisor n of a proportion's p(1 - p) for the covariate's
    moments too, so that the adjusted variance is the variance of y - θx. An arm
    without spread in y (no conversions yet) keeps its zero variance: the covariate
    alone would make it look testable. θ = 0 returns ``arm`` itself.
    """
    if theta == 0.0 or arm.mean is None:
        return arm
    mean = finite(arm.mean - theta * (sums.covariate_total / sums.n - covariate_mean))
    if arm.variance is None or arm.variance == 0.0:
        return replace(arm, mean=mean)
    centred = _centred(sums)
    divisor = sums.n if bernoulli else sums.n - 1
    variance = arm.variance + theta * (theta * centred.xx - 2.0 * centred.xy) / divisor
    return replace(arm, mean=mean, variance=finite(max(variance, 0.0)))


def cuped_arms(
    arms: Sequence[Arm], sums: Sequence[CupedSums], bernoulli: bool
) -> tuple[list[Arm], float]:
    """Every arm adjusted with the pooled θ, and that θ.

    ``arms[i]`` is the raw summary of ``sums[i]``; a constant covariate gives θ = 0 and
    the raw arms unchanged.
    """
    theta = pooled_theta(sums)
    units = sum(s.n for s in sums)
    covariate_mean = sum(s.covariate_total for s in sums) / units if units else 0.0
    adjusted = [
        adjusted_arm(arm, arm_sums, theta, covariate_mean, bernoulli)
        for arm, arm_sums in zip(arms, sums, strict=True)
    ]
    return adjusted, theta


def variance_reduction(adjusted: Difference | None, raw: Difference | None) -> float | None:
    """1 - (variance of the adjusted estimate) / (variance of the raw one).

    On the scale the test runs on (a log ratio for relative lifts by default); about
    ρ², the squared correlation of metric and covariate. Negative when the adjustment
    widened the interval, None when either estimate has no variance.
    """
    if adjusted is None or raw is None:
        return None
    return 1.0 - adjusted.variance / raw.variance
