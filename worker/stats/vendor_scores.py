"""The headline numbers of other products, so their dashboards read our results unchanged."""

from __future__ import annotations


def reliability(one_sided_p_value: float | None) -> float | None:
    """Kameleoon's ``reliability``: 1 - the one-sided p-value that the variant is better.

    Under a Bayesian engine Kameleoon reports the probability to beat the reference
    instead, which is the posterior chance to win itself and needs no conversion.
    """
    return None if one_sided_p_value is None else 1.0 - one_sided_p_value


def improvement(relative_lift: float | None) -> float | None:
    """Mida's ``improvement``: the relative lift over the control, in percent."""
    return None if relative_lift is None else 100.0 * relative_lift
