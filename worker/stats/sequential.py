"""Asymptotic confidence sequences: results that stay valid however often they are viewed.

Waudby-Smith et al. 2023 (arXiv:2103.06476), as implemented by gbstats'
``SequentialTwoSidedTTest`` and ``SequentialOneSided*TTest``: a normal mixture with
mixing parameter rho, chosen so the sequence is tightest near ``tuning`` total units.
"""

from __future__ import annotations

import math

from worker.stats.common import Direction, Interval
from worker.stats.frequentist import FrequentistResult, lift_result
from worker.stats.metrics import Difference

DEFAULT_TUNING = 5000.0
"""gbstats' default N*: the total sample size where the sequence is tightest."""

# Above this, expm1(q) == exp(q) to double precision and exp(q) may overflow.
_LOG_EXPM1_SWITCH = 30.0


def sequential_rho(alpha: float, tuning: float, direction: Direction = "two_sided") -> float:
    """Mixing parameter rho for level alpha and tuning N* (eq. 161 of the paper).

    One-sided sequences use 2·alpha, as gbstats does, so alpha must be below 0.5 there.
    """
    level = alpha if direction == "two_sided" else 2.0 * alpha
    if not 0.0 < level < 1.0 or tuning <= 0:
        raise ValueError(f"no confidence sequence for alpha={alpha}, {direction}, N*={tuning}")
    minus_two_log = -2.0 * math.log(level)
    return math.sqrt((minus_two_log + math.log(minus_two_log + 1.0)) / tuning)


def sequential_test(
    diff: Difference,
    alpha: float = 0.05,
    direction: Direction = "two_sided",
    tuning: float = DEFAULT_TUNING,
    rho: float | None = None,
) -> FrequentistResult:
    """Always-valid interval and p-value for the lift at level 1 - alpha.

    ``rho`` defaults to :func:`sequential_rho` of (alpha, tuning, direction); pass the
    design rho explicitly to evaluate the same sequence at another level (e.g. a
    multiplicity-adjusted alpha), so the interval and the p-value stay consistent.
    """
    if rho is None:
        rho = sequential_rho(alpha, tuning, direction)
    se = math.sqrt(diff.variance)
    x = diff.units * rho**2
    spread = 2.0 * (x + 1.0) / x  # variance inflation of the mixture boundary
    z = diff.estimate / se
    halfwidth = se * halfwidth_factor(diff.units, alpha, direction, rho)
    if direction == "two_sided":
        ci: Interval = (diff.estimate - halfwidth, diff.estimate + halfwidth)
        # p = 1 / e-value (eq. 155), in logs so that large evidence cannot overflow.
        log_evalue = z * z / spread - 0.5 * math.log1p(x)
        p_value = math.exp(-log_evalue) if log_evalue > 0 else 1.0
    else:
        toward = z if direction == "greater" else -z
        ci = (
            (diff.estimate - halfwidth, None)
            if direction == "greater"
            else (None, diff.estimate + halfwidth)
        )
        p_value = _one_sided_p_value(toward, x, spread)
    return lift_result(diff, ci, p_value)


def halfwidth_factor(units: float, alpha: float, direction: Direction, rho: float) -> float:
    """The confidence sequence's half-width in standard errors after ``units`` units.

    The always-valid counterpart of the normal quantile (1.96 at alpha = 0.05,
    two-sided); power calculations use it so they match the test that is run.
    """
    x = units * rho**2
    spread = 2.0 * (x + 1.0) / x  # variance inflation of the mixture boundary
    if direction == "two_sided":
        return math.sqrt(spread * (0.5 * math.log1p(x) - math.log(alpha)))
    return math.sqrt(spread * math.log1p(math.sqrt(x + 1.0) / (2.0 * alpha)))


def tuning_for_plan(planned_per_arm: int | None) -> float:
    """N* for a planned sample per arm: the pair's total when both arms reach the plan.

    The sequence is tightest near N* units of the two arms compared (``units`` counts
    both), so a plan of n per arm puts N* at 2n; without a plan, gbstats' default.
    """
    return DEFAULT_TUNING if planned_per_arm is None else 2.0 * planned_per_arm


def _one_sided_p_value(z: float, x: float, spread: float) -> float:
    """Smallest alpha whose one-sided sequence (at the design rho) excludes zero.

    gbstats approximates this root by bisection over [1e-5, 0.4999] and reports those
    end points when the root lies outside; the half-width equation solves for alpha in
    closed form, so here the root is exact everywhere (and 1 when the estimate points
    the other way, since then no level excludes zero).
    """
    q = z * z / spread
    if z <= 0 or q == 0.0:  # q underflows to zero for a vanishing positive z
        return 1.0
    log_expm1_q = (
        math.log(math.expm1(q)) if q < _LOG_EXPM1_SWITCH else q + math.log1p(-math.exp(-q))
    )
    log_p = 0.5 * math.log1p(x) - math.log(2.0) - log_expm1_q
    return math.exp(min(log_p, 0.0))
