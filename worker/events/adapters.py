"""Experiment definitions in other products' create shapes, translated to the native one.

Accepted: the native shape; LaunchDarkly's create-experiment payload (`iteration`
with `treatments` and `metrics`); the generic "Experiments API" payload (`variants`
with `splitPercentage`, `type: ab_test`). Bad input raises `DefinitionError` with a
sentence saying what is wrong.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from worker.events.experiment import ExperimentDefinition


class DefinitionError(ValueError):
    """The file is not a valid experiment definition in any accepted shape."""


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.\-]+", "-", text.strip()).strip("-")
    return slug[:80] or "x"


def _percent(value: Any, where: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise DefinitionError(f"{where} must be a number, got {value!r}") from error


_SIGNIFICANCE = "analysisConfig.significanceThreshold"
_HIGHEST_LEVEL = Decimal("0.5")  # a confidence threshold must stay above 50 %


def _confidence_from_significance(value: Any) -> float:
    """LaunchDarkly's ``significanceThreshold`` as our confidence threshold in percent.

    LaunchDarkly documents the value as the significance level, a fraction ("between
    0.0-1.0", ``AnalysisConfigRep`` of its REST API): "0.05" is 95 % confidence. The
    read shape writes it the same way (``launchdarkly_significance_threshold``). A
    value that fits no usable level is refused, not guessed: "5" may mean 5 % written
    as a percentage, and "0.95" a confidence level; each guess can turn a 95 %
    experiment into a 99.95 % or a 5 % one. Decimal arithmetic keeps "0.05" exactly 95.
    """
    level = _finite_decimal(value)
    if level is None:
        raise DefinitionError(f"{_SIGNIFICANCE} must be a number, got {value!r}")
    if 0 < level < _HIGHEST_LEVEL:
        return float(100 - 100 * level)
    message = (
        f"{_SIGNIFICANCE} is the significance level as a fraction between 0 and 0.5 "
        f'("0.05" for 95 % confidence), got {value!r}'
    )
    if 1 <= level < 100:
        message += f'; for {level} % significance write "{_plain(level / 100)}"'
    elif _HIGHEST_LEVEL < level < 1:
        message += f'; for {_plain(100 * level)} % confidence write "{_plain(1 - level)}"'
    raise DefinitionError(message)


def launchdarkly_significance_threshold(confidence_threshold_percent: float) -> str:
    """A confidence threshold as LaunchDarkly's ``significanceThreshold`` (95 -> "0.05").

    The inverse of what the LaunchDarkly create shape accepts, so a value read back
    is the value written.
    """
    return _plain((100 - Decimal(repr(confidence_threshold_percent))) / 100)


def _finite_decimal(value: Any) -> Decimal | None:
    """A finite number given as a JSON number or string, else None (a bool is no number)."""
    if isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _plain(number: Decimal) -> str:
    """A decimal without exponent or trailing zeros ("0.05", "95")."""
    return format(number.normalize(), "f")


def _goals(metrics: list[dict[str, Any]], primary_key: str | None) -> list[dict[str, Any]]:
    """Goals from metric entries; the flagged (or named) one is primary, else the first."""
    flagged = [metric.get("key") for metric in metrics if metric.get("primary")]
    # An explicit primary flag wins over a primary key named elsewhere.
    primary = flagged[0] if flagged else primary_key
    goals = [
        {
            "key": _slug(str(metric.get("key") or metric.get("name"))),
            "name": str(metric.get("name") or metric.get("key")),
            "primary": primary is not None and metric.get("key") == primary,
        }
        for metric in metrics
    ]
    if not any(goal["primary"] for goal in goals):
        goals[0]["primary"] = True
    return goals


def detect_shape(payload: dict[str, Any]) -> str:
    """`native`, `launchdarkly` or `experiments_api`."""
    if "iteration" in payload:
        return "launchdarkly"
    variants = payload.get("variants")
    if isinstance(variants, list) and any(
        isinstance(v, dict) and "splitPercentage" in v for v in variants
    ):
        return "experiments_api"
    return "native"


LAUNCHDARKLY_TYPES = ("experiment", "mab", "holdout")


def from_launchdarkly(payload: dict[str, Any], project_key: str | None) -> dict[str, Any]:
    """LaunchDarkly: treatments (baseline, allocationPercent) and metrics (primary), the
    experiment's type, tags, holdout and maintainer, and its first iteration ("1")."""
    iteration = payload.get("iteration") or {}
    kind = payload.get("type") or "experiment"
    if kind not in LAUNCHDARKLY_TYPES:
        raise DefinitionError(f"type must be one of {', '.join(LAUNCHDARKLY_TYPES)}, got {kind!r}")
    analysis = iteration.get("analysisConfig") or payload.get("analysisConfig") or {}
    engine = (iteration.get("methodology") or payload.get("methodology") or "bayesian").lower()
    stats: dict[str, Any] = {"engine": "frequentist" if engine == "frequentist" else "bayesian"}
    if "bayesianThreshold" in analysis and stats["engine"] == "bayesian":
        stats["confidence_threshold_percent"] = _percent(
            analysis["bayesianThreshold"], "analysisConfig.bayesianThreshold"
        )
    if "significanceThreshold" in analysis and stats["engine"] == "frequentist":
        stats["confidence_threshold_percent"] = _confidence_from_significance(
            analysis["significanceThreshold"]
        )
    direction = analysis.get("testDirection")
    if direction:
        stats["test_direction"] = {"two-sided": "two_sided", "one-sided": "greater"}.get(
            direction, direction
        )
    correction = analysis.get("multipleComparisonCorrectionMethod")
    if correction:
        stats["correction"] = {"benjamini-hochberg": "bh"}.get(correction, correction)
    if "sequentialTestingEnabled" in analysis:
        stats["sequential"] = bool(analysis["sequentialTestingEnabled"])
    optional = {
        native: payload[field]
        for field, native in (
            ("description", "description"),
            ("maintainerId", "maintainer_id"),
            ("tags", "tags"),
            ("holdoutId", "holdout_id"),
        )
        if payload.get(field) is not None
    }
    return {
        "id": _slug(str(payload.get("key") or payload.get("name") or "")),
        "project_key": project_key or payload.get("projectKey") or "default",
        "name": str(payload.get("name") or payload.get("key")),
        "status": "live" if payload.get("status") == "running" else payload.get("status", "draft"),
        "type": kind,
        **launchdarkly_design(iteration, kind),
        "stats": stats,
        "iteration": launchdarkly_iteration(iteration, "1"),
        **optional,
    }  # fmt: skip


def launchdarkly_design(iteration: dict[str, Any], kind: str) -> dict[str, Any]:
    """An ``IterationInput``'s variants, goals and (``mab`` only) reallocation period."""
    treatments = iteration.get("treatments") or []
    if not treatments:
        raise DefinitionError("iteration.treatments must list at least one treatment")
    if sum(bool(t.get("baseline")) for t in treatments) != 1:
        raise DefinitionError("exactly one treatment must have baseline: true")
    variants = []
    for index, treatment in enumerate(treatments):
        parameters = treatment.get("parameters") or [{}]
        variant_id = parameters[0].get("variationId") or treatment.get("_id") or str(index)
        flag_key = parameters[0].get("flagKey")
        variants.append(
            {
                "id": _slug(str(variant_id)),
                "name": str(treatment.get("name") or variant_id),
                "is_control": bool(treatment.get("baseline")),
                "traffic_weight": _percent(treatment.get("allocationPercent", 0), f"treatment {index} allocationPercent") / 100,
                **({"flag_key": flag_key} if flag_key else {}),
            }
        )  # fmt: skip
    primary_key = iteration.get("primarySingleMetricKey") or iteration.get("primaryFunnelKey")
    metrics = iteration.get("metrics") or []
    if not metrics:
        raise DefinitionError("iteration.metrics must list at least one metric")
    design: dict[str, Any] = {"variants": variants, "goals": _goals(metrics, primary_key)}
    period = iteration.get("reallocationFrequencyMillis")
    if period is not None:
        if kind != "mab":
            raise DefinitionError(
                "iteration.reallocationFrequencyMillis applies to mab experiments only"
            )
        design["reallocation_seconds"] = _percent(period, "reallocationFrequencyMillis") / 1000
    return design


def launchdarkly_iteration(iteration: dict[str, Any], iteration_id: str) -> dict[str, Any]:
    """An ``IterationInput``'s record beside its design: hypothesis, reshuffling, flags."""
    flags = iteration.get("flags") or {}
    return {
        "id": iteration_id,
        "hypothesis": iteration.get("hypothesis"),
        "can_reshuffle_traffic": iteration.get("canReshuffleTraffic", True),
        "flags": {
            key: {
                "rule_id": flag.get("ruleId"),
                "flag_config_version": flag.get("flagConfigVersion"),
                **(
                    {"not_in_experiment_variation_id": flag["notInExperimentVariationId"]}
                    if flag.get("notInExperimentVariationId") is not None
                    else {}
                ),
            }
            for key, flag in flags.items()
        },
    }


def split_variants(raw_variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ "Experiments API" variants (``splitPercentage`` summing to 100, optional ``id``,
    ``flowId``, ``isControl``; else the first is the control) as native variants."""
    if not isinstance(raw_variants, list) or not raw_variants:
        raise DefinitionError("variants must list at least one variant")
    total = sum(
        _percent(v.get("splitPercentage"), f"variant {i} splitPercentage")
        for i, v in enumerate(raw_variants)
    )
    if abs(total - 100) > 1e-9:
        raise DefinitionError(f"variants' splitPercentage must sum to 100, got {total:g}")
    has_control = any(v.get("isControl") for v in raw_variants)
    return [
        {
            "id": _slug(str(v.get("id") or v.get("key") or i)),
            "name": str(v.get("name") or v.get("key") or i),
            "is_control": bool(v.get("isControl")) if has_control else i == 0,
            "traffic_weight": _percent(v["splitPercentage"], "splitPercentage") / 100,
            **({"flow_id": v["flowId"]} if v.get("flowId") is not None else {}),
        }
        for i, v in enumerate(raw_variants)
    ]


def api_goals(raw_goals: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """ "Experiments API" goals (``key``, ``name``, optional ``type`` and ``primary``;
    else the first is primary), or one conversion goal when there are none."""
    raw = raw_goals or [{"key": "conversion", "name": "Conversion"}]
    goals = _goals(raw, None)
    for goal, metric in zip(goals, raw, strict=True):
        if metric.get("type"):
            goal["type"] = metric["type"]
    return goals


def from_experiments_api(payload: dict[str, Any], project_key: str | None) -> dict[str, Any]:
    """Generic "Experiments API": variants with splitPercentage summing to 100."""
    if payload.get("type", "ab_test") != "ab_test":
        raise DefinitionError(f"type must be 'ab_test', got {payload.get('type')!r}")
    optional = {
        native: payload[field]
        for field, native in (
            ("description", "description"),
            ("audienceId", "audience_id"),
            ("startDate", "started_at"),
            ("endDate", "ended_at"),
        )
        if payload.get(field) is not None
    }
    return {
        "id": _slug(str(payload.get("id") or payload.get("key") or payload.get("name") or "")),
        "project_key": project_key or payload.get("projectKey") or "default",
        "name": str(payload.get("name") or payload.get("id")),
        "status": {"running": "live", "active": "live", "paused": "inactive", "stopped": "inactive"}.get(payload.get("status", "draft"), payload.get("status", "draft")),
        "variants": split_variants(payload["variants"]),
        "goals": api_goals(payload.get("goals") or payload.get("metrics")),
        **optional,
    }  # fmt: skip


def parse_definition(payload: Any, project_key: str | None = None) -> ExperimentDefinition:
    """Any accepted shape -> the native, validated definition."""
    if not isinstance(payload, dict):
        raise DefinitionError("an experiment definition must be a JSON object")
    shape = detect_shape(payload)
    try:
        if shape == "launchdarkly":
            payload = from_launchdarkly(payload, project_key)
        elif shape == "experiments_api":
            payload = from_experiments_api(payload, project_key)
        elif project_key and "project_key" not in payload:
            payload = {**payload, "project_key": project_key}
        return ExperimentDefinition.model_validate(payload)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "definition"
        raise DefinitionError(
            f"{shape} definition is invalid at {where}: {first['msg']}"
        ) from error
    except (KeyError, TypeError, AttributeError) as error:
        raise DefinitionError(
            f"{shape} definition is missing or has a malformed field: {error}"
        ) from error
