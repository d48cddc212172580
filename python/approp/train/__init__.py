"""Training: one loop (`fit`) and interchangeable loss strategies."""

from . import adversarial  # noqa: F401  (registers the "pgd" and "awp" strategies)
from .loop import FitResult, TrainingDiverged, fit
from .strategies import STRATEGIES, StepContext, Strategy, make_strategy

__all__ = ["FitResult", "STRATEGIES", "StepContext", "Strategy", "TrainingDiverged", "fit", "make_strategy"]
