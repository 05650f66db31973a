"""Definitions in the native, LaunchDarkly and "Experiments API" shapes (worker/events/adapters.py)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from worker.events.adapters import DefinitionError, detect_shape, parse_definition
from worker.events.experiment import (
    Correction,
    Engine,
    ExperimentDefinition,
    ExperimentStatus,
    GoalType,
)
from worker.events.experiment import TestDirection as Direction

NATIVE: dict[str, Any] = {
    "id": "checkout-button",
    "project_key": "shop",
    "name": "Checkout button",
    "status": "live",
    "variants": [
        {"id": "control", "name": "Control", "is_control": True, "traffic_weight": 0.5},
        {"id": "green", "name": "Green", "traffic_weight": 0.5},
    ],
    "goals": [{"key": "purchase", "name": "Purchase", "primary": True}],
    "stats": {"engine": "frequentist", "confidence_threshold_percent": 90},
}

# LaunchDarkly's "create experiment" body (REST API v2, ExperimentPost).
LAUNCHDARKLY: dict[str, Any] = {
    "name": "Checkout button colour",
    "key": "checkout-button-colour",
    "status": "running",
    "methodology": "frequentist",
    "analysisConfig": {
        "significanceThreshold": "0.05",
        "testDirection": "one-sided",
        "multipleComparisonCorrectionMethod": "benjamini-hochberg",
        "sequentialTestingEnabled": False,
    },
    "iteration": {
        "hypothesis": "A green button sells more",
        "canReshuffleTraffic": True,
        "metrics": [
            {"key": "page-view", "isGroup": False},
            {"key": "purchase", "name": "Purchase", "isGroup": False, "primary": True},
        ],
        "treatments": [
            {
                "name": "Blue (current)",
                "baseline": True,
                "allocationPercent": "60",
                "parameters": [{"flagKey": "checkout-colour", "variationId": "var-blue"}],
            },
            {
                "name": "Green",
                "baseline": False,
                "allocationPercent": "40",
                "parameters": [{"flagKey": "checkout-colour", "variationId": "var-green"}],
            },
        ],
        "flags": {"checkout-colour": {"ruleId": "fallthrough", "flagConfigVersion": 3}},
    },
}

# The generic "Experiments API" create body (seed 004): splitPercentage summing to 100.
EXPERIMENTS_API: dict[str, Any] = {
    "id": "hero-banner",
    "name": "Hero banner",
    "type": "ab_test",
    "status": "running",
    "variants": [
        {"key": "original", "name": "Original", "splitPercentage": 50},
        {"key": "video", "name": "Video", "splitPercentage": 30},
        {"key": "carousel", "name": "Carousel", "splitPercentage": 20},
    ],
    "goals": [
        {"key": "signup", "name": "Sign-up"},
        {"key": "purchase", "name": "Purchase", "primary": True},
    ],
}


def variant_table(experiment: ExperimentDefinition) -> list[tuple[str, bool, float]]:
    return [(v.id, v.is_control, v.traffic_weight) for v in experiment.variants]


def test_shapes_are_detected() -> None:
    assert detect_shape(NATIVE) == "native"
    assert detect_shape(LAUNCHDARKLY) == "launchdarkly"
    assert detect_shape(EXPERIMENTS_API) == "experiments_api"


def test_native_passes_through() -> None:
    experiment = parse_definition(NATIVE)
    assert experiment == ExperimentDefinition.model_validate(NATIVE)
    assert experiment.stats.engine is Engine.FREQUENTIST
    assert experiment.stats.confidence_threshold_percent == 90


def test_native_project_key_comes_from_the_argument_only_when_absent() -> None:
    without = {key: value for key, value in NATIVE.items() if key != "project_key"}
    assert parse_definition(without, "blog").project_key == "blog"
    assert parse_definition(NATIVE, "blog").project_key == "shop"
    with pytest.raises(DefinitionError, match="native definition is invalid at project_key"):
        parse_definition(without)


def test_launchdarkly_is_translated() -> None:
    experiment = parse_definition(LAUNCHDARKLY, "shop")
    assert experiment.id == "checkout-button-colour"
    assert experiment.project_key == "shop"
    assert experiment.name == "Checkout button colour"
    assert experiment.status is ExperimentStatus.LIVE
    assert variant_table(experiment) == [("var-blue", True, 0.6), ("var-green", False, 0.4)]
    assert [v.name for v in experiment.variants] == ["Blue (current)", "Green"]
    assert experiment.control.id == "var-blue"
    assert [(g.key, g.name, g.primary) for g in experiment.goals] == [
        ("page-view", "page-view", False),
        ("purchase", "Purchase", True),
    ]
    assert experiment.stats.engine is Engine.FREQUENTIST
    # LaunchDarkly's significance threshold is alpha as a fraction: 0.05 -> 95 % confidence.
    assert experiment.stats.confidence_threshold_percent == 95
    assert experiment.stats.test_direction is Direction.GREATER
    assert experiment.stats.correction is Correction.BH
    assert experiment.stats.sequential is False


def test_launchdarkly_bayesian_threshold_and_primary_metric_key() -> None:
    payload = copy.deepcopy(LAUNCHDARKLY)
    payload.update(methodology="bayesian", analysisConfig={"bayesianThreshold": "90"})
    del payload["status"]
    for metric in payload["iteration"]["metrics"]:
        metric.pop("primary", None)
    payload["iteration"]["primarySingleMetricKey"] = "page-view"
    experiment = parse_definition(payload, "shop")
    assert experiment.stats.engine is Engine.BAYESIAN
    assert experiment.stats.confidence_threshold_percent == 90
    assert experiment.primary_goal.key == "page-view"
    assert experiment.status is ExperimentStatus.DRAFT


def test_launchdarkly_without_a_primary_metric_uses_the_first() -> None:
    payload = copy.deepcopy(LAUNCHDARKLY)
    for metric in payload["iteration"]["metrics"]:
        metric.pop("primary", None)
    assert parse_definition(payload, "shop").primary_goal.key == "page-view"


def test_experiments_api_is_translated() -> None:
    experiment = parse_definition(EXPERIMENTS_API, "marketing")
    assert experiment.id == "hero-banner"
    assert experiment.project_key == "marketing"
    assert experiment.status is ExperimentStatus.LIVE
    # Without isControl the first variant is the control.
    assert variant_table(experiment) == [
        ("original", True, 0.5),
        ("video", False, 0.3),
        ("carousel", False, 0.2),
    ]
    assert experiment.primary_goal.key == "purchase"
    assert experiment.stats.engine is Engine.BAYESIAN
    assert experiment.stats.confidence_threshold_percent == 95


def test_experiments_api_explicit_control_and_default_goal() -> None:
    payload = copy.deepcopy(EXPERIMENTS_API)
    payload["variants"][2]["isControl"] = True
    del payload["goals"]
    payload["status"] = "paused"
    experiment = parse_definition(payload, "marketing")
    assert experiment.control.id == "carousel"
    assert [v.is_control for v in experiment.variants] == [False, False, True]
    assert [(g.key, g.primary) for g in experiment.goals] == [("conversion", True)]
    assert experiment.status is ExperimentStatus.INACTIVE


def test_experiments_api_keeps_description_audience_dates_flows_and_goal_types() -> None:
    payload = copy.deepcopy(EXPERIMENTS_API)
    payload |= {
        "description": "Hero banner test",
        "audienceId": "returning-visitors",
        "startDate": "2026-12-01T00:00:00+00:00",
        "status": "stopped",
        "goals": [{"key": "purchase", "name": "Purchase", "type": "revenue"}],
    }
    payload["variants"][1]["flowId"] = "flow-7"
    experiment = parse_definition(payload, "marketing")
    assert (experiment.description, experiment.audience_id) == (
        "Hero banner test",
        "returning-visitors",
    )
    assert experiment.started_at == datetime(2026, 12, 1, tzinfo=UTC)
    assert experiment.ended_at is None
    assert [v.flow_id for v in experiment.variants] == [None, "flow-7", None]
    assert [(g.key, g.type) for g in experiment.goals] == [("purchase", GoalType.REVENUE)]
    assert experiment.status is ExperimentStatus.INACTIVE


def test_foreign_ids_are_slugged_into_identifiers() -> None:
    payload = copy.deepcopy(EXPERIMENTS_API)
    payload["id"] = "Hero banner: Q3/2024"
    payload["variants"][1]["key"] = "video:autoplay"
    experiment = parse_definition(payload, "marketing")
    assert experiment.id == "Hero-banner-Q3-2024"
    assert [v.id for v in experiment.variants] == ["original", "video-autoplay", "carousel"]


def with_changes(base: dict[str, Any], change: Any) -> dict[str, Any]:
    payload = copy.deepcopy(base)
    change(payload)
    return payload


@pytest.mark.parametrize(
    "payload, message",
    [
        ([NATIVE], "an experiment definition must be a JSON object"),
        ("checkout", "an experiment definition must be a JSON object"),
        (None, "an experiment definition must be a JSON object"),
        (
            with_changes(
                LAUNCHDARKLY, lambda p: p["iteration"]["treatments"][1].update(baseline=True)
            ),
            "exactly one treatment must have baseline: true",
        ),
        (
            with_changes(
                LAUNCHDARKLY, lambda p: p["iteration"]["treatments"][0].update(baseline=False)
            ),
            "exactly one treatment must have baseline: true",
        ),
        (
            with_changes(LAUNCHDARKLY, lambda p: p["iteration"].update(treatments=[])),
            "iteration.treatments must list at least one treatment",
        ),
        (
            with_changes(LAUNCHDARKLY, lambda p: p["iteration"].update(metrics=[])),
            "iteration.metrics must list at least one metric",
        ),
        (
            with_changes(
                LAUNCHDARKLY,
                lambda p: p["iteration"]["treatments"][1].update(allocationPercent="forty"),
            ),
            "treatment 1 allocationPercent must be a number, got 'forty'",
        ),
        (
            with_changes(EXPERIMENTS_API, lambda p: p["variants"][0].update(splitPercentage=40)),
            "variants' splitPercentage must sum to 100, got 90",
        ),
        (
            with_changes(EXPERIMENTS_API, lambda p: p.update(type="multivariate")),
            "type must be 'ab_test', got 'multivariate'",
        ),
        (
            with_changes(EXPERIMENTS_API, lambda p: p["variants"][1].update(splitPercentage=None)),
            "variant 1 splitPercentage must be a number, got None",
        ),
        (
            with_changes(EXPERIMENTS_API, lambda p: p["variants"][1].update(key="original ")),
            "experiments_api definition is invalid at definition: "
            "Value error, variant ids must be unique",
        ),
        (
            with_changes(NATIVE, lambda p: p["variants"][1].update(is_control=True)),
            "native definition is invalid at definition: "
            "Value error, exactly one variant must have is_control: true",
        ),
        (
            with_changes(NATIVE, lambda p: p["variants"][1].update(id="has space")),
            "native definition is invalid at variants.1.id: String should match pattern",
        ),
    ],
)
def test_bad_definitions_raise_a_clear_error(payload: Any, message: str) -> None:
    with pytest.raises(DefinitionError) as error:
        parse_definition(payload, "shop")
    assert str(error.value).startswith(message)
