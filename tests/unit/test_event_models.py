"""Validation rules of the event and definition models (DESIGN.md section 2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from worker.events.assignment import Assignment
from worker.events.conversion import Conversion
from worker.events.enums import Browser, Device, OperatingSystem, Source, VisitorType
from worker.events.experiment import ExperimentDefinition, ExperimentStatus


def assignment(**overrides: Any) -> dict[str, Any]:
    return {
        "event_id": "evt-1",
        "experiment_id": "exp-1",
        "variant_id": "control",
        "visitor_id": "visitor-1",
        "timestamp": "2024-05-01T12:00:00+02:00",
        **overrides,
    }


def conversion(**overrides: Any) -> dict[str, Any]:
    return {
        "event_id": "evt-2",
        "visitor_id": "visitor-1",
        "goal": "purchase",
        "timestamp": "2024-05-01T13:00:00Z",
        **overrides,
    }


def definition(**overrides: Any) -> dict[str, Any]:
    return {
        "id": "exp-1",
        "project_key": "shop",
        "name": "Checkout button",
        "variants": [
            {"id": "control", "name": "Control", "is_control": True},
            {"id": "green", "name": "Green"},
        ],
        "goals": [
            {"key": "purchase", "name": "Purchase", "primary": True},
            {"key": "signup", "name": "Sign-up"},
        ],
        **overrides,
    }


def error_locations(error: pytest.ExceptionInfo[ValidationError]) -> list[tuple[Any, ...]]:
    return [item["loc"] for item in error.value.errors()]


# visitor_id


@pytest.mark.parametrize("visitor_id", ["a", "a" * 80, "Visitor_1-X", "0123456789"])
@pytest.mark.parametrize("model, payload", [(Assignment, assignment), (Conversion, conversion)])
def test_visitor_id_accepted(model: Any, payload: Any, visitor_id: str) -> None:
    assert model.model_validate(payload(visitor_id=visitor_id)).visitor_id == visitor_id


@pytest.mark.parametrize("visitor_id", ["", "a" * 81, "has space", "a:b", "a|b", "a.b", "é"])
@pytest.mark.parametrize("model, payload", [(Assignment, assignment), (Conversion, conversion)])
def test_visitor_id_rejected(model: Any, payload: Any, visitor_id: str) -> None:
    with pytest.raises(ValidationError) as error:
        model.model_validate(payload(visitor_id=visitor_id))
    assert error_locations(error) == [("visitor_id",)]


# timestamps


def test_timestamp_keeps_its_offset() -> None:
    event = Assignment.model_validate(assignment(timestamp="2024-05-01T12:00:00+02:00"))
    assert event.timestamp == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert event.timestamp.utcoffset() == timedelta(hours=2)
    assert Conversion.model_validate(conversion()).timestamp == datetime(2024, 5, 1, 13, tzinfo=UTC)


@pytest.mark.parametrize(
    "model, payload, field",
    [
        (Assignment, assignment(timestamp="2024-05-01T12:00:00"), ("timestamp",)),
        (Conversion, conversion(timestamp="2024-05-01T12:00:00"), ("timestamp",)),
        (
            Assignment,
            assignment(context={"first_seen_at": "2024-04-01T08:00:00"}),
            ("context", "first_seen_at"),
        ),
    ],
)
def test_naive_timestamp_rejected(model: Any, payload: dict[str, Any], field: tuple[str]) -> None:
    with pytest.raises(ValidationError) as error:
        model.model_validate(payload)
    assert [(item["loc"], item["type"]) for item in error.value.errors()] == [
        (field, "timezone_aware")
    ]


# context: enums, country


def test_enums_are_normalised_to_lower_case() -> None:
    context = Assignment.model_validate(
        assignment(context={"device": "Mobile", "browser": "Chrome", "os": "iOS", "source": "PAID"})
    ).context
    assert context.device is Device.MOBILE
    assert context.browser is Browser.CHROME
    assert context.os is OperatingSystem.IOS
    assert context.source is Source.PAID


def test_missing_dimensions_default_to_other() -> None:
    context = Assignment.model_validate(assignment()).context
    assert (context.device, context.browser, context.os, context.source) == (
        Device.OTHER,
        Browser.OTHER,
        OperatingSystem.OTHER,
        Source.OTHER,
    )
    assert context.country is None


@pytest.mark.parametrize(
    "field, value",
    [("device", "smartwatch"), ("browser", "netscape"), ("os", "beos"), ("source", "tv")],
)
def test_unknown_enum_text_counts_as_other_and_is_kept(field: str, value: str) -> None:
    context = Assignment.model_validate(assignment(context={field: value})).context
    assert getattr(context, field) == "other"
    assert context.raw == {field: value}


@pytest.mark.parametrize(
    "field, value",
    [("device", 5), ("browser", {"name": "netscape"}), ("os", ["ios"]), ("source", True)],
)
def test_enum_value_that_is_not_text_rejected(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as error:
        Assignment.model_validate(assignment(context={field: value}))
    assert error_locations(error) == [("context", field)]


def test_country_is_upper_cased() -> None:
    event = Assignment.model_validate(assignment(context={"country": "de"}))
    assert event.context.country == "DE"


@pytest.mark.parametrize("country", ["DEU", "D", "1A", ""])
def test_country_must_be_two_letters(country: str) -> None:
    with pytest.raises(ValidationError) as error:
        Assignment.model_validate(assignment(context={"country": country}))
    assert error_locations(error) == [("context", "country")]


# attribute maps


def attributes(count: int) -> dict[str, int]:
    return {f"attr_{index}": index for index in range(count)}


def test_fifty_attributes_accepted() -> None:
    event = Assignment.model_validate(assignment(context={"attributes": attributes(50)}))
    assert event.context.attributes == attributes(50)
    assert Conversion.model_validate(conversion(attributes=attributes(50))).attributes == (
        attributes(50)
    )


@pytest.mark.parametrize(
    "model, payload, location",
    [
        (Assignment, assignment(context={"attributes": attributes(51)}), ("context", "attributes")),
        (
            Assignment,
            assignment(context={"query_params": attributes(51)}),
            ("context", "query_params"),
        ),
        (Conversion, conversion(attributes=attributes(51)), ("attributes",)),
    ],
)
def test_fifty_one_attributes_rejected(
    model: Any, payload: dict[str, Any], location: tuple[str, ...]
) -> None:
    with pytest.raises(ValidationError) as error:
        model.model_validate(payload)
    assert [(item["loc"], item["type"]) for item in error.value.errors()] == [
        (location, "too_long")
    ]


@pytest.mark.parametrize(
    "bad",
    [{"a:b": 1}, {"": 1}, {"plan": "x" * 501}, {"plan": {"nested": 1}}, {"plan": None}],
)
def test_attribute_keys_and_values_are_constrained(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Conversion.model_validate(conversion(attributes=bad))


def test_attribute_values_keep_their_types() -> None:
    event = Conversion.model_validate(
        conversion(attributes={"plan": "pro", "seats": 3, "ratio": 0.5, "trial": True})
    )
    assert event.attributes == {"plan": "pro", "seats": 3, "ratio": 0.5, "trial": True}


# extra fields


@pytest.mark.parametrize(
    "model, payload, location",
    [
        (Assignment, assignment(colour="red"), ("colour",)),
        (Assignment, assignment(context={"colour": "red"}), ("context", "colour")),
        (Assignment, assignment(context={"utm": {"colour": "red"}}), ("context", "utm", "colour")),
        (Conversion, conversion(colour="red"), ("colour",)),
        (ExperimentDefinition, definition(colour="red"), ("colour",)),
    ],
)
def test_extra_fields_rejected(
    model: Any, payload: dict[str, Any], location: tuple[str, ...]
) -> None:
    with pytest.raises(ValidationError) as error:
        model.model_validate(payload)
    assert [(item["loc"], item["type"]) for item in error.value.errors()] == [
        (location, "extra_forbidden")
    ]


# conversion value and currency


def test_conversion_value_and_currency() -> None:
    event = Conversion.model_validate(conversion(value=19.99, currency="EUR", experiment_id="e.1"))
    assert (event.value, event.currency, event.experiment_id) == (19.99, "EUR", "e.1")


@pytest.mark.parametrize(
    "overrides, location",
    [
        ({"currency": "eur"}, ("currency",)),
        ({"currency": "EURO"}, ("currency",)),
        ({"value": 2e12}, ("value",)),
        ({"value": "lots"}, ("value",)),
    ],
)
def test_conversion_value_and_currency_rejected(
    overrides: dict[str, Any], location: tuple[str]
) -> None:
    with pytest.raises(ValidationError) as error:
        Conversion.model_validate(conversion(**overrides))
    assert error_locations(error) == [location]


# visitor_type at the 24 h boundary


@pytest.mark.parametrize(
    "first_seen_at, expected",
    [
        (None, VisitorType.NEW),
        ("2024-05-01T10:00:00+00:00", VisitorType.NEW),
        ("2024-04-30T10:00:00.001+00:00", VisitorType.NEW),
        ("2024-04-30T10:00:00+00:00", VisitorType.RETURNING),
        # The same instant as the line above, written with another offset.
        ("2024-04-30T12:00:00+02:00", VisitorType.RETURNING),
        ("2024-03-01T00:00:00+00:00", VisitorType.RETURNING),
    ],
)
def test_visitor_type_boundary(first_seen_at: str | None, expected: VisitorType) -> None:
    # The entry is 2024-05-01T10:00Z; exactly 24 h earlier is no longer new.
    context = {} if first_seen_at is None else {"first_seen_at": first_seen_at}
    event = Assignment.model_validate(assignment(context=context))
    assert event.visitor_type() is expected


# experiment definitions


def test_definition_defaults_and_helpers() -> None:
    experiment = ExperimentDefinition.model_validate(definition())
    assert experiment.status is ExperimentStatus.DRAFT
    assert experiment.control.id == "control"
    assert experiment.primary_goal.key == "purchase"
    assert experiment.variant("green") is not None
    assert experiment.variant("blue") is None
    assert [v.traffic_weight for v in experiment.variants] == [1.0, 1.0]
    assert experiment.stats.confidence_threshold_percent == 95.0


@pytest.mark.parametrize(
    "status, assignments, conversions",
    [
        ("draft", False, False),
        ("live", True, True),
        ("inactive", False, True),
        ("completed", False, False),
    ],
)
def test_status_decides_what_is_counted(status: str, assignments: bool, conversions: bool) -> None:
    experiment = ExperimentDefinition.model_validate(definition(status=status))
    assert (experiment.accepts_assignments, experiment.accepts_conversions) == (
        assignments,
        conversions,
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {
                "variants": [
                    {"id": "a", "name": "A", "is_control": True},
                    {"id": "b", "name": "B", "is_control": True},
                ]
            },
            "exactly one variant must have is_control: true",
        ),
        (
            {"variants": [{"id": "a", "name": "A"}, {"id": "b", "name": "B"}]},
            "exactly one variant must have is_control: true",
        ),
        (
            {
                "goals": [
                    {"key": "a", "name": "A", "primary": True},
                    {"key": "b", "name": "B", "primary": True},
                ]
            },
            "exactly one goal must have primary: true",
        ),
        ({"goals": [{"key": "a", "name": "A"}]}, "exactly one goal must have primary: true"),
        (
            {
                "variants": [
                    {"id": "a", "name": "A", "is_control": True},
                    {"id": "a", "name": "Again"},
                ]
            },
            "variant ids must be unique",
        ),
        (
            {
                "goals": [
                    {"key": "a", "name": "A", "primary": True},
                    {"key": "a", "name": "Again"},
                ]
            },
            "goal keys must be unique",
        ),
        (
            {
                "variants": [
                    {"id": "a", "name": "A", "is_control": True, "traffic_weight": 0},
                    {"id": "b", "name": "B", "traffic_weight": 0},
                ]
            },
            "traffic weights must not all be zero",
        ),
    ],
)
def test_inconsistent_definition_rejected(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ExperimentDefinition.model_validate(definition(**overrides))


@pytest.mark.parametrize(
    "overrides, location",
    [
        ({"variants": []}, ("variants",)),
        ({"id": "has:colon"}, ("id",)),
        ({"status": "running"}, ("status",)),
        (
            {"stats": {"confidence_threshold_percent": 100}},
            ("stats", "confidence_threshold_percent"),
        ),
        ({"stats": {"engine": "magic"}}, ("stats", "engine")),
    ],
)
def test_definition_field_rules(overrides: dict[str, Any], location: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as error:
        ExperimentDefinition.model_validate(definition(**overrides))
    assert error_locations(error) == [location]
