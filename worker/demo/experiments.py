"""The two demo experiments: one with a real effect, one A/A."""

from __future__ import annotations

from worker.events.experiment import ExperimentDefinition

DEMO_PROJECT = "demo"

CHECKOUT = ExperimentDefinition.model_validate(
    {
        "id": "demo-checkout",
        "project_key": DEMO_PROJECT,
        "name": "Demo: one-page checkout",
        "status": "live",
        "variants": [
            {"id": "0", "name": "Control", "is_control": True, "traffic_weight": 0.5},
            {"id": "1", "name": "One-page checkout", "traffic_weight": 0.5},
        ],
        "goals": [
            {"key": "purchase", "name": "Purchase", "type": "revenue", "primary": True},
            {"key": "add-to-cart", "name": "Add to cart"},
        ],
        "stats": {"engine": "bayesian", "sequential": True},
    }
)

AA = ExperimentDefinition.model_validate(
    {
        "id": "demo-aa",
        "project_key": DEMO_PROJECT,
        "name": "Demo: A/A (no difference)",
        "status": "live",
        "variants": [
            {"id": "0", "name": "A", "is_control": True},
            {"id": "1", "name": "A again"},
        ],
        "goals": [{"key": "purchase", "name": "Purchase", "type": "revenue", "primary": True}],
        "stats": {"engine": "frequentist", "sequential": True},
    }
)

DEMO_EXPERIMENTS = (CHECKOUT, AA)

# Purchase probability per experiment and variant: +25 % for the one-page checkout.
PURCHASE_RATE = {("demo-checkout", "0"): 0.08, ("demo-checkout", "1"): 0.10}
BASE_PURCHASE_RATE = 0.08
