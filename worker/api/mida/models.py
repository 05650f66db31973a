"""Response bodies of the Mida-compatible API, as Mida documents them (plus extensions).

Field names, nesting and units follow Mida's public API v2: rates and improvements in
percent, ``status`` as a label in results and as a code (9/1/0) in listings. Ids are
this system's identifiers (strings) where Mida uses numbers. Fields with a default
are optional: routes serialise with ``exclude_unset``, so an optional field is absent
unless it was set, as ``improvement`` is absent on the control in Mida's examples.
Extensions (``goal``, ``statistics``, ``srm_p_value``, ``total``...) are additive.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Interval = tuple[float | None, float | None]


class GoalInfo(BaseModel):
    """A goal as Mida describes it; ``goal_value`` is the event name (our goal key)."""

    goal_key: str
    goal_name: str
    goal_type: str
    goal_value: str


class Statistics(BaseModel):
    """The configured engine's numbers for a variant against the control (extension).

    Bayesian: ``chance_to_beat_control`` and ``expected_loss`` in percent, the
    ``credible_interval`` of the relative lift in percent. Frequentist: ``p_value``
    (a probability) and the ``confidence_interval`` of the relative lift in percent.
    ``sequential`` says whether always-valid (sequential) inference was used.
    ``interval_note`` is set when the interval is shown clipped at -100 %.
    """

    engine: Literal["bayesian", "frequentist"]
    sequential: bool
    chance_to_beat_control: float | None = None
    expected_loss: float | None = None
    credible_interval: Interval | None = None
    p_value: float | None = None
    confidence_interval: Interval | None = None
    interval_note: str | None = None


class ResultVariant(BaseModel):
    """One variant of a result; ``improvement`` only on treatments when the control
    converted (it is relative to the control's conversion rate).

    ``statistics`` always describe the metric of ``improvement``, the conversion rate.
    A revenue goal adds ``revenue_per_visitor_statistics`` for
    ``revenue_per_visitor_improvement``, a count goal ``events_per_visitor_improvement``
    with ``events_per_visitor_statistics``: the goal's own metric, the one decisions
    read. A revenue goal also adds ``aov_improvement`` with ``aov_statistics``. With
    CUPED, ``cuped_improvement`` and ``cuped_statistics`` adjust the goal's own metric.
    """

    variant_id: str
    name: str
    visitors: int
    conversions: int
    conversion_rate: float = Field(description="Percent of visitors who converted.")
    improvement: float | None = Field(None, description="Relative lift in percent.")
    revenue: float
    orders: int
    rpv: float = Field(description="Revenue per visitor.")
    aov: float = Field(description="Average order value.")
    revenue_per_visitor_improvement: float | None = Field(
        None, description="Relative RPV lift in percent."
    )
    revenue_per_visitor_statistics: Statistics | None = Field(
        None, description="Revenue goals: the statistics of the RPV lift."
    )
    events_per_visitor_improvement: float | None = Field(
        None, description="Count goals: relative lift of goal events per visitor, percent."
    )
    events_per_visitor_statistics: Statistics | None = Field(
        None, description="Count goals: the statistics of the events-per-visitor lift."
    )
    aov_improvement: float | None = Field(
        None, description="Revenue goals: relative lift of the average order value, percent."
    )
    aov_statistics: Statistics | None = Field(
        None,
        description="Revenue goals: the statistics of the average-order-value lift "
        "(revenue per order, with the visitor as unit).",
    )
    cuped_improvement: float | None = Field(
        None,
        description="CUPED: the relative lift in percent of the goal's own metric (conversion "
        "rate, RPV or events per visitor), adjusted by each visitor's value of the goal "
        "before entry; with `cuped_statistics` and `cuped_variance_reduction`.",
    )
    cuped_statistics: Statistics | None = Field(
        None, description="CUPED: the statistics of `cuped_improvement`."
    )
    cuped_variance_reduction: float | None = Field(
        None, description="CUPED: how much the adjustment shrank the lift's variance, percent."
    )
    traffic_weight: float = Field(description="Configured share of traffic, percent.")
    variant_status: Literal["active", "paused"]
    is_control: bool
    statistics: Statistics | None = None


class Breakdown(BaseModel):
    """One value of the breakdown dimension (``criteria``) and its numbers; variants have
    the same fields as the result's, their lifts against the control in the segment."""

    criteria: str
    total_visitors: int
    total_conversions: int
    conversion_rate: float
    variants: list[ResultVariant]


class ResultResponse(BaseModel):
    """``GET .../experiment/{test_id}/result``."""

    success: Literal[True]
    test_id: str
    test_name: str
    status: Literal["draft", "live", "inactive"]
    status_code: Literal[9, 1, 0]
    start_date: str | None
    end_date: str | None
    days_running: int
    primary_goal: GoalInfo
    goal: GoalInfo = Field(description="The goal these numbers are for (extension).")
    stats_engine: Literal["bayesian", "frequentist"]
    confidence_threshold_percent: float
    total_visitors: int
    total_conversions: int
    has_revenue: bool
    total_revenue: float | None = None
    total_orders: int | None = None
    rpv: float | None = None
    aov: float | None = None
    currency: str | None = None
    srm_p_value: float | None
    variants: list[ResultVariant]
    breakdown_by: str | None = None
    breakdowns: list[Breakdown] | None = None


class MetricRow(BaseModel):
    """One secondary goal of ``/metrics``, with the same variant rows as a result."""

    goal: GoalInfo
    total_visitors: int
    total_conversions: int
    variants: list[ResultVariant]


class MetricsResponse(BaseModel):
    """``GET .../experiment/{test_id}/metrics``."""

    success: Literal[True]
    test_id: str
    test_name: str
    metrics: list[MetricRow]


class TimeseriesVariant(BaseModel):
    """One variant's numbers for the visitors who entered on one day."""

    variant_id: str
    name: str
    is_control: bool
    visitors: int
    conversions: int
    conversion_rate: float
    revenue: float
    orders: int


class TimeseriesRow(BaseModel):
    """One day (in the query's timezone) of the series."""

    date: str
    variants: list[TimeseriesVariant]


class TimeseriesResponse(BaseModel):
    """``GET .../experiment/{test_id}/timeseries``: daily rows per variant, each day the
    cohort that entered on it."""

    success: Literal[True]
    test_id: str
    test_name: str
    goal: GoalInfo
    tz: int
    rows: list[TimeseriesRow]


class DistributionVariant(BaseModel):
    """A variant's configured traffic share (percent; None under a bandit)."""

    variant_id: str
    name: str
    traffic_weight: float | None
    variant_status: Literal["active", "paused"]


class DistributionResponse(BaseModel):
    """``GET .../experiment/{test_id}/distribution``."""

    success: Literal[True]
    test_id: str
    test_name: str
    status: Literal["draft", "live", "inactive"]
    traffic_allocation: float
    distribution_mode: Literal["equal", "custom", "mab"]
    is_mab: bool
    variants: list[DistributionVariant]


class ExperimentSummary(BaseModel):
    """One row of ``/experiments``."""

    test_id: str
    test_name: str
    url: str | None
    status: Literal[9, 1, 0]
    is_completed: Literal[0, 1]
    created_at: str | None
    updated_at: str | None


class ExperimentList(BaseModel):
    """``GET /v2/project/{project_key}/experiments``; ``total`` counts every page."""

    success: Literal[True]
    company_id: str
    count: int
    total: int
    limit: int
    offset: int
    experiments: list[ExperimentSummary]


class DetailVariant(BaseModel):
    """A variant in the experiment details."""

    variant_id: str
    name: str
    is_control: bool
    traffic_weight: float


class Configuration(BaseModel):
    """Traffic and statistics settings of an experiment."""

    traffic_allocation: float
    confidence_interval: float
    stats_engine: Literal["bayesian", "frequentist"]
    sequential: bool


class Targeting(BaseModel):
    """Targeting rules (empty lists: everyone); assignment happens upstream here."""

    devices: list[str]
    browsers: list[str]
    countries: list[str]


class ExperimentDetail(BaseModel):
    """The ``experiment`` object of the details response."""

    test_id: str
    test_name: str
    url: str | None
    status: Literal[9, 1, 0]
    status_label: Literal["draft", "live", "inactive"]
    created_at: str | None
    updated_at: str | None
    goal_profile_id: str
    variants: list[DetailVariant]
    configuration: Configuration
    targeting: Targeting
    primary_goal: GoalInfo
    secondary_goals: list[GoalInfo]


class ExperimentDetailsResponse(BaseModel):
    """``GET /v2/project/{project_key}/experiment/{test_id}``."""

    success: Literal[True]
    experiment: ExperimentDetail


class ShareLinkResponse(BaseModel):
    """``GET | POST | DELETE .../experiment/{test_id}/share-link``."""

    success: Literal[True]
    test_id: str
    company_id: str
    share_link: str | None
    is_public: bool
    expires_at: str | None
