"""The result document: one query's numbers and statistics for every goal of an experiment.

``worker.results.experiment_result.result_document`` builds it; snapshots store and
publish it, and decisions, every vendor shape, the UI and the CLI read it. Field
order is the order of the published JSON.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.events.experiment import (
    Correction,
    Engine,
    ExperimentStatus,
    ExperimentType,
    GoalType,
    Prior,
    TestDirection,
)
from worker.results.query import CountUnit, Dimension, ResultQuery
from worker.stats.common import Interval
from worker.stats.schema import VariantResult

VisitAnalysis = Literal["clustered", "unclustered"]
"""How per-visit metrics were analysed (``GoalBlock.visit_analysis``)."""

CONTRACT = ConfigDict(frozen=True, extra="forbid")
"""Every contract model is immutable, and lists exactly the fields that are published."""


class FrequentistCheck(BaseModel):
    """The frequentist test of a Bayesian comparison, which decisions gate a winner on."""

    model_config = CONTRACT

    p_value: float | None
    p_value_adjusted: float | None
    ci_adjusted: Interval | None


class HorizonPower(BaseModel):
    """One test's power for a treatment: what it detects now and what it still needs."""

    model_config = CONTRACT

    mde: float | None = Field(
        description="Relative lift detected with the stated power at the current sample; "
        "null until both arms have units."
    )
    units_needed: int | None = Field(
        description="More units (all arms, in the goal's unit; visitors where the goal's "
        "visit_analysis is clustered) until the stated effect reaches the stated power; 0 "
        "once reached, null when no sample reaches it."
    )
    days_needed: float | None = Field(
        description="units_needed at the units per day so far; null when the days "
        "with data are unknown."
    )


class PowerEstimate(BaseModel):
    """Power against the reference, at a fixed horizon and under the confidence sequence."""

    model_config = CONTRACT

    effect: float = Field(
        description="The relative lift planned for (stats.minimum_detectable_effect)."
    )
    power: float = Field(description="The chance to detect that lift the numbers aim at.")
    fixed_horizon: HorizonPower
    sequential: HorizonPower


class VariantStatistics(VariantResult):
    """A treatment compared with the reference, by the experiment's engine.

    The frequentist engine fills ``p_value``/``p_value_adjusted`` and leaves
    ``chance_to_win``/``risk`` null; the Bayesian engine does the opposite, with ``ci``
    the credible interval and ``lift`` the posterior mean. A number undefined for the
    data is null, and so is an interval side that is unbounded. ``frequentist_check``
    is present only in the whole query's blocks of a Bayesian experiment; it is left
    out, not null, everywhere else. ``power`` is left out where the control has no
    positive mean or no spread, or an arm no traffic weight.
    """

    model_config = CONTRACT

    frequentist_check: FrequentistCheck | None = Field(
        default=None,
        exclude_if=lambda check: check is None,
        description="Present for the Bayesian engine only, on the whole query (not segments).",
    )
    power: PowerEstimate | None = Field(
        default=None,
        exclude_if=lambda power: power is None,
        description="Left out where undefined (see stats.minimum_detectable_effect).",
    )


class VariantRow(BaseModel):
    """One variant's numbers on one goal: its totals, then what the document adds."""

    model_config = CONTRACT

    variant_id: str
    visitors: int
    visits: int
    multiple_exposures: int
    conversions: int = Field(description="Visitors with at least min_count goal events.")
    converted_visits: int
    goal_events: int
    goal_events_sum_squares: int = Field(description="Per-visitor sum of squared goal events.")
    orders: int
    revenue: float
    revenue_sum_squares: float = Field(description="Per-visitor sum of squared revenue.")
    # Per-visitor sums of a visitor's V visits, C converted visits, E goal events, R
    # revenue and O orders, in the visitor's entry cohort (0 in documents computed from
    # counters written before they were kept, and in documents stored before that).
    cohort_visits: int = Field(default=0, description="ΣV: visits, by the visitor's entry.")
    cohort_visits_sum_squares: int = Field(default=0, description="ΣV².")
    converted_visits_sum_squares: int = Field(default=0, description="ΣC².")
    visits_converted_visits_product: int = Field(default=0, description="ΣV·C.")
    visits_goal_events_product: int = Field(default=0, description="ΣV·E.")
    visits_revenue_product: float = Field(default=0.0, description="ΣV·R.")
    orders_sum_squares: int = Field(default=0, description="ΣO².")
    revenue_orders_product: float = Field(default=0.0, description="ΣR·O.")
    covariate_sum: float = Field(
        default=0.0, description="ΣX, X the visitor's value of the goal before entry (CUPED)."
    )
    covariate_sum_squares: float = Field(default=0.0, description="ΣX².")
    covariate_product_sum: float = Field(default=0.0, description="ΣX·Y, Y the value after entry.")
    name: str
    is_control: bool
    is_reference: bool = Field(description="The variant the others are compared with.")
    traffic_weight: float = Field(description="Configured share of traffic, from 0 to 1.")
    units: int = Field(description="The denominator: visitors, or visits with the visit unit.")
    conversion_rate: float | None = Field(
        description="Converted units / units; null without units."
    )
    statistics: VariantStatistics | None = Field(
        description="Null for the reference, and in segments analysed without statistics."
    )
    conversion_statistics: VariantStatistics | None = Field(
        default=None,
        exclude_if=lambda statistics: statistics is None,
        description=(
            "Revenue and count goals: the conversion rate (converted units / units) "
            "compared with the reference, beside `statistics` on the goal's value per "
            "unit; left out for conversion goals, the reference and unanalysed segments."
        ),
    )
    revenue_per_order_statistics: VariantStatistics | None = Field(
        default=None,
        exclude_if=lambda statistics: statistics is None,
        description=(
            "Revenue goals: revenue per order (revenue / orders, a ratio with the visitor "
            "as unit) compared with the reference, in a correction family of its own; "
            "left out for other goals, the reference, unanalysed segments, and counters "
            "without per-visitor order sums."
        ),
    )

    cuped_statistics: VariantStatistics | None = Field(
        default=None,
        exclude_if=lambda statistics: statistics is None,
        description=(
            "CUPED: the goal's metric compared with the reference after regression "
            "adjustment on each visitor's value of the goal in the `cuped_days` before "
            "entry (`variance_reduction` says how much narrower it is), beside the raw "
            "`statistics`, in a correction family of its own. Decisions read the raw "
            "statistics. Left out with the visit unit, for the reference, unanalysed "
            "segments, stats.cuped_days 0, and when no visitor has a pre-entry value."
        ),
    )


class GoalBlock(BaseModel):
    """One goal's variants, reference first, with the experiment-wide numbers of the goal."""

    model_config = CONTRACT

    type: GoalType
    unit: CountUnit
    cap: float | None = Field(
        default=None,
        description="The most one visitor's value counts for (the goal's cap): revenue "
        "and goal events are capped at it; null when uncapped.",
    )
    visit_analysis: VisitAnalysis | None = Field(
        default=None,
        description="With the visit unit: `clustered` when per-visit metrics are ratios "
        "with the visitor as the unit sampled (n, and the power section's units, are "
        "visitors); `unclustered` when the counters lack per-visitor visit sums (written "
        "before they were kept) and visits are analysed as independent, which overstates "
        "significance when a visitor's visits resemble each other. Null with the visitor "
        "unit.",
    )
    cuped_theta: float | None = Field(
        default=None,
        description="CUPED: the pooled regression slope of the post-entry value on the "
        "pre-entry one; null when no CUPED analysis was made.",
    )
    variants: list[VariantRow]
    probability_best: dict[str, float] | None = Field(
        description="Variant id → chance to be the best arm; null when undefined or not analysed."
    )
    bandit_weights: dict[str, float] | None = Field(
        description="Variant id → Thompson-sampling weight; null when not analysed."
    )
    bandit_updated: bool = Field(description="Whether the bandit weights moved from the split.")


class SegmentResult(BaseModel):
    """The sample-ratio checks and goal blocks of one breakdown segment."""

    model_config = CONTRACT

    srm_p_value: float | None
    srm_sequential_p_value: float | None
    srm_alarm: bool
    goals: dict[str, GoalBlock] = Field(description="Goal key → its block.")


class AnalysisSettings(BaseModel):
    """The statistics settings the document was analysed with."""

    model_config = CONTRACT

    engine: Engine
    confidence_threshold_percent: float
    alpha: float = Field(description="The significance level: 1 - confidence threshold.")
    test_direction: TestDirection
    correction: Correction
    sequential: bool
    sequential_tuning: int
    planned_sample_size: int | None
    prior: Prior | None = Field(
        default=None,
        description="Bayesian engine: the proper Gaussian prior on the relative lift from "
        "the definition; null for a flat prior (and for the frequentist engine).",
    )
    cuped_days: int = Field(
        default=0, description="CUPED covariate window before entry, in days (0: off)."
    )
    minimum_detectable_effect: float | None = Field(
        default=None, description="The relative lift the power numbers plan for."
    )


class ResultDocument(BaseModel):
    """The result of one query for every goal of an experiment.

    ``srm_*`` and ``goals`` describe the whole query; with a breakdown, ``segments``
    holds the same per segment (empty without one).
    """

    model_config = CONTRACT

    experiment_id: str
    name: str
    status: ExperimentStatus
    type: ExperimentType
    query: ResultQuery
    goal: str = Field(description="The queried goal's key (the primary goal unless asked).")
    primary_goal: str
    reference_variant: str
    settings: AnalysisSettings
    srm_p_value: float | None = Field(description="Chi-square test of the configured split.")
    srm_sequential_p_value: float | None = Field(
        description="Anytime-valid test of the split, the one the alarm is raised on."
    )
    srm_alarm: bool
    goals: dict[str, GoalBlock] = Field(description="Goal key → its block.")
    breakdown: Dimension | None
    segments: dict[str, SegmentResult] = Field(description="Breakdown value → its result.")
