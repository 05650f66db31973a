"""The document and the results page say how the numbers were analysed: the prior
(issue 15, item 12), CUPED's window and the effect power plans for."""

from __future__ import annotations

from worker.api.ui.render import settings_note
from worker.events.experiment import ExperimentDefinition
from worker.results.contract import AnalysisSettings
from worker.results.experiment_result import result_document
from worker.results.query_totals import QueryTotals
from worker.results.variant_totals import VariantTotals


def definition(stats: dict[str, object]) -> ExperimentDefinition:
    return ExperimentDefinition.model_validate(
        {
            "id": "exp", "project_key": "shop", "name": "Checkout", "status": "live",
            "variants": [{"id": "a", "name": "A", "is_control": True}, {"id": "b", "name": "B"}],
            "goals": [{"key": "buy", "name": "Buy", "primary": True}],
            "stats": stats,
        }
    )  # fmt: skip


def settings_of(stats: dict[str, object]) -> AnalysisSettings:
    rows = [VariantTotals("a", visitors=100, conversions=10), VariantTotals("b", visitors=100)]
    return result_document(definition(stats), {"buy": QueryTotals(rows)}).settings


def test_the_prior_cuped_window_and_planned_effect_are_in_the_document_and_page() -> None:
    settings = settings_of(
        {"prior": {"mean": 0.02, "variance": 0.09}, "cuped_days": 7, "correction": "holm"}
    )
    assert settings.prior is not None
    assert (settings.prior.mean, settings.prior.variance) == (0.02, 0.09)
    assert (settings.cuped_days, settings.minimum_detectable_effect) == (7, 0.05)
    assert settings_note(settings) == (
        '<p class="meta settings">sequential (always valid) test · two-sided · holm '
        "correction · prior on the lift: mean +2 %, sd 30 % · CUPED on the 7 days before "
        "entry</p>"
    )
    flat = settings_of({"engine": "frequentist", "sequential": False, "cuped_days": 0})
    assert flat.prior is None
    assert settings_note(flat) == '<p class="meta settings">fixed-horizon test · two-sided</p>'
