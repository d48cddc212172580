"""Interval and linear rules of the graph's further node kinds: addition, pooling, reshapes, pass-throughs.

Residual addition (`a + b`, torch.add, Tensor.add; both operands bounded, or one a number):
intervals add (⟨c_a + c_b, r_a + r_b⟩, or the ends where both are held by their ends), and
backward the coefficients pass unchanged to both operands (Σ coef·(a + b) = Σ coef·a + Σ coef·b
exactly); the graph sums a node's coefficients over its consumers (approp.bounds.linear).
Average pooling (AvgPool2d, AdaptiveAvgPool2d and their functional forms) is a fixed linear map
with nonnegative weights: the ends (or centre and radius) map through it exactly, and backward
the coefficients go through its transpose (the pooling's own vector-Jacobian product).
Reshapes (flatten, view, reshape) only rename coordinates and must keep the batch axis;
Identity and Dropout in eval mode are the identity; functional ReLU shares nn.ReLU's rules.

Rounding (the verified decision's allowance, approp.bounds.verify): an addition rounds each
element once, by at most u·(|a| + |b|); a pooling window of k terms by about k·u·max|x|.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .interval import Interval, ParamInterval, is_low_precision
from .linear_rules import Context, Step, _sum_tail, register_backward, relu_backward
from .rules import DISPLAY, Call, UnsupportedLayerError, register, relu_rule

ADD = (operator.add, torch.add, torch.Tensor.add)
RELU = (F.relu, torch.relu, torch.Tensor.relu)
AVG_POOL = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, F.avg_pool2d, F.adaptive_avg_pool2d)
RESHAPE = (torch.flatten, torch.Tensor.flatten, torch.Tensor.view, torch.Tensor.reshape, torch.reshape)
PASS = (nn.Identity, nn.Dropout, nn.Dropout2d)
DISPLAY.update(
    {
        operator.add: "operator.add (+)",
        torch.add: "torch.add",
        torch.relu: "torch.relu",
        F.avg_pool2d: "torch.nn.functional.avg_pool2d",
        torch.flatten: "torch.flatten",
        torch.reshape: "torch.reshape",
    }
)
Params = dict[str, ParamInterval]


def _operands(call: Call) -> tuple[Any, Any]:
    """Returns the two operands of an addition; raises for torch.add's alpha ≠ 1."""
    if call.kwargs.get("alpha", 1) != 1:
        raise UnsupportedLayerError("torch.add with alpha ≠ 1 has no bound rule")
    other = call.args[1] if len(call.args) > 1 else call.kwargs.get("other")
    for v in (call.args[0], other):
        if not isinstance(v, (Interval, int, float)):
            raise UnsupportedLayerError(f"an addition of a {type(v).__name__} has no bound rule")
    return call.args[0], other


@register(*ADD)
def add_rule(call: Call, x: Interval, params: Params) -> Interval:
    """Returns a + b: the ends add where either is held by its ends (unless the other is 16-bit), else
    centres and radii add (both sound: [l_a + l_b, u_a + u_b] = ⟨c_a + c_b, r_a + r_b⟩ in exact arithmetic)."""
    a, b = _operands(call)
    if not isinstance(a, Interval):
        a, b = b, a
    if not isinstance(b, Interval):  # a number shifts the interval
        if a.has_bounds:
            return Interval.from_bounds(a.lower + b, a.upper + b)
        return Interval(a.center + b, a.radius)
    low = is_low_precision(a.center if not a.has_bounds else b.center) if not (a.has_bounds and b.has_bounds) else False
    if (a.has_bounds or b.has_bounds) and not low:
        # fp32 (or wider): the ends add in four passes, and the ReLU that usually follows takes ends;
        # converting the ends operand to ⟨c, r⟩ instead would cost six.
        if not a.has_bounds:
            a, b = b, a  # b is the ⟨c, r⟩ operand, if any: its ends go straight into the sums
        if b.has_bounds or b.shape != a.shape or b.center.dtype != a.lower.dtype:  # in place needs b's shape, dtype
            return Interval.from_bounds(a.lower + b.lower, a.upper + b.upper)
        # In place on the fresh c ∓ r: one new tensor per end (addition's backward needs no input).
        lower = torch.sub(b.center, b.radius).add_(a.lower)
        return Interval.from_bounds(lower, torch.add(b.center, b.radius).add_(a.upper))
    return Interval(a.center + b.center, a.radius + b.radius)  # 16-bit: keep the radius (interval.py)


def _size(iv: Interval) -> torch.Tensor:
    """Returns max(|l|, |u|) of an interval: the magnitude its values reach."""
    return torch.maximum(iv.lower.abs(), iv.upper.abs())


@register_backward(*ADD)
def add_backward(call: Call, coef: torch.Tensor, ctx: Context) -> Step:
    """coef (B, S, *out) → the same coef on each bounded operand; a number b adds Σ coef·b to the constant."""
    a, b = _operands(call)
    bounded = [v for v in (a, b) if isinstance(v, Interval)]
    number = sum(v for v in (a, b) if not isinstance(v, Interval))
    size = _size(ctx.inp) + (_size(ctx.others[0]) if ctx.others else abs(number))  # (B, *out)
    const = _sum_tail(coef) * number if number else coef.new_zeros(coef.shape[:2])
    rounding = _sum_tail(coef.abs() * size.unsqueeze(1))
    return Step(tuple(coef for _ in bounded), const, rounding)


@register(*RELU)
def relu_call_rule(call: Call, x: Interval, params: Params) -> Interval:
    return relu_rule(None, x, params)


@register_backward(*RELU)
def relu_call_backward(call: Call, coef: torch.Tensor, ctx: Context) -> Step:
    return relu_backward(None, coef, ctx)


def _op(layer: Any) -> Any:
    """Returns the tensor → tensor map of a module or of a call (its first argument replaced)."""
    if isinstance(layer, nn.Module):
        return layer
    return lambda t: layer.fn(t, *layer.args[1:], **layer.kwargs)


@register(*AVG_POOL)
def avg_pool_rule(layer: Any, x: Interval, params: Params) -> Interval:
    """Returns the pooled interval: a linear map with weights ≥ 0 maps ends to ends, and ⟨c, r⟩ to ⟨Pc, Pr⟩."""
    op = _op(layer)
    if x.has_bounds:
        return Interval.from_bounds(op(x.lower), op(x.upper), x.nonneg)  # weights >= 0 keep the sign
    return Interval(op(x.center), op(x.radius), x.nonneg)


def transpose(op: Any, coef: torch.Tensor, in_shape: torch.Size) -> torch.Tensor:
    """Returns the transpose of the linear map `op` applied to coef (B, S, *out): (B, S, *in_shape)."""
    bsz, s = coef.shape[:2]
    zeros = coef.new_zeros(bsz * s, *in_shape)
    _, pullback = torch.func.vjp(op, zeros)  # op is linear: its vector-Jacobian product is the transpose
    return pullback(coef.reshape(bsz * s, *coef.shape[2:]))[0].view(bsz, s, *in_shape)


@register_backward(*AVG_POOL)
def avg_pool_backward(layer: Any, coef: torch.Tensor, ctx: Context) -> Step:
    """coef (B, S, C, h, w) → Pᵀcoef (B, S, C, H, W), exactly; rounding: window × Σ|coef_in|·max|x|."""
    in_shape = ctx.inp.shape[1:]
    coef_in = transpose(_op(layer), coef, in_shape)
    window = (
        math.prod(in_shape[1:])
        if isinstance(layer, nn.AdaptiveAvgPool2d) or (isinstance(layer, Call) and layer.fn is F.adaptive_avg_pool2d)
        else _kernel_area(layer)
    )
    rounding = window * _sum_tail(coef_in.abs() * _size(ctx.inp).unsqueeze(1))
    return Step(coef_in, coef.new_zeros(coef.shape[:2]), rounding)


def _kernel_area(layer: Any) -> int:
    """Returns the number of terms an average-pooling window sums."""
    k = (
        layer.kernel_size
        if isinstance(layer, nn.Module)
        else (layer.args[1] if len(layer.args) > 1 else layer.kwargs["kernel_size"])
    )
    return math.prod(k) if isinstance(k, (tuple, list)) else k * k


def _reshape_op(call: Call) -> Any:
    """Returns the call as a tensor → tensor map; Tensor.view becomes reshape (the same values, any strides)."""
    fn = torch.Tensor.reshape if call.fn is torch.Tensor.view else call.fn
    return lambda t: fn(t, *call.args[1:], **call.kwargs)


@register(*RESHAPE)
def reshape_rule(call: Call, x: Interval, params: Params) -> Interval:
    """Returns the reshaped interval; refuses a reshape that moves values across the batch axis."""
    out = x.map_linear(_reshape_op(call))
    if out.shape[0] != x.shape[0]:
        raise UnsupportedLayerError(
            f"{call.fn.__name__} from {tuple(x.shape)} to {tuple(out.shape)} mixes the points of a batch: "
            "the bounds need the batch axis kept (e.g. x.view(x.size(0), -1))"
        )
    return out


@register_backward(*RESHAPE)
def reshape_backward(call: Call, coef: torch.Tensor, ctx: Context) -> Step:
    """coef (B, S, *out) → (B, S, *in): a reshape that keeps the batch axis only renames coordinates."""
    zero = coef.new_zeros(coef.shape[:2])
    return Step(coef.reshape(*coef.shape[:2], *ctx.inp.shape[1:]), zero, zero)


def _check_pass(layer: nn.Module) -> None:
    if layer.training and getattr(layer, "p", 0) > 0:
        raise UnsupportedLayerError(f"{type(layer).__name__} in training mode has no bound rule: call model.eval()")


@register(*PASS)
def pass_rule(layer: nn.Module, x: Interval, params: Params) -> Interval:
    """Returns x: Identity, and Dropout in eval mode (or with p = 0), are the identity."""
    _check_pass(layer)
    return x


@register_backward(*PASS)
def pass_backward(layer: nn.Module, coef: torch.Tensor, ctx: Context) -> Step:
    _check_pass(layer)
    zero = coef.new_zeros(coef.shape[:2])
    return Step(coef, zero, zero)
