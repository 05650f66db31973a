"""Statistics engine: pure functions over per-variant sufficient statistics.

``analyze`` (and ``analyze_goals`` for several goals) is the entry point shared by the
worker and ``python -m worker stats``; the modules underneath each do one job.
"""

from worker.stats.analysis import analyze, analyze_goals
from worker.stats.schema import AnalysisRequest, AnalysisResult

__all__ = ["AnalysisRequest", "AnalysisResult", "analyze", "analyze_goals"]
