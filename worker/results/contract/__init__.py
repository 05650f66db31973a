"""The results layer's public contract: result documents, snapshots and decision events.

Frozen pydantic models of everything the results layer hands out: the result
document the API, the UI and the CLI read; the snapshot published to `ab.results`;
the decision events published to `ab.winners`. ``TOPIC_MODELS`` names the two topic
models for the JSON Schema export in `schemas/` (assembled with the event topics' in
``worker.cli.schemas_command``, since events/ sits below results/).
"""

from pydantic import BaseModel

from worker.results.contract.decision_events import (
    AllocationUpdated,
    AnyDecisionEvent,
    DecisionEvent,
    KameleoonRule,
    SrmCleared,
    SrmDetected,
    WinnerDeclared,
    WinnerRule,
    WinnersRecord,
    WinnerWithdrawn,
)
from worker.results.contract.document import (
    AnalysisSettings,
    FrequentistCheck,
    GoalBlock,
    HorizonPower,
    PowerEstimate,
    ResultDocument,
    SegmentResult,
    VariantRow,
    VariantStatistics,
    VisitAnalysis,
)
from worker.results.contract.snapshot import Snapshot

TOPIC_MODELS: dict[str, type[BaseModel]] = {
    "ab.results.schema.json": Snapshot,
    "ab.winners.schema.json": WinnersRecord,
}
"""Schema file name → the model of the topic's messages."""

__all__ = [
    "TOPIC_MODELS",
    "AllocationUpdated",
    "AnalysisSettings",
    "AnyDecisionEvent",
    "DecisionEvent",
    "FrequentistCheck",
    "GoalBlock",
    "HorizonPower",
    "KameleoonRule",
    "PowerEstimate",
    "ResultDocument",
    "SegmentResult",
    "Snapshot",
    "SrmCleared",
    "SrmDetected",
    "VariantRow",
    "VariantStatistics",
    "VisitAnalysis",
    "WinnerDeclared",
    "WinnerRule",
    "WinnerWithdrawn",
    "WinnersRecord",
]
