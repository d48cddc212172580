"""Interval bounds of a network over a parameter box and an input ball.

    from approp.bounds import interval_bounds, worst_case_loss, verified
    b = interval_bounds(model, x, eps=2/255, radius=RadiusConfig("abs", lam=0.01))
    b.lower, b.upper            # (B, 10) logit bounds

Any traceable nn.Module is bounded (approp.bounds.graph: torch.fx, one rule per node kind in
approp.bounds.rules.KINDS); an unsupported node is refused by name before any data is read.

BatchNorm in training mode needs the clean batch's statistics: run the clean
forward and the bounds inside `clean_statistics(model)` (approp.bounds.batchnorm).
"""

from .batchnorm import BatchNormStatisticsError, clean_statistics, has_batchnorm
from .graph import Graph, trace
from .interval import Interval, ParamInterval, input_ball
from .linear import linear_margin_bounds
from .propagate import BoundsRecord, interval_bounds, layer_params, layers_of, propagate
from .rules import KINDS, RULES, UnsupportedLayerError, affine, register, rule_for
from .spec import margin_lower_bounds, verified, worst_case_logits, worst_case_loss

__all__ = [
    "KINDS",
    "RULES",
    "BatchNormStatisticsError",
    "BoundsRecord",
    "Graph",
    "Interval",
    "ParamInterval",
    "UnsupportedLayerError",
    "affine",
    "clean_statistics",
    "has_batchnorm",
    "input_ball",
    "interval_bounds",
    "layer_params",
    "layers_of",
    "linear_margin_bounds",
    "margin_lower_bounds",
    "propagate",
    "register",
    "rule_for",
    "trace",
    "verified",
    "worst_case_logits",
    "worst_case_loss",
]
