"""Sample-ratio mismatch: does observed traffic match the configured split?"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import chdtrc, gammaln

from worker.stats.common import clip_probability

DEFAULT_SRM_THRESHOLD = 0.001
"""p-values below this raise the SRM alarm (GrowthBook's and most vendors' default)."""

PRIOR_CONCENTRATION = 100.0
"""k of the Dirichlet prior k * weights of the sequential test (savvi's default)."""


def srm_p_value(counts: Sequence[int], weights: Sequence[float] | None = None) -> float | None:
    """Chi-square goodness-of-fit p-value of the counts against the weights.

    ``weights`` need not sum to one; None means an equal split. Units in an arm whose
    weight is zero are an unambiguous mismatch (p = 0), also when a single weighted arm
    is left (weights [1, 0]); gbstats skips such arms instead, which would hide exactly
    that failure. Otherwise None is returned when there is nothing to test: fewer than
    two arms with positive weight, or no units.
    """
    tested = _tested_arms(counts, weights)
    if not isinstance(tested, list):
        return tested
    weight_total = sum(share for _, share in tested)
    tested_total = sum(count for count, _ in tested)
    statistic = 0.0
    for count, share in tested:
        expected = share / weight_total * tested_total
        statistic += (count - expected) * (count - expected) / expected
    # chdtrc is what scipy.stats.chi2.sf evaluates, without its generic-distribution
    # overhead (a document tests the split several times).
    return clip_probability(float(chdtrc(len(tested) - 1, statistic)))


def sequential_srm_p_value(
    counts: Sequence[int],
    weights: Sequence[float] | None = None,
    concentration: float = PRIOR_CONCENTRATION,
) -> float | None:
    """Anytime-valid SRM p-value (Lindon & Malek 2022, Dirichlet-multinomial Bayes factor).

    The worker tests the split at every results interval; a chi-square p-value read
    that often alarms on a correct split sooner or later. Under the configured split
    this p-value falls below a threshold *at any look* with probability at most the
    threshold (Ville's inequality), so it can be checked every interval forever.
    Same None / zero-weight conventions as `srm_p_value`.
    """
    tested = _tested_arms(counts, weights)
    if not isinstance(tested, list):
        return tested
    observed = np.array([count for count, _ in tested], dtype=float)
    null = np.array([share for _, share in tested], dtype=float)
    null /= null.sum()
    prior = concentration * null
    log_marginal = (
        gammaln(prior.sum())
        - gammaln(prior.sum() + observed.sum())
        + float(np.sum(gammaln(prior + observed) - gammaln(prior)))
    )
    log_bayes_factor = log_marginal - float(np.sum(observed * np.log(null)))
    return clip_probability(float(np.exp(min(0.0, -log_bayes_factor))))


def _tested_arms(
    counts: Sequence[int], weights: Sequence[float] | None
) -> list[tuple[int, float]] | float | None:
    """The (count, weight) pairs to test, or the p-value when no test is needed.

    Units in a zero-weight arm decide before anything else (p = 0): they are a
    mismatch however many weighted arms remain, even a single one. Otherwise None
    when there is nothing to test: no units, or fewer than two weighted arms.
    """
    shares = list(weights) if weights is not None else [1.0] * len(counts)
    if sum(counts) <= 0:
        return None
    if any(count > 0 for count, share in zip(counts, shares, strict=True) if share <= 0):
        return 0.0
    tested = [(count, share) for count, share in zip(counts, shares, strict=True) if share > 0]
    return tested if len(tested) >= 2 else None


def srm_alarm(p_value: float | None, threshold: float = DEFAULT_SRM_THRESHOLD) -> bool:
    """True when the SRM p-value is defined and below the threshold."""
    return p_value is not None and p_value < threshold
