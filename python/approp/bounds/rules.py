"""One interval rule per layer kind, behind one contract.

A rule is ``rule(layer, x: Interval, params: dict[str, ParamInterval]) -> Interval``
and must be sound: for every parameter in the box and every input in `x`, the
layer's output lies in the returned interval. `params` holds the boxes of the
layer's own parameters by local name ("weight", "bias").

Low precision (bf16 autocast): affine rules need nothing special (their
products accumulate in fp32 and every radius term is a sum of nonnegative
terms), but a rule that goes through the ends would round the radius away
(see approp.bounds.interval). The ReLU keeps ⟨c, r⟩ of stable-active units
bit for bit, gives dead ones ⟨0, 0⟩ and unstable ones ⟨(c + r)/2, (c + r)/2⟩
(`relu_keep_radius`); max-pool takes the fp32 ends that Interval forms from
a bf16 ⟨c, r⟩ and leaves its output in fp32 for the next affine rule;
Normalize and Flatten keep whichever form they get. fp32 intervals take the
end-based paths, which move less memory. Cost, CNN4 batch 128, one thread,
APP step at κ = 0 in bf16: the precise ReLU and max-pool add about 15 % to
a step that keeps the ends in bf16 (benchmarks/bounds_speed.py --precision).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Normalize
from .interval import Interval, ParamInterval, is_low_precision

Rule = Callable[[nn.Module, Interval, dict[str, ParamInterval]], Interval]
RULES: dict[type, Rule] = {}


class UnsupportedLayerError(TypeError):
    """A layer for which no interval rule is registered."""


def register_in(table: dict[type, Any]) -> Callable[..., Callable[[Any], Any]]:
    """Returns a `register(*kinds)` decorator that files a rule under each layer class in `table`."""

    def register(*kinds: type) -> Callable[[Any], Any]:
        def deco(rule: Any) -> Any:
            for kind in kinds:
                table[kind] = rule
            return rule

        return deco

    return register


def find_rule(table: dict[type, Any], layer: nn.Module, index: int | str, what: str) -> Any:
    """Returns the rule in `table` for `layer`'s exact class, or raises UnsupportedLayerError naming it."""
    rule = table.get(type(layer))
    if rule is None:
        supported = ", ".join(sorted(k.__name__ for k in table))
        raise UnsupportedLayerError(
            f"no {what} for layer {index} ({type(layer).__name__}); supported: {supported}"
        )
    return rule


register = register_in(RULES)  # register(*kinds): decorator for interval rules


def rule_for(layer: nn.Module, index: int | str = "?") -> Rule:
    """Returns the interval rule for `layer`'s exact class, or raises UnsupportedLayerError naming it."""
    return find_rule(RULES, layer, index, "interval rule")


def affine(
    x: Interval, w: ParamInterval, b: ParamInterval | None, op: Callable[..., torch.Tensor]
) -> Interval:
    """Returns the midpoint-radius image of x under y = op(x, W, b) with W, b in boxes.

    y_c = op(x_c, W_c) + b_c
    y_r = |W_c|·x_r + W_r·(|x_c| + x_r) + b_r = op(x_r, |W_c| + W_r) + op(|x_c|, W_r) + b_r
    The two radius products share one call on inputs and weights stacked along
    the input-feature axis (dim 1 for both conv and linear). For W_r = λ|W_c|
    they fold into one: op((1+λ)·x_r + λ|x_c|, |W_c|). Biases go into the
    calls, and the ½ of an interval held by its ends goes into the weights,
    so that activations are touched as few times as possible.
    """
    s, d, h = x.sum_and_diff()  # center = h·s, radius = h·d
    bc = None if b is None else b.center
    br = None if b is None else b.radius
    yc = op(s, w.center * h if h != 1.0 else w.center, bc)
    w_abs = w.center.abs()
    if w.radius is None:
        yr = op(d, w_abs * h, br)
    elif w.rel is not None:
        lam = w.rel
        yr = op(torch.add(d, s.abs(), alpha=lam / (1 + lam)), w_abs * ((1 + lam) * h), br)
    else:
        stacked_x = torch.cat([d, s.abs()], dim=1)
        stacked_w = torch.cat([(w_abs + w.radius) * h, w.radius * h], dim=1)
        yr = op(stacked_x, stacked_w, br)
    return Interval(yc, yr)


@register(nn.Linear)
def linear_rule(layer: nn.Linear, x: Interval, params: dict[str, ParamInterval]) -> Interval:
    return affine(x, params["weight"], params.get("bias"), F.linear)


@register(nn.Conv2d)
def conv2d_rule(layer: nn.Conv2d, x: Interval, params: dict[str, ParamInterval]) -> Interval:
    if layer.groups != 1 or layer.padding_mode != "zeros":
        raise UnsupportedLayerError(
            f"Conv2d with groups={layer.groups}, padding_mode={layer.padding_mode!r} "
            "has no interval rule (only groups=1 with zero padding)"
        )

    def op(inp: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(inp, weight, bias, layer.stride, layer.padding, layer.dilation)

    return affine(x, params["weight"], params.get("bias"), op)


@register(nn.ReLU)
def relu_rule(layer: nn.ReLU, x: Interval, params: dict[str, ParamInterval]) -> Interval:
    if x.has_bounds:
        return x.map_monotone(F.relu)
    if is_low_precision(x.center):
        return relu_keep_radius(x.center, x.radius)
    # The ends are fresh tensors here, so ReLU may run in place (autograd allows it:
    # subtraction's backward does not need its output): no extra allocation per end.
    lower = torch.sub(x.center, x.radius).relu_()
    upper = torch.add(x.center, x.radius).relu_()
    return Interval.from_bounds(lower, upper)


def relu_keep_radius(c: torch.Tensor, r: torch.Tensor) -> Interval:
    """Returns relu over ⟨c, r⟩ in midpoint-radius form, never forming c − r.

    With q = relu(r − c): ⟨relu(c + q/2), relu(r − q/2)⟩. Stable-active units (c >= r)
    have q = 0 exactly and keep ⟨c, r⟩ bit for bit; unstable ones (|c| < r) get
    [0, c + r] = ⟨(c + r)/2, (c + r)/2⟩ from r − c, which has no cancellation there;
    dead ones (c <= −r) get ⟨0, 0⟩. Used for 16-bit intervals, where the ends c ± r
    would lose the radius. Only subtraction, addition and ReLU: on a CPU, bf16
    `where`/`minimum` (and their backward) ran 5–8× slower than this whole rule.
    """
    q = (r - c).relu_()  # (same shape as c): 0 where stable-active
    return Interval(torch.add(c, q, alpha=0.5).relu_(), torch.sub(r, q, alpha=0.5).relu_())


@register(nn.MaxPool2d)
def maxpool_rule(layer: nn.MaxPool2d, x: Interval, params: dict[str, ParamInterval]) -> Interval:
    return x.map_monotone(layer)


@register(nn.Flatten)
def flatten_rule(layer: nn.Flatten, x: Interval, params: dict[str, ParamInterval]) -> Interval:
    return x.map_linear(layer)


@register(Normalize)
def normalize_rule(layer: Normalize, x: Interval, params: dict[str, ParamInterval]) -> Interval:
    # A positive diagonal affine map: monotone on the ends, or center maps and radius scales.
    if x.has_bounds:
        return x.map_monotone(layer)
    return Interval(layer(x.center), x.radius / layer.std)
