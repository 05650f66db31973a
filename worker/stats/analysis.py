"""Orchestration: a validated request in, plain result data out, via the pure functions.

This is the one entry point the CLI (``python -m worker stats``) and the worker share,
so a number seen in one is the number the other computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from worker.stats.bandits import thompson_weights
from worker.stats.bayesian import (
    BayesianResult,
    GaussianPrior,
    absolute_prior,
    bayesian_test,
    log_ratio_prior,
    probability_best,
)
from worker.stats.common import (
    Direction,
    Interval,
    LiftFallback,
    LiftType,
    finite,
    improvement_direction,
)
from worker.stats.corrections import Correction, adjust_p_values, adjusted_alpha
from worker.stats.cuped import CupedSums, cuped_arms, variance_reduction
from worker.stats.frequentist import FrequentistResult, t_test
from worker.stats.metrics import (
    Arm,
    Difference,
    difference,
    lift,
    lift_type_of,
    mean_arm,
    proportion_arm,
    ratio_arm,
)
from worker.stats.schema import (
    AnalysisRequest,
    AnalysisResult,
    Metric,
    VariantInput,
    VariantResult,
)
from worker.stats.sequential import sequential_rho, sequential_test
from worker.stats.srm import srm_alarm, srm_p_value
from worker.stats.vendor_scores import improvement, reliability


@dataclass(frozen=True)
class _Comparison:
    """A treatment against the control, before the multiple-comparison correction."""

    variant_id: str
    lift_type: LiftType
    lift_fallback: LiftFallback | None
    diff: Difference | None
    observed_lift: float | None
    frequentist: FrequentistResult | None
    bayesian: BayesianResult | None
    reliability: float | None
    improvement: float | None
    variance_reduction: float | None


@dataclass(frozen=True)
class _Draft:
    """One goal analysed up to (not including) the correction across the family.

    ``arms`` are the arms every test reads: CUPED-adjusted when the request asks,
    with ``theta`` their slope (None without CUPED).
    """

    request: AnalysisRequest
    arms: list[Arm]
    comparisons: list[_Comparison]
    theta: float | None


def analyze(request: AnalysisRequest) -> AnalysisResult:
    """Analyse one goal of one experiment; ``request.correction`` spans its treatments."""
    return analyze_goals([request], request.correction)[0]


def analyze_goals(
    requests: Sequence[AnalysisRequest], correction: Correction
) -> list[AnalysisResult]:
    """Analyse several goals of one experiment as one family of comparisons.

    Every defined (goal, treatment) p-value counts as one comparison for
    ``correction``; each request's own ``correction`` field is not used here.
    """
    drafts = [_draft(request) for request in requests]
    raw = [c.frequentist.p_value if c.frequentist else None for d in drafts for c in d.comparisons]
    family_size = sum(p is not None for p in raw)
    adjusted = iter(adjust_p_values(raw, correction))
    return [
        _finish(draft, [next(adjusted) for _ in draft.comparisons], correction, family_size)
        for draft in drafts
    ]


def arm_from_input(variant: VariantInput, metric: Metric) -> Arm:
    """The arm summary for a variant's sufficient statistics under a metric type.

    The request validator guarantees the fields each metric needs, hence the bare
    ``or 0.0`` defaults that only narrow the optional types.
    """
    if metric == "proportion":
        return proportion_arm(variant.n, variant.sum)
    if metric == "mean":
        return mean_arm(variant.n, variant.sum, variant.sum_squares or 0.0)
    return ratio_arm(
        variant.n,
        variant.sum,
        variant.sum_squares or 0.0,
        variant.denominator_sum or 0.0,
        variant.denominator_sum_squares or 0.0,
        variant.main_denominator_sum_product or 0.0,
    )


def cuped_sums_from_input(variant: VariantInput, metric: Metric) -> CupedSums:
    """A variant's metric and covariate sums, which the request validator guarantees
    whenever ``cuped`` is set (the ``or 0.0`` defaults only narrow the optional types)."""
    return CupedSums(
        n=variant.n,
        total=variant.sum,
        # y is 0/1 for a proportion, so Σy² is Σy.
        sum_squares=variant.sum if metric == "proportion" else variant.sum_squares or 0.0,
        covariate_total=variant.covariate_sum or 0.0,
        covariate_sum_squares=variant.covariate_sum_squares or 0.0,
        cross_sum=variant.covariate_product_sum or 0.0,
    )


def _draft(request: AnalysisRequest) -> _Draft:
    raw = [arm_from_input(variant, request.metric) for variant in request.variants]
    arms, theta = raw, None
    if request.cuped:
        sums = [cuped_sums_from_input(variant, request.metric) for variant in request.variants]
        arms, theta = cuped_arms(raw, sums, bernoulli=request.metric == "proportion")
    control_index = next(i for i, variant in enumerate(request.variants) if variant.control)
    comparisons = [
        _compare(
            request,
            (arms[control_index], arm),
            (raw[control_index], raw[i]) if request.cuped else None,
            variant.id,
        )
        for i, (variant, arm) in enumerate(zip(request.variants, arms, strict=True))
        if i != control_index
    ]
    return _Draft(request=request, arms=arms, comparisons=comparisons, theta=theta)


def _compare(
    request: AnalysisRequest,
    pair: tuple[Arm, Arm],
    raw_pair: tuple[Arm, Arm] | None,
    variant_id: str,
) -> _Comparison:
    """Control against treatment (``pair``); ``raw_pair`` is the unadjusted pair under
    CUPED, read only for the variance reduction."""
    control, treatment = pair
    lift_type, fallback = lift_type_of(
        control, treatment, request.difference, request.relative_method
    )
    relative = lift_type == "relative"
    diff = difference(control, treatment, relative, request.relative_method)
    reduction = (
        variance_reduction(diff, difference(*raw_pair, relative, request.relative_method))
        if raw_pair is not None
        else None
    )
    frequentist: FrequentistResult | None = None
    bayesian: BayesianResult | None = None
    if request.engine == "bayesian":
        bayesian = _bayesian(request, control, diff, lift_type)
        # Kameleoon's Bayesian reliability is the chance to beat the reference itself.
        score = bayesian.chance_to_win if bayesian else None
    elif diff is not None:
        frequentist = _frequentist(request, diff, request.alpha, request.test_direction)
        better = improvement_direction(request.test_direction)
        one_sided = (
            frequentist
            if request.test_direction == better
            else _frequentist(request, diff, request.alpha, better)
        )
        score = reliability(one_sided.p_value)
    else:
        score = None
    return _Comparison(
        variant_id=variant_id,
        lift_type=lift_type,
        lift_fallback=fallback,
        diff=diff,
        observed_lift=lift(control, treatment, relative),
        frequentist=frequentist,
        bayesian=bayesian,
        reliability=score,
        improvement=improvement(lift(control, treatment, relative=True)),
        variance_reduction=reduction,
    )


def _frequentist(
    request: AnalysisRequest, diff: Difference, alpha: float, direction: Direction
) -> FrequentistResult:
    """The configured frequentist test at ``alpha`` (sequential or fixed-horizon)."""
    if not request.sequential:
        return t_test(diff, alpha, direction)
    # rho is fixed by the design alpha, so an adjusted alpha moves along the same sequence.
    rho = sequential_rho(request.alpha, request.sequential_tuning, direction)
    return sequential_test(diff, alpha, direction, rho=rho)


def _bayesian(
    request: AnalysisRequest, control: Arm, diff: Difference | None, lift_type: LiftType
) -> BayesianResult | None:
    if diff is None or control.mean is None:
        return None
    prior = (
        GaussianPrior(mean=request.prior.mean, variance=request.prior.variance)
        if request.prior
        else None
    )
    # The prior is stated on the relative lift; carry it to the scale tested on.
    if prior is not None and lift_type == "absolute":
        prior = absolute_prior(prior, control.mean)
    elif prior is not None and diff.log_ratio:
        prior = log_ratio_prior(prior)
    return bayesian_test(
        diff,
        alpha=request.alpha,
        prior=prior,
        higher_is_better=request.test_direction != "less",
    )


def _finish(
    draft: _Draft,
    adjusted_p_values: list[float | None],
    correction: Correction,
    family_size: int,
) -> AnalysisResult:
    request = draft.request
    ids = [variant.id for variant in request.variants]
    higher_is_better = request.test_direction != "less"
    srm = srm_p_value([variant.n for variant in request.variants], request.weights)
    best = probability_best(draft.arms, higher_is_better=higher_is_better)
    bandit = thompson_weights(
        draft.arms,
        current_weights=request.weights,
        min_weight=request.bandit_min_weight,
        min_units=request.bandit_min_units,
        higher_is_better=higher_is_better,
    )
    return AnalysisResult(
        control=next(variant.id for variant in request.variants if variant.control),
        variants=[
            _variant_result(request, comparison, p_adjusted, correction, family_size)
            for comparison, p_adjusted in zip(draft.comparisons, adjusted_p_values, strict=True)
        ],
        srm_p_value=srm,
        srm_alarm=srm_alarm(srm, request.srm_threshold),
        probability_best=dict(zip(ids, best, strict=True)) if best is not None else None,
        bandit_weights=dict(zip(ids, bandit.weights, strict=True)),
        bandit_updated=bandit.updated,
        cuped_theta=draft.theta,
    )


def _variant_result(
    request: AnalysisRequest,
    comparison: _Comparison,
    p_adjusted: float | None,
    correction: Correction,
    family_size: int,
) -> VariantResult:
    scores = (_finite(comparison.reliability), _finite(comparison.improvement))
    test, posterior = comparison.frequentist, comparison.bayesian
    if test is not None and comparison.diff is not None:
        ci_adjusted = test.ci
        if correction != "none" and p_adjusted is not None:
            level = adjusted_alpha(request.alpha, test.p_value, p_adjusted, family_size)
            ci_adjusted = _frequentist(request, comparison.diff, level, request.test_direction).ci
        return VariantResult(
            id=comparison.variant_id,
            lift_type=comparison.lift_type,
            lift_fallback=comparison.lift_fallback,
            lift=_finite(test.estimate),
            ci=_interval(test.ci),
            ci_adjusted=_interval(ci_adjusted),
            se=_finite(test.se),
            p_value=test.p_value,
            p_value_adjusted=p_adjusted,
            reliability=scores[0],
            improvement=scores[1],
            variance_reduction=_finite(comparison.variance_reduction),
        )
    if posterior is not None:
        return VariantResult(
            id=comparison.variant_id,
            lift_type=comparison.lift_type,
            lift_fallback=comparison.lift_fallback,
            lift=_finite(posterior.estimate),
            ci=_interval(posterior.ci),
            # Corrections adjust p-values; a posterior has none, so nothing changes.
            ci_adjusted=_interval(posterior.ci),
            se=_finite(posterior.sd),
            chance_to_win=posterior.chance_to_win,
            risk=_finite_pair(posterior.risk),
            reliability=scores[0],
            improvement=scores[1],
            variance_reduction=_finite(comparison.variance_reduction),
        )
    # No inference is possible; the observed lift is still reported when defined.
    return VariantResult(
        id=comparison.variant_id,
        lift_type=comparison.lift_type,
        lift_fallback=comparison.lift_fallback,
        lift=_finite(comparison.observed_lift),
        reliability=scores[0],
        improvement=scores[1],
        variance_reduction=_finite(comparison.variance_reduction),
    )


def _finite(value: float | None) -> float | None:
    return None if value is None else finite(value)


def _finite_pair(pair: tuple[float, float]) -> tuple[float, float] | None:
    """Both values, or None when either overflowed (a log-normal loss can)."""
    first, second = finite(pair[0]), finite(pair[1])
    return None if first is None or second is None else (first, second)


def _interval(ci: Interval) -> Interval:
    return (_finite(ci[0]), _finite(ci[1]))
