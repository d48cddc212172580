"""The specification layer: margins z_y - z_j, worst-case logits and loss, verification.

Merging the last affine layer with the specification C = e_y - e_j bounds the
margin directly: its weight row difference W_y - W_j has center
W_c[y] - W_c[j] and radius W_r[y] + W_r[j], which is tighter than
lower_y - upper_j from the separate logit bounds.

Under bf16 autocast (training) the specification layer still runs in fp32:
the penultimate interval is upcast, autocast is off for its products, and the
worst-case logits come from ends formed in fp32 (approp.bounds.interval), so
the margins' center − radius never cancels in 16 bits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RadiusConfig
from ..precision import full_precision, upcast
from .graph import Graph, require, trace
from .interval import Interval, ParamInterval, input_ball
from .propagate import BoundsRecord, evaluate, interval_bounds, layer_params


def margin_lower_bounds(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    radius: RadiusConfig | None = None,
    lam: float | None = None,
    record: BoundsRecord | None = None,
) -> torch.Tensor:
    """Returns lower bounds of z_y - z_j, shape (B, K), with 0 at j = y.

    record: collects the pre-activation intervals on the way (see BoundsRecord).
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0; got {eps}")
    graph = last_linear(require(trace(model)))
    # Every node but the last Linear (all are its ancestors, so they come before it in the graph).
    values, _ = evaluate(graph, input_ball(x, eps), radius, lam, record, stop=graph.output)
    last = graph.nodes[graph.output]
    p = layer_params(last.module, radius, lam)
    return margin_from_features(values[last.bounded[0]], p["weight"], p.get("bias"), y)  # h: (B, d)


def last_linear(graph: Graph) -> Graph:
    """Returns graph if its output node is an nn.Linear layer (merged with the specification); else raises."""
    last = graph.nodes[graph.output]
    if not isinstance(last.module, nn.Linear):
        got = type(last.module).__name__ if last.module is not None else last.target
        raise TypeError(f"margin bounds need a final nn.Linear layer; got {got}")
    return graph


def margin_from_features(h: Interval, w: ParamInterval, b: ParamInterval | None, y: torch.Tensor) -> torch.Tensor:
    """Returns lower bounds of z_y - z_j (B, K), 0 at j = y, for z = W·h + b with h (B, d) in its interval.

    Always fp32 (or the parameters' dtype): a bf16 h is upcast and autocast is off here.
    """
    with full_precision():
        return _margin_lower(h.center.to(w.center.dtype), h.radius.to(w.center.dtype), w, b, y)


def _margin_lower(
    hc: torch.Tensor, hr: torch.Tensor, w: ParamInterval, b: ParamInterval | None, y: torch.Tensor
) -> torch.Tensor:
    """Returns margin_from_features' lower bounds (B, K) for h = ⟨hc, hr⟩ (B, d) in w's dtype."""
    # Row differences W[y] - W[j] for every j: (B, K, d).
    d_center = w.center[y].unsqueeze(1) - w.center.unsqueeze(0)
    center = torch.einsum("bkd,bd->bk", d_center, hc)
    rad = torch.einsum("bkd,bd->bk", d_center.abs(), hr)
    if w.radius is not None:
        w_rad = w.radius[y].unsqueeze(1) + w.radius.unsqueeze(0)  # (B, K, d)
        rad = rad + torch.einsum("bkd,bd->bk", w_rad, hc.abs() + hr)
    if b is not None:
        center = center + b.center[y].unsqueeze(1) - b.center.unsqueeze(0)
        if b.radius is not None:
            rad = rad + b.radius[y].unsqueeze(1) + b.radius.unsqueeze(0)
    lower = center - rad
    own = F.one_hot(y, lower.shape[1]).bool()
    return lower.masked_fill(own, 0.0)


def worst_case_logits(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    radius: RadiusConfig | None = None,
    lam: float | None = None,
    margin: bool = False,
    record: BoundsRecord | None = None,
) -> torch.Tensor:
    """Returns logits (B, K) no better for the true class than any network/input in the box.

    Default: z̃_y = lower_y, z̃_j = upper_j. With margin=True: z̃_j = -lower(z_y - z_j),
    z̃_y = 0 (the same cross-entropy up to a shift per sample, from tighter bounds).
    record: collects the pre-activation intervals on the way (see BoundsRecord).
    """
    if margin:
        return -margin_lower_bounds(model, x, y, eps, radius, lam, record)
    bounds = interval_bounds(model, x, eps, radius, lam, record)
    own = F.one_hot(y, bounds.center.shape[1]).bool()
    return torch.where(own, bounds.lower, bounds.upper)


def worst_case_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    radius: RadiusConfig | None = None,
    lam: float | None = None,
    margin: bool = False,
    record: BoundsRecord | None = None,
) -> torch.Tensor:
    """Returns the mean cross-entropy of the worst-case logits (an upper bound on the box's loss), in fp32.

    record: collects the pre-activation intervals on the way (see BoundsRecord).
    """
    return F.cross_entropy(upcast(worst_case_logits(model, x, y, eps, radius, lam, margin, record)), y)


@torch.no_grad()
@full_precision()
def verified(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    radius: RadiusConfig | None = None,
    lam: float | None = None,
) -> torch.Tensor:
    """Returns a bool mask (B,): True where every network in the box classifies every input correctly.

    Computed in the parameters' dtype (fp32) with autocast off, whatever the caller's context.
    """
    lower = margin_lower_bounds(model, x, y, eps, radius, lam)
    own = F.one_hot(y, lower.shape[1]).bool()
    return (lower.masked_fill(own, float("inf")) > 0).all(dim=1)
