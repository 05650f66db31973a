"""Realistic visitors and their events, generated from a seed (pure: no I/O)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from worker.demo.experiments import BASE_PURCHASE_RATE, DEMO_EXPERIMENTS, PURCHASE_RATE

DEVICES = (("mobile", 55), ("desktop", 40), ("tablet", 5))
BROWSERS = {
    "mobile": (("chrome", 60), ("safari", 35), ("samsung", 5)),
    "desktop": (("chrome", 65), ("edge", 15), ("firefox", 10), ("safari", 10)),
    "tablet": (("safari", 70), ("chrome", 30)),
}
OPERATING_SYSTEMS = {
    ("mobile", "safari"): "ios",
    ("tablet", "safari"): "ios",
    ("desktop", "safari"): "macos",
    ("mobile", "chrome"): "android",
    ("mobile", "samsung"): "android",
    ("tablet", "chrome"): "android",
}
COUNTRIES = (
    ("US", 40),
    ("GB", 10),
    ("DE", 10),
    ("FR", 8),
    ("CA", 7),
    ("BR", 6),
    ("JP", 5),
    ("IN", 8),
    ("AU", 6),
)
SOURCES = (
    ("direct", 30),
    ("search", 30),
    ("paid", 15),
    ("social", 12),
    ("email", 8),
    ("referral", 5),
)
CAMPAIGNS = ("black-friday", "newsletter", "brand", None)


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    values, weights = zip(*weighted, strict=True)
    return rng.choices(values, weights)[0]


def visitor_context(rng: random.Random, now: datetime) -> dict[str, Any]:
    """Device, browser, OS, country, source and campaign of one visitor."""
    device = _pick(rng, DEVICES)
    browser = _pick(rng, BROWSERS[device])
    context: dict[str, Any] = {
        "device": device,
        "browser": browser,
        "os": OPERATING_SYSTEMS.get((device, browser), "windows"),
        "country": _pick(rng, COUNTRIES),
        "source": _pick(rng, SOURCES),
        "landing_page": rng.choice(("/", "/sale", "/product/42", "/category/shoes")),
        "first_seen_at": (now - timedelta(days=rng.choice((0, 0, 1, 7, 30)))).isoformat(),
    }
    campaign = rng.choice(CAMPAIGNS)
    if campaign:
        context["utm"] = {"campaign": campaign, "source": context["source"]}
    return context


def visitor_events(rng: random.Random, now: datetime) -> Iterator[tuple[str, dict[str, Any]]]:
    """("assignment" | "conversion", event) of one new visitor, starting now."""
    visitor = f"demo-{uuid.UUID(int=rng.getrandbits(128)).hex[:16]}"
    visit = f"v{rng.getrandbits(32):08x}"
    context = visitor_context(rng, now)
    purchase_rate = BASE_PURCHASE_RATE
    for experiment in DEMO_EXPERIMENTS:
        variant = experiment.variants[rng.randrange(len(experiment.variants))].id
        purchase_rate = max(purchase_rate, PURCHASE_RATE.get((experiment.id, variant), 0.0))
        yield (
            "assignment",
            {
                "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "experiment_id": experiment.id,
                "variant_id": variant,
                "visitor_id": visitor,
                "visit_id": visit,
                "timestamp": now.isoformat(),
                "context": context,
            },
        )
    later = now + timedelta(seconds=rng.randrange(5, 120))
    if rng.random() < 0.25:
        yield "conversion", _conversion(rng, visitor, visit, "add-to-cart", later, None)
    if rng.random() < purchase_rate:
        value = round(rng.lognormvariate(4.0, 0.6), 2)
        yield "conversion", _conversion(rng, visitor, visit, "purchase", later, value)


def _conversion(
    rng: random.Random, visitor: str, visit: str, goal: str, at: datetime, value: float | None
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "visitor_id": visitor,
        "visit_id": visit,
        "goal": goal,
        "timestamp": at.isoformat(),
    }
    if value is not None:
        event |= {"value": value, "currency": "USD", "attributes": {"items": rng.randint(1, 4)}}
    return event
