"""The verified decision: interval, linear or best-of-both margin bounds, with a rounding allowance.

Both bounds are sound in exact arithmetic, and neither is always tighter (on
interval-trained nets the linear bound can be looser), so "best" takes per
margin whichever clears its allowance. A point is verified only when all its
margins clear, so the decision computes linear bounds lazily: only for the
margins the interval bound left open, and first only for each point's weakest
one (lowest interval bound); the rest only for the points whose weakest margin
cleared. Most points that cannot be verified fail at their weakest margin and
cost one functional instead of nine.

Rounding allowance. The bounds are computed in the model's dtype (float32) and
are not outward-rounded, so a margin counts as verified only when its lower
bound exceeds κ·u·R, u the unit roundoff (2⁻²⁴ in float32), κ = SAFETY and R a
first-order magnitude of the rounding committed:

- A sum of n products s = Σ a_i b_i computed in floating point is off by at most
  γ_n·Σ|a_i b_i| with γ_n = n·u/(1 − n·u) ≈ n·u (Higham, Accuracy and Stability of
  Numerical Algorithms, §3.1); a pairwise sum of n terms by ⌈log₂ n⌉·u·Σ|terms|.
- Linear bound: every step of the backward pass sums, per functional, the terms
  coef·(W_c a), coef·b_c, |coef|·d (affine), the relaxation offsets (ReLU,
  max-pool) and coef·x at the input. Each rule reports Σ fan × |terms| with
  |a| ≤ max(|l|, |u|) and fan its depth of rounding (twice the larger of fan-in
  and fan-out of an affine layer, since the interval pass stacks two products,
  plus log₂ of the reduction). Their sum over layers is R.
- Interval bound: the margin is formed at the last layer from the penultimate
  interval ⟨h_c, h_r⟩; R = F·M with M the same sum taken absolutely
  (|ΔW_c|·(|h_c| + h_r) + W_r-terms + biases) and F the sum of every affine
  layer's fan (a BatchNorm layer's per-channel map adds BN_FAN): an error made
  at an earlier layer reaches the margin scaled like the magnitudes it is part
  of, so the total is bounded to first order by the deepest chain of roundings
  times the final magnitude.
- The interval bounds that the relaxations rest on carry the same kind of error
  e; each relaxation is then violated by at most e per unit (the chord and
  constants move by at most e; the lower relaxations α·h hold everywhere), of
  the same order as the step's own term: κ = 2 covers both.

This is a first-order (not a rigorous) bound: products of error terms (u²) are
dropped. tests/test_linear_bounds.py checks it against a float64 recomputation.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RadiusConfig
from ..precision import full_precision
from .batchnorm import BATCHNORMS, BN_FAN
from .graph_rules import ADD, AVG_POOL
from .linear import MarginBounds, Prepared, backward, linear_margins, prepare
from .linear_rules import affine_fan
from .spec import last_linear, margin_from_features

Method = Literal["ibp", "crown", "best"]
SAFETY = 2.0
# Functionals per linear pass: its coefficients are (points, S, C, H, W) at every layer. Small
# passes keep them in cache, so 8 points × 9 margins per pass beat 64 × 9 on a CPU (docs/benchmarks.md).
FUNCTIONALS_PER_PASS = 72


def check_method(method: str) -> None:
    """Raises ValueError naming `method` unless it is 'ibp', 'crown' or 'best'."""
    if method not in get_args(Method):
        raise ValueError(f"method must be one of {get_args(Method)}; got {method!r}")


def allowance(bounds: MarginBounds) -> torch.Tensor:
    """Returns the rounding allowance κ·u·R (B, K) of the bounds, in their dtype."""
    return SAFETY * torch.finfo(bounds.lower.dtype).eps / 2 * bounds.rounding


def interval_margins(prep: Prepared, y: torch.Tensor) -> MarginBounds:
    """Returns the interval margin bounds (last layer merged with the specification) and their rounding."""
    graph = last_linear(prep.graph)
    last = graph.nodes[graph.output]
    h, box = prep.inputs[last.bounded[0]], prep.boxes[graph.output]
    w, b = box["weight"], box.get("bias")
    lower = margin_from_features(h, w, b, y)
    size = h.center.abs() + h.radius  # (B, d)
    w_abs = w.center.abs() if w.radius is None else w.center.abs() + w.radius
    mag = (w_abs[y] * size).sum(1, keepdim=True) + size @ w_abs.T  # (B, K): |row y| + |row j|
    if b is not None:
        b_abs = b.center.abs() if b.radius is None else b.center.abs() + b.radius
        mag = mag + b_abs[y].unsqueeze(1) + b_abs.unsqueeze(0)
    fan = sum(node_fan(prep, i) for i in range(1, len(graph.nodes)))
    own = F.one_hot(y, lower.shape[1]).bool()
    return MarginBounds(lower, (fan * mag).masked_fill(own, 0.0))


def node_fan(prep: Prepared, i: int) -> int:
    """Returns node i's rounding depth in the interval pass: an affine layer's fan, BN_FAN for BatchNorm,
    the window of an average pooling, 1 for an addition, 0 for the rest (a sum over all nodes bounds the
    deepest chain of roundings that reaches the margin)."""
    node = prep.graph.nodes[i]
    if isinstance(node.module, (nn.Linear, nn.Conv2d)):
        return affine_fan(node.module.weight)
    if isinstance(node.module, BATCHNORMS):
        return BN_FAN
    if node.key in ADD:
        return 1
    if node.key in AVG_POOL:
        return math.prod(prep.inputs[node.bounded[0]].shape[2:])  # at most the whole plane
    return 0


def clears(bounds: MarginBounds, y: torch.Tensor) -> torch.Tensor:
    """Returns (B, K) bool: margin lower bound above its allowance (True at j = y)."""
    ok = bounds.lower > allowance(bounds)
    return ok | F.one_hot(y, ok.shape[1]).bool()


def best_of(a: MarginBounds, b: MarginBounds) -> MarginBounds:
    """Returns per margin the bound (with its rounding) that exceeds its allowance by more."""
    take_b = b.lower - allowance(b) > a.lower - allowance(a)
    return MarginBounds(torch.where(take_b, b.lower, a.lower), torch.where(take_b, b.rounding, a.rounding))


def margin_bounds(prep: Prepared, y: torch.Tensor, method: Method = "best") -> MarginBounds:
    """Returns the margin bounds of every point in `prep` by `method` (no skipping: for tightness studies)."""
    check_method(method)
    if method == "ibp":
        return interval_margins(prep, y)
    linear = _linear_in_passes(prep, y, torch.arange(len(y), device=y.device))
    return linear if method == "crown" else best_of(interval_margins(prep, y), linear)


def _linear_in_passes(prep: Prepared, y: torch.Tensor, rows: torch.Tensor) -> MarginBounds:
    """Returns the linear margin bounds of the points `rows`, FUNCTIONALS_PER_PASS at a time."""
    step = max(1, FUNCTIONALS_PER_PASS // (prep.inputs[-1].lower.shape[1] - 1))
    parts = [linear_margins(prep.select(rows[i : i + step]), y[rows[i : i + step]]) for i in range(0, len(rows), step)]
    return MarginBounds(torch.cat([p.lower for p in parts]), torch.cat([p.rounding for p in parts]))


@torch.no_grad()
@full_precision()
def verified_by(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    radius: RadiusConfig | None = None,
    lam: float | None = None,
    method: Method = "best",
    intermediate: str = "ibp",
) -> torch.Tensor:
    """Returns a bool mask (B,): every margin's bound by `method` clears its rounding allowance.

    "best" decides per margin by whichever of the interval and linear bound clears.
    Linear bounds are computed lazily (see the module docstring): the margins the
    interval bound left open, each point's weakest first, the rest only where it cleared.
    """
    check_method(method)
    prep = prepare(model, x, eps, radius, lam, intermediate)
    interval = interval_margins(prep, y)
    if method == "crown":
        ok = F.one_hot(y, interval.lower.shape[1]).bool()
    else:
        ok = clears(interval, y)
        if method == "ibp":
            return ok.all(1)
    # Stage 1: every open point's weakest open margin; stage 2: the rest, where that one cleared.
    first = (~ok.all(1)).nonzero().flatten()
    ok, failed = _clear_weakest(prep, y, ok, interval.lower, first, limit=1)
    rest = (~ok.all(1) & ~failed).nonzero().flatten()
    return _clear_weakest(prep, y, ok, interval.lower, rest, limit=None)[0].all(1)


def _clear_weakest(
    prep: Prepared,
    y: torch.Tensor,
    ok: torch.Tensor,
    key: torch.Tensor,
    rows: torch.Tensor,
    limit: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (ok, failed): ok (B, K) with the linear decision of up to `limit` open margins of each point in
    `rows` added (all of them for None), weakest first by `key` (the interval bounds); failed (B,): the points
    with a margin that did not clear, which no later stage need try. FUNCTIONALS_PER_PASS per pass.
    """
    ok, failed = ok.clone(), torch.zeros_like(ok[:, 0])
    if len(rows) == 0:
        return ok, failed
    width = int((~ok[rows]).sum(1).max()) if limit is None else limit
    step = max(1, FUNCTIONALS_PER_PASS // width)
    for start in range(0, len(rows), step):
        idx = rows[start : start + step]
        passed, tried = _clears_open(prep.select(idx), y[idx], ok[idx], key[idx], width)
        ok[idx] |= passed
        failed[idx] = (tried & ~passed).any(1)
    return ok, failed


def _clears_open(
    prep: Prepared,
    y: torch.Tensor,
    ok: torch.Tensor,
    key: torch.Tensor,
    width: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (passed, tried), each (B, K) bool: each point's `width` weakest open margins (by key), and
    which of them the linear bound clears.

    Only those margins get a functional (a point with fewer open margins is padded with
    e_y − e_y = 0), so a point the intervals left one margin short costs one functional, not nine.
    """
    need = ~ok  # (B, K); False at j = y
    width = min(width, int(need.sum(1).max()))
    order = key.masked_fill(~need, float("inf")).argsort(dim=1, stable=True)[:, :width]  # weakest open first
    valid = need.gather(1, order)
    classes = torch.where(valid, order, y[:, None])  # (B, S)
    num_classes = ok.shape[1]
    spec = F.one_hot(y, num_classes).unsqueeze(1) - F.one_hot(classes, num_classes)
    lower, rounding = backward(prep, spec.to(prep.inputs[-1].lower.dtype))
    passed = (lower > allowance(MarginBounds(lower, rounding))) & valid
    tried = torch.zeros_like(ok).scatter(1, classes, valid) & need
    return torch.zeros_like(ok).scatter(1, classes, passed) & need, tried
