"""One interval rule per layer kind, behind one contract.

A rule is ``rule(layer, x: Interval, params: dict[str, ParamInterval]) -> Interval``
and must be sound: for every parameter in the box and every input in `x`, the
layer's output lies in the returned interval. `params` holds the boxes of the
layer's own parameters by local name ("weight", "bias").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..models import Normalize
from .interval import Interval, ParamInterval

Rule = Callable[[nn.Module, Interval, dict[str, ParamInterval]], Interval]
RULES: dict[type, Rule] = {}


class UnsupportedLayerError(TypeError):
    """A layer for which no interval rule is registered."""


def register(*kinds: type) -> Callable[[Rule], Rule]:
    """Returns a decorator registering a rule for the given layer classes."""

    def deco(rule: Rule) -> Rule:
        for kind in kinds:
            RULES[kind] = rule
        return rule

    return deco


def rule_for(layer: nn.Module, index: int | str = "?") -> Rule:
    """Returns the rule for `layer`'s exact class, or raises UnsupportedLayerError naming it."""
    rule = RULES.get(type(layer))
    if rule is None:
        supported = ", ".join(sorted(k.__name__ for k in RULES))
        raise UnsupportedLayerError(
            f"no interval rule for layer {index} ({type(layer).__name__}); supported: {supported}"
        )
    return rule


def affine(
    x: Interval, w: ParamInterval, b: ParamInterval | None, op: Callable[..., torch.Tensor]
) -> Interval:
    """Returns the midpoint-radius image of x under y = op(x, W) + b with W, b in boxes.

    y_c = op(x_c, W_c) + b_c
    y_r = op(x_r, |W_c|) + op(|x_c| + x_r, W_r) + b_r
    The two radius products share one call on inputs and weights stacked along
    the input-feature axis (dim 1 for both conv and linear). For W_r = λ|W_c|
    they collapse to op((1+λ)x_r + λ|x_c|, |W_c|): two products in all.
    """
    yc = op(x.center, w.center)
    w_abs = w.center.abs()
    if w.radius is None:
        yr = op(x.radius, w_abs)
    elif w.rel is not None:
        yr = op((1 + w.rel) * x.radius + w.rel * x.center.abs(), w_abs)
    else:
        stacked_x = torch.cat([x.radius, x.center.abs() + x.radius], dim=1)
        stacked_w = torch.cat([w_abs, w.radius], dim=1)
        yr = op(stacked_x, stacked_w)
    if b is not None:
        shape = (1, -1) + (1,) * (yc.dim() - 2)  # broadcast over batch and spatial dims
        yc = yc + b.center.view(shape)
        if b.radius is not None:
            yr = yr + b.radius.view(shape)
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

    def op(inp: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv2d(inp, weight, None, layer.stride, layer.padding, layer.dilation)

    return affine(x, params["weight"], params.get("bias"), op)


@register(nn.ReLU)
def relu_rule(layer: nn.ReLU, x: Interval, params: dict[str, ParamInterval]) -> Interval:
    return x.map_monotone(F.relu)


@register(nn.MaxPool2d)
def maxpool_rule(layer: nn.MaxPool2d, x: Interval, params: dict[str, ParamInterval]) -> Interval:
    return x.map_monotone(layer)


@register(nn.Flatten)
def flatten_rule(layer: nn.Flatten, x: Interval, params: dict[str, ParamInterval]) -> Interval:
    return Interval(layer(x.center), layer(x.radius))


@register(Normalize)
def normalize_rule(layer: Normalize, x: Interval, params: dict[str, ParamInterval]) -> Interval:
    # A positive diagonal affine map: the center maps, the radius scales.
    return Interval(layer(x.center), x.radius / layer.std)
