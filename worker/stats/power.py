"""Power: the smallest relative lift a test detects now, and the sample a stated lift needs.

A normal approximation on the relative lift under the null (both arms with the
control's mean and per-unit variance), so the lift's standard error is
sqrt(σ² (1/n_c + 1/n_t)) / |μ| (the delta method; the log ratio the tests run on has
the same one at zero lift). A test detects a lift δ with probability ``power`` when
δ = (c + z_power) · se, where c is the test's critical value in standard errors:
the normal quantile at a fixed horizon, and the confidence sequence's half-width
(:func:`~worker.stats.sequential.halfwidth_factor`, the one the sequential test uses)
otherwise. For the sequential test this is the power of a single look at that
sample; looking earlier as well can only add detections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from scipy.optimize import brentq
from scipy.special import ndtri

from worker.stats.analysis import arm_from_input
from worker.stats.common import Direction
from worker.stats.schema import AnalysisRequest
from worker.stats.sequential import halfwidth_factor, sequential_rho

DEFAULT_POWER = 0.8
"""The usual target: a real effect of the stated size is detected 4 times in 5."""

DEFAULT_EFFECT = 0.05
"""The relative lift power is planned for when the definition states none (+5 %)."""

# Bracket for the sequential sample search: far beyond any real experiment.
_MAX_UNITS = 1e15


@dataclass(frozen=True)
class Design:
    """What power depends on besides the sample: the control's per-unit mean and
    variance, the two arms' shares of all units, and the test."""

    mean: float
    variance: float
    control_share: float
    treatment_share: float
    alpha: float
    direction: Direction
    sequential: bool
    tuning: float


def critical_value(design: Design, units: float) -> float:
    """The test's rejection threshold in standard errors with ``units`` in the two arms."""
    if design.sequential:
        rho = sequential_rho(design.alpha, design.tuning, design.direction)
        return halfwidth_factor(units, design.alpha, design.direction, rho)
    tail = design.alpha / 2.0 if design.direction == "two_sided" else design.alpha
    return -float(ndtri(tail))


def minimum_detectable_effect(
    design: Design, control_units: float, treatment_units: float, power: float = DEFAULT_POWER
) -> float:
    """Relative lift detected with probability ``power`` at this sample (per arm units)."""
    se = math.sqrt(design.variance * (1.0 / control_units + 1.0 / treatment_units))
    se /= abs(design.mean)
    return (critical_value(design, control_units + treatment_units) + float(ndtri(power))) * se


# Treatments with equal shares against one control share one design: a document of
# k arms would otherwise solve the same sequential equation k - 1 times.
@lru_cache(maxsize=256)
def units_needed(design: Design, effect: float, power: float = DEFAULT_POWER) -> float:
    """Total units (all arms, split by the shares) at which ``effect`` reaches ``power``.

    At a fixed horizon this is the textbook closed form; the sequential threshold grows
    with the sample, so there the equation is solved numerically (the detectable
    effect falls monotonically with the sample, so the root is unique).
    """
    spread = 1.0 / design.control_share + 1.0 / design.treatment_share
    if not design.sequential:
        # The fixed-horizon threshold does not depend on the sample.
        z = critical_value(design, 0.0) + float(ndtri(power))
        return z * z * design.variance * spread / (effect * design.mean) ** 2

    def excess(log_total: float) -> float:
        total = math.exp(log_total)
        mde = minimum_detectable_effect(
            design, total * design.control_share, total * design.treatment_share, power
        )
        return math.log(mde / effect)

    # Two units in the smaller arm: the least a variance estimate needs.
    low = math.log(2.0 / min(design.control_share, design.treatment_share))
    high = math.log(_MAX_UNITS)
    if excess(low) <= 0.0:
        return math.exp(low)
    if excess(high) > 0.0:
        return math.inf
    return math.exp(brentq(excess, low, high, xtol=1e-12))


@dataclass(frozen=True)
class PowerNumbers:
    """One test's power for a treatment against the control.

    ``mde``: relative lift detected now (None until both arms have units);
    ``units_needed``: more units across all arms until the stated effect reaches the
    power (0 once reached; infinite when no sample reaches it).
    """

    mde: float | None
    units_needed: float


@dataclass(frozen=True)
class TreatmentPower:
    """A treatment's power at a fixed horizon and under the confidence sequence."""

    fixed_horizon: PowerNumbers
    sequential: PowerNumbers


def treatment_power(
    request: AnalysisRequest, effect: float = DEFAULT_EFFECT, power: float = DEFAULT_POWER
) -> dict[str, TreatmentPower | None]:
    """Treatment id → its power against the control for a request's goal.

    None where power is undefined: a control without a positive mean or any spread
    (a relative lift needs both), or an arm weighted 0. Arms share future units as
    the request's weights say (equally without weights), over all its variants.
    """
    arms = [arm_from_input(variant, request.metric) for variant in request.variants]
    weights = request.weights or [1.0] * len(arms)
    shares = [weight / sum(weights) for weight in weights]
    current = sum(arm.n for arm in arms)
    control_index = next(i for i, v in enumerate(request.variants) if v.control)
    control = arms[control_index]
    treatments = [i for i in range(len(arms)) if i != control_index]
    mean, variance = control.mean, control.variance
    if mean is None or variance is None or mean <= 0 or variance <= 0:
        return {request.variants[i].id: None for i in treatments}
    result: dict[str, TreatmentPower | None] = {}
    for index in treatments:
        if shares[control_index] == 0 or shares[index] == 0:
            result[request.variants[index].id] = None
            continue
        numbers = []
        for sequential in (False, True):
            design = Design(
                mean=mean,
                variance=variance,
                control_share=shares[control_index],
                treatment_share=shares[index],
                alpha=request.alpha,
                direction=request.test_direction,
                sequential=sequential,
                tuning=request.sequential_tuning,
            )
            treatment_units = arms[index].n
            mde = (
                minimum_detectable_effect(design, control.n, treatment_units, power)
                if control.n > 0 and treatment_units > 0
                else None
            )
            needed = max(0.0, units_needed(design, effect, power) - current)
            numbers.append(PowerNumbers(mde=mde, units_needed=needed))
        result[request.variants[index].id] = TreatmentPower(
            fixed_horizon=numbers[0], sequential=numbers[1]
        )
    return result
