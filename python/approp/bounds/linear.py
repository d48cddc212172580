"""Linear (CROWN-style) lower bounds of the margins z_y − z_j over the parameter box and the input ball.

The network with parameters in their box is its midpoint network plus a bounded
additive term at every affine layer k:

    h_k = W_c·a + b_c + δ_k,   |δ_k| ≤ W_r·max(|l|, |u|) + b_r =: d_k,

with [l, u] the interval of the layer's input a from interval propagation (sound
for every parameter in the box and input in the ball). Starting from the
specification c_j = e_y − e_j on the logits, linear functionals are carried
backward node by node over the traced graph (approp.bounds.graph), in reverse
topological order: a node's coefficients are the sum of those its consumers
passed to it (Σ_k coef_k·v = (Σ_k coef_k)·v), so a residual block's input is
processed once, after both branches. Each rule (approp.bounds.linear_rules,
approp.bounds.graph_rules) returns coefficients on its input(s) and a constant such that

    coef_out · layer(a) ≥ coef_in · a + const      for every a in [l, u] and every parameter in the box,

so by induction c_j · z ≥ coef_0 · x + Σ const for every x in the input ball
B∞(x, ε) ∩ [0, 1] (the clipped box [x_l, x_u] that interval propagation uses),
and min over that box of coef_0 · x = Σ coef_0⁺·x_l + coef_0⁻·x_u (coordinatewise).
At ε = λ = 0 every interval is a point, every ReLU and pool is stable or
dominated, and the bound is the margin itself.

intermediate="crown" tightens the pre-activation bounds of the ReLUs that read a
Linear layer's output (the dense part) by the same backward pass (specs ±e_i for the
unstable units) and intersects them with the interval bounds: both are sound,
so their intersection is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn

from ..config import RadiusConfig
from ..precision import full_precision
from .graph import Graph, require, trace
from .interval import Interval, ParamInterval, input_ball
from .linear_rules import BACKWARD_RULES, Context, Step, _log_fan, _sum_tail
from .propagate import evaluate, resolve
from .rules import Call

Intermediate = Literal["ibp", "crown"]
# Functionals per chunk of the crown intermediate pass (points × specs): small chunks stay in cache.
CHUNK = 128


@dataclass
class Prepared:
    """A batch's interval of every graph node, and every node's parameter boxes.

    inputs[i]: node i's value (inputs[0] the input ball B∞(x, ε) ∩ [0, 1], inputs[-1] = inputs[graph.output]
    the logits); in a chain network node k + 1 is layer k, so inputs[k] is the interval entering layer k.
    """

    graph: Graph
    inputs: list
    boxes: list[dict[str, ParamInterval]]

    def select(self, rows: torch.Tensor) -> Prepared:
        """Returns the same for the points `rows` (a bool mask or indices over the batch)."""
        inputs = [
            Interval.from_bounds(iv.lower[rows], iv.upper[rows]) if isinstance(iv, Interval) else iv
            for iv in self.inputs
        ]
        return Prepared(self.graph, inputs, self.boxes)


def check_intermediate(intermediate: str) -> None:
    """Raises ValueError naming `intermediate` unless it is 'ibp' or 'crown'."""
    if intermediate not in get_args(Intermediate):
        raise ValueError(f"intermediate must be one of {get_args(Intermediate)}; got {intermediate!r}")


def prepare(
    model: nn.Module,
    x: torch.Tensor,
    eps: float,
    radius: RadiusConfig | None,
    lam: float | None = None,
    intermediate: Intermediate = "ibp",
) -> Prepared:
    """Returns the interval of every node for images x (B, C, H, W) over the ball and box."""
    if eps < 0:
        raise ValueError(f"eps must be >= 0; got {eps}")
    if lam is not None and lam < 0:
        raise ValueError(f"lam must be >= 0; got {lam}")
    check_intermediate(intermediate)
    graph = require(trace(model), linear=True)  # name an unsupported node before any work

    def refine(i: int, values: list, boxes: list) -> None:
        node = graph.nodes[i]
        if isinstance(node.module, nn.Linear) and any(graph.nodes[c].is_relu for c in node.consumers):
            values[i] = _refine(Prepared(graph, values, boxes), i)

    hook = refine if intermediate == "crown" else None
    values, boxes = evaluate(graph, input_ball(x, eps), radius, lam, keep=True, on_node=hook)
    return Prepared(graph, values, boxes)


def _node_step(prep: Prepared, i: int, coef: torch.Tensor, cache: dict) -> Step:
    """Returns node i's backward step for coef (B, S, *out) on its output."""
    node = prep.graph.nodes[i]
    ctx = Context(prep.inputs[node.bounded[0]], prep.boxes[i], cache, tuple(prep.inputs[j] for j in node.bounded[1:]))
    if node.module is not None:
        layer = node.module
    else:
        layer = Call(node.key, resolve(node.args, prep.inputs), resolve(node.kwargs, prep.inputs))
    return BACKWARD_RULES[node.key](layer, coef, ctx)


def backward(
    prep: Prepared,
    coef: torch.Tensor,
    caches: dict | None = None,
    start: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (lower, rounding), each (B, S): lower bounds of coef · (the value of node `start`).

    coef (B, S, *out) holds S functionals per point on node `start`'s value (default: the output).
    Nodes are processed in reverse topological order, so every consumer of a node has passed its
    coefficients on before the node is processed: they are summed there (a residual block's input
    gets the shortcut's and the branch's). caches: per-node relaxations kept across calls on `prep`.
    """
    caches = caches if caches is not None else {}
    start = prep.graph.output if start is None else start
    const = coef.new_zeros(coef.shape[:2])
    rounding = coef.new_zeros(coef.shape[:2])
    acc = {start: coef}  # node → coefficients on its value (B, S, *shape)
    for i in range(start, 0, -1):
        if i not in acc:
            continue
        step = _node_step(prep, i, acc.pop(i), caches.setdefault(i, {}))
        const, rounding = const + step.const, rounding + step.rounding
        for j, c in zip(prep.graph.nodes[i].bounded, step.coef if isinstance(step.coef, tuple) else (step.coef,)):
            if j in acc:  # a second consumer: the sum rounds by at most u·(|a| + |b|) per element
                size = _magnitude(prep.inputs[j]).unsqueeze(1)
                rounding = rounding + _sum_tail((acc[j].abs() + c.abs()) * size)
                acc[j] = acc[j] + c
            else:
                acc[j] = c
    coef = acc.get(0, torch.zeros_like(prep.inputs[0].lower).unsqueeze(1))
    ball = prep.inputs[0]  # B∞(x, ε) ∩ [0, 1] as [x_l, x_u]
    lo, hi = ball.lower.unsqueeze(1), ball.upper.unsqueeze(1)
    lower = const + _sum_tail(coef.clamp(min=0) * lo + coef.clamp(max=0) * hi)
    size = torch.maximum(lo.abs(), hi.abs())
    rounding = rounding + _log_fan(coef.shape[2:]) * _sum_tail(coef.abs() * size)
    return lower, rounding


def _magnitude(iv: Interval) -> torch.Tensor:
    """Returns max(|l|, |u|) (B, *shape)."""
    return torch.maximum(iv.lower.abs(), iv.upper.abs())


def _refine(prep: Prepared, node: int) -> Interval:
    """Returns node's interval (B, n) intersected with the backward bounds of the units unstable at some point."""
    ibp = prep.inputs[node]
    lower, upper = ibp.lower, ibp.upper
    units = ((lower < 0) & (upper > 0)).any(0).nonzero().flatten()  # (n_u,)
    if units.numel() == 0:
        return ibp
    bsz, n = lower.shape
    eye = torch.eye(n, dtype=lower.dtype, device=lower.device)[units]  # (n_u, n)
    specs = torch.cat([eye, -eye])  # lower of h_i, and of −h_i (= −upper)
    caches: dict = {}
    step = max(1, CHUNK // bsz)
    found = [
        backward(prep, specs[i : i + step].expand(bsz, -1, -1), caches, start=node)[0]
        for i in range(0, len(specs), step)
    ]
    bound = torch.cat(found, dim=1)  # (B, 2 n_u)
    k = len(units)
    new_lower, new_upper = lower.clone(), upper.clone()
    new_lower[:, units] = torch.maximum(lower[:, units], bound[:, :k])
    new_upper[:, units] = torch.minimum(upper[:, units], -bound[:, k:])
    return Interval.from_bounds(new_lower, new_upper)


def margin_specs(y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (others (B, K−1), spec (B, K−1, K)): the classes j ≠ y and the rows e_y − e_j."""
    ar = torch.arange(num_classes - 1, device=y.device)
    others = ar + (ar >= y[:, None]).long()  # skips y
    own = torch.nn.functional.one_hot(y, num_classes).unsqueeze(1)
    spec = own - torch.nn.functional.one_hot(others, num_classes)
    return others, spec


@dataclass
class MarginBounds:
    """lower (B, K): lower bounds of z_y − z_j, 0 at j = y; rounding (B, K): their rounding magnitude."""

    lower: torch.Tensor
    rounding: torch.Tensor


def linear_margins(prep: Prepared, y: torch.Tensor) -> MarginBounds:
    """Returns the linear margin bounds (and rounding magnitudes) of the points in `prep`."""
    num_classes = prep.inputs[-1].lower.shape[1]
    others, spec = margin_specs(y, num_classes)
    lower, rounding = backward(prep, spec.to(prep.inputs[-1].lower.dtype))  # (B, K−1)
    full = lower.new_zeros(len(y), num_classes)
    return MarginBounds(full.scatter(1, others, lower), full.scatter(1, others, rounding))


@full_precision()
def linear_margin_bounds(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    radius: RadiusConfig | None = None,
    lam: float | None = None,
    intermediate: Intermediate = "ibp",
) -> torch.Tensor:
    """Returns linear lower bounds of z_y − z_j (B, K), 0 at j = y, over the ball and the parameter box.

    x: images (B, C, H, W) in [0, 1]; eps >= 0 on the pixel scale; radius None perturbs nothing;
    lam overrides radius.lam; intermediate: "ibp" (interval pre-activation bounds) or "crown"
    (backward bounds for the ReLUs after a Linear layer, intersected with the interval ones).
    """
    return linear_margins(prepare(model, x, eps, radius, lam, intermediate), y).lower
