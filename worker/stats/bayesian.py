"""Gaussian posterior on a lift (gbstats ``EffectBayesianABTest``) and best-arm odds.

The posterior is Gaussian on the scale the difference is tested on: the lift, or for
a log-ratio relative lift log(treatment / control), where the lift is log-normal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr, ndtr, ndtri

from worker.stats.common import clip_probability, exp_capped
from worker.stats.metrics import Arm, Difference

MONTE_CARLO_DRAWS = 10_000
"""Joint posterior draws for the probability to be best (gbstats' bandit default)."""


@dataclass(frozen=True)
class GaussianPrior:
    """A proper normal prior on the lift, on the scale of the lift it is applied to."""

    mean: float
    variance: float


@dataclass(frozen=True)
class BayesianResult:
    """Posterior summary of a lift; ``risk`` is (control, treatment) expected loss."""

    estimate: float
    sd: float
    ci: tuple[float, float]
    chance_to_win: float
    risk: tuple[float, float]


def absolute_prior(relative_prior: GaussianPrior, control_mean: float) -> GaussianPrior:
    """Rescale a prior stated on the relative lift to the absolute lift.

    Priors are configured on the relative scale (gbstats' ``prior_type="relative"``);
    an absolute analysis multiplies by the control mean, as gbstats does.
    """
    return GaussianPrior(
        mean=relative_prior.mean * abs(control_mean),
        variance=relative_prior.variance * control_mean * control_mean,
    )


def log_ratio_prior(relative_prior: GaussianPrior) -> GaussianPrior:
    """Carry a prior stated on the relative lift to log(1 + lift), by the delta method.

    Needs a prior mean above -100 %, which the request validates.
    """
    scale = 1.0 + relative_prior.mean
    return GaussianPrior(
        mean=math.log1p(relative_prior.mean),
        variance=relative_prior.variance / scale / scale,
    )


def posterior(diff: Difference, prior: GaussianPrior | None) -> tuple[float, float]:
    """Posterior (mean, sd) on the scale of ``diff``; ``None`` is gbstats' flat prior.

    The prior must be on that scale too (:func:`absolute_prior`, :func:`log_ratio_prior`).

    The conjugate update is written with the data's weight v0 / (v + v0) instead of
    precisions 1/v + 1/v0, so a (near-)zero prior variance cannot divide by zero.
    """
    if prior is None:
        return diff.estimate, math.sqrt(diff.variance)
    data_weight = prior.variance / (prior.variance + diff.variance)
    mean = data_weight * diff.estimate + (1.0 - data_weight) * prior.mean
    return mean, math.sqrt(data_weight * diff.variance)


def bayesian_test(
    diff: Difference,
    alpha: float = 0.05,
    prior: GaussianPrior | None = None,
    higher_is_better: bool = True,
) -> BayesianResult | None:
    """Chance to win, (1 - alpha) credible interval and expected losses for a lift.

    For a log-ratio difference the estimate is the posterior median of the lift
    (exp of the log-scale mean, minus one), so its sign always agrees with the chance
    to win; the interval is the log-scale interval mapped back, and the losses are
    expectations of the log-normal lift. None when the posterior is a point mass,
    which happens only when the prior has no variance (e.g. a relative prior rescaled
    by a control mean of zero), as gbstats also declines to report then.
    """
    mean, sd = posterior(diff, prior)
    if sd == 0:
        return None
    z = mean / sd
    lower = mean + sd * float(ndtri(alpha / 2.0))
    upper = mean - sd * float(ndtri(alpha / 2.0))
    losses = expected_relative_loss if diff.log_ratio else expected_loss
    loss_if_control, loss_if_treatment = losses(mean, sd)
    if higher_is_better:
        chance, risk = float(ndtr(z)), (loss_if_control, loss_if_treatment)
    else:
        chance, risk = float(ndtr(-z)), (loss_if_treatment, loss_if_control)
    return BayesianResult(
        estimate=diff.to_lift(mean),
        sd=diff.lift_sd(mean, sd),
        ci=(diff.to_lift(lower), diff.to_lift(upper)),
        chance_to_win=clip_probability(chance),
        risk=risk,
    )


def expected_loss(mean: float, sd: float) -> tuple[float, float]:
    """Expected loss of shipping control, and of shipping treatment, when higher is better.

    E[max(δ, 0)] and E[max(-δ, 0)] for δ ~ N(mean, sd²), in closed form. Equal to
    gbstats' P(δ > 0)·E[δ | δ > 0] and P(δ < 0)·|E[δ | δ < 0]|.
    """
    z = mean / sd
    density = sd * math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    # Clamped: far in a tail the two terms cancel to rounding noise around zero.
    loss_if_control = max(density + mean * float(ndtr(z)), 0.0)
    loss_if_treatment = max(density - mean * float(ndtr(-z)), 0.0)
    return loss_if_control, loss_if_treatment


def expected_relative_loss(mean: float, sd: float) -> tuple[float, float]:
    """:func:`expected_loss` for the relative lift exp(X) - 1 with X ~ N(mean, sd²).

    E[max(e^X - 1, 0)] = e^(mean + sd²/2) Φ((mean + sd²)/sd) - Φ(mean/sd), and
    E[max(1 - e^X, 0)] = Φ(-mean/sd) - e^(mean + sd²/2) Φ(-(mean + sd²)/sd): the
    log-normal partial expectations. Products with Φ are taken in logs (log_ndtr),
    so a far tail cannot overflow where its product would not.
    """
    z = mean / sd
    shifted = (mean + sd * sd) / sd
    log_growth = mean + 0.5 * sd * sd
    gain = exp_capped(log_growth + float(log_ndtr(shifted)))
    shortfall = exp_capped(log_growth + float(log_ndtr(-shifted)))
    # Clamped: far in a tail the two terms cancel to rounding noise around zero.
    loss_if_control = max(gain - float(ndtr(z)), 0.0)
    loss_if_treatment = max(float(ndtr(-z)) - shortfall, 0.0)
    return loss_if_control, loss_if_treatment


def probability_best(
    arms: Sequence[Arm],
    higher_is_better: bool = True,
    draws: int = MONTE_CARLO_DRAWS,
    seed: int = 0,
) -> list[float] | None:
    """Probability that each arm has the best mean, by seeded Monte Carlo.

    Each arm's mean gets the flat-prior posterior N(mean, variance / n) (gbstats'
    bandit model). None when any arm has fewer than two units, since its posterior is
    then undefined. Ties (e.g. two arms without spread and equal means) share the win.
    """
    if not arms:
        return None
    means, sds = [], []
    for arm in arms:
        if arm.mean is None or arm.variance is None or arm.n < 2:
            return None
        means.append(arm.mean)
        sds.append(math.sqrt(arm.variance / arm.n))
    rng = np.random.default_rng(seed)
    samples = rng.standard_normal((draws, len(arms))) * np.array(sds) + np.array(means)
    if not higher_is_better:
        samples = -samples
    is_best = samples == samples.max(axis=1, keepdims=True)
    shares = is_best / is_best.sum(axis=1, keepdims=True)
    return [float(p) for p in shares.mean(axis=0)]
