"""One backward (linear-bound) rule per layer kind, behind one contract.

A backward rule is ``rule(layer, coef, ctx) -> Step`` with coef (B, S, *out):
S linear functionals per point on the layer's output. It must be sound: for
every parameter in the box and every input a of the layer in ctx.inp,

    Σ coef · layer(a)  ≥  Σ step.coef · a + step.const          (per point and functional)

so that chaining rules from the last layer to the first keeps a valid lower
bound of the specification. ctx.inp is the interval of the layer's input from
interval propagation; ctx.cache keeps per-batch quantities (relaxations, the
perturbation bound d) across the calls of one bound computation.

step.rounding (B, S) is a first-order magnitude of the float rounding the step
commits: Σ fan × |terms summed|, used by the verified decision's allowance
(see approp.bounds.verify).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Normalize
from .interval import Interval, ParamInterval
from .rules import Column, UnsupportedLayerError, find_rule, register_in


@dataclass
class Context:
    """What a backward rule may use: the layer's input interval, its parameter boxes, a cache.

    others: the intervals of a node's further bounded inputs (the second operand of an addition).
    """

    inp: Interval
    params: dict[str, ParamInterval]
    cache: dict[str, torch.Tensor] = field(default_factory=dict)
    others: tuple[Interval, ...] = ()


@dataclass
class Step:
    """coef (B, S, *in) on the layer's input, const (B, S), rounding magnitude (B, S).

    A node with several bounded inputs (an addition) gives a tuple of coefficients, one per input in order.
    """

    coef: torch.Tensor | tuple[torch.Tensor, ...]
    const: torch.Tensor
    rounding: torch.Tensor


BackwardRule = Callable[[Any, torch.Tensor, Context], Step]
BACKWARD_RULES = Column("linear")  # the linear column of approp.bounds.rules.KINDS


register_backward = register_in(BACKWARD_RULES)  # register_backward(*kinds): decorator


def backward_rule_for(layer: nn.Module, index: int | str = "?") -> BackwardRule:
    """Returns the backward rule for `layer`'s class, or raises UnsupportedLayerError naming it."""
    return find_rule(BACKWARD_RULES, layer, index, "linear-bound rule")


def _sum_tail(t: torch.Tensor) -> torch.Tensor:
    """Returns t (B, S, ...) summed over everything after the first two dims: (B, S)."""
    return t.flatten(2).sum(2)


def _dot_tail(coef: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Returns Σ_tail coef·v per functional: coef (B, S, *shape), v (B, *shape, k) → (B, S, k).

    One batched matrix product: no (B, S, *shape) temporary is formed (the pass is
    bound by memory traffic, not arithmetic).
    """
    bsz, s = coef.shape[:2]
    return torch.bmm(coef.reshape(bsz, s, -1), v.reshape(bsz, -1, v.shape[-1]))


def _log_fan(shape: torch.Size) -> float:
    """Returns the rounding depth of a pairwise reduction over a (B, S, *shape) tail."""
    return math.log2(max(2, math.prod(shape)))


def affine_fan(weight: torch.Tensor) -> int:
    """Returns the rounding depth of one affine layer's products: twice its larger fan (in or out).

    The interval pass stacks two products along the input axis (twice the fan-in);
    the transpose sums over the fan-out.
    """
    c_out, c_in = weight.shape[:2]
    return 2 * max(c_in, c_out) * math.prod(weight.shape[2:])


def _affine_cache(ctx: Context, op: Callable) -> dict[str, torch.Tensor]:
    """Returns (cached) d = W_r·m + b_r and the magnitude |W_c|·m + |b_c| + d, m = max(|l|, |u|).

    |δ| = |(W − W_c)·a + (b − b_c)| ≤ W_r·|a| + b_r ≤ W_r·m + b_r = d for every W, b in
    their box and a in [l, u]: the layer is its center layer plus δ with |δ| ≤ d.
    cache["d_mag"] is (B, 2, n): d and the magnitude, flattened over the layer's output.
    """
    if "d_mag" not in ctx.cache:
        w, b = ctx.params["weight"], ctx.params.get("bias")
        m = torch.maximum(ctx.inp.lower.abs(), ctx.inp.upper.abs())  # (B, *in)
        w_abs = w.center.abs()
        if w.radius is not None and w.rel is None:  # W_r·m and |W_c|·m in one product
            d, w_m = op(m, torch.cat([w.radius, w_abs]), None).chunk(2, dim=1)  # (B, *out) each
        else:
            w_m = op(m, w_abs, None)  # |W_c|·m
            d = torch.zeros_like(w_m) if w.radius is None else w_m * w.rel  # W_r = rel·|W_c|
        per_channel = (-1,) + (1,) * (d.dim() - 2)
        if b is not None:
            w_m = w_m + b.center.abs().view(per_channel)
            ctx.cache["bias"] = b.center.view(per_channel).expand(d.shape[1:]).reshape(-1)
            if b.radius is not None:
                d = d + b.radius.view(per_channel)
        ctx.cache["d_mag"] = torch.stack([d, w_m + d], dim=1).flatten(2)  # (B, 2, n)
    return ctx.cache


def _affine_step(coef: torch.Tensor, coef_in: torch.Tensor, ctx: Context, cache, fan: int) -> Step:
    """Returns the step of an affine layer given its transposed coefficients coef_in.

    Σ coef·(W_c a + b_c + δ) = Σ coef_in·a + Σ coef·b_c + Σ coef·δ and Σ coef·δ ≥ −Σ |coef|·d.
    """
    # Σ|coef|·d, Σ|coef|·magnitude (B, S, 2) in one batched product; the transpose is a view.
    both = _dot_tail(coef.abs(), cache["d_mag"].transpose(1, 2))
    const = -both[..., 0]
    if "bias" in cache:
        const = const + coef.flatten(2) @ cache["bias"]
    scale = fan + _log_fan(coef.shape[2:])
    return Step(coef_in, const, scale * both[..., 1])


@register_backward(nn.Linear)
def linear_backward(layer: nn.Linear, coef: torch.Tensor, ctx: Context) -> Step:
    """coef (B, S, out) → coef·W_c (B, S, in)."""
    w = ctx.params["weight"]
    fan = affine_fan(w.center)
    cache = _affine_cache(ctx, F.linear)
    return _affine_step(coef, coef @ w.center, ctx, cache, fan)


@register_backward(nn.Conv2d)
def conv2d_backward(layer: nn.Conv2d, coef: torch.Tensor, ctx: Context) -> Step:
    """coef (B, S, C_out, H', W') → conv_transpose2d(coef, W_c) (B, S, C_in, H, W), exactly the transpose.

    output_padding restores the rows/columns a strided convolution drops, so the
    transpose maps onto the full input shape (dropped positions get coefficient 0).
    """
    if layer.groups != 1 or layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        raise UnsupportedLayerError(
            f"Conv2d with groups={layer.groups}, padding={layer.padding!r}, padding_mode="
            f"{layer.padding_mode!r} has no linear-bound rule (only groups=1, numeric zero padding)"
        )
    w = ctx.params["weight"]

    def op(inp: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(inp, weight, bias, layer.stride, layer.padding, layer.dilation)

    fan = affine_fan(w.center)
    cache = _affine_cache(ctx, op)
    bsz, s = coef.shape[:2]
    in_shape = ctx.inp.lower.shape[1:]  # (C_in, H, W)
    out_pad = []
    for dim in range(2):
        full = (coef.shape[3 + dim] - 1) * layer.stride[dim] - 2 * layer.padding[dim]
        full += layer.dilation[dim] * (w.center.shape[2 + dim] - 1) + 1
        out_pad.append(in_shape[1 + dim] - full)
    flat = coef.reshape(bsz * s, *coef.shape[2:])
    if layer.stride == (1, 1) and layer.dilation == (1, 1) and out_pad == [0, 0]:
        # The same map as a plain convolution with the kernel transposed and flipped, which
        # takes the fast CPU path (the transposed convolution does not).
        kh, kw = w.center.shape[2:]
        pad = (kh - 1 - layer.padding[0], kw - 1 - layer.padding[1])
        coef_in = F.conv2d(flat, w.center.transpose(0, 1).flip(2, 3), None, 1, pad)
    else:
        coef_in = F.conv_transpose2d(
            flat, w.center, None, layer.stride, layer.padding, tuple(out_pad), 1, layer.dilation
        )
    return _affine_step(coef, coef_in.view(bsz, s, *in_shape), ctx, cache, fan)


def _relu_relaxation(inp: Interval, cache: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Returns (cached) slopes of the lower relaxation α·h and the chord s·h + t, given h ∈ [l, u].

    With u⁺ = max(u, 0) and l⁻ = min(l, 0): s = u⁺/(u⁺ − l⁻) and t = −s·l⁻.
    Stable (l ≥ 0 < u): s = 1, t = 0, α = 1: relu = h. Stable (u ≤ 0): s = t = α = 0: relu = 0.
    Unstable (l < 0 < u): relu(h) ≥ α·h for any α ∈ [0, 1] (CROWN's adaptive choice: α = 1
    where u ≥ −l, else 0), and relu(h) ≤ s·(h − l) with s = u/(u − l) on [l, u] (the chord:
    relu is convex, so it lies below the line through (l, 0) and (u, u)). l = u = 0: h = 0,
    so any slope is exact (here s = α = 0).
    """
    if "alpha" not in cache:
        l, u = inp.lower, inp.upper
        up, lo = u.clamp(min=0), l.clamp(max=0)
        slope = up / (up - lo).clamp(min=torch.finfo(u.dtype).tiny)
        cache["offset"] = -slope * lo  # ≥ 0
        alpha = ((up >= -lo) & (u > 0)).to(u.dtype)
        cache["alpha"] = alpha
        cache["slope_minus_alpha"] = slope - alpha
    return cache


@register_backward(nn.ReLU)
def relu_backward(layer: nn.ReLU, coef: torch.Tensor, ctx: Context) -> Step:
    """coef ≥ 0 takes the lower relaxation α·h, coef < 0 the upper s·h + t: both bound coef·relu(h) below."""
    r = _relu_relaxation(ctx.inp, ctx.cache)
    neg = coef.clamp(max=0)
    # α·coef⁺ + s·coef⁻ = α·coef + (s − α)·coef⁻: three passes over coef, no comparison mask.
    coef_in = torch.addcmul(coef * r["alpha"].unsqueeze(1), neg, r["slope_minus_alpha"].unsqueeze(1))
    const = _dot_tail(neg, r["offset"].unsqueeze(-1)).squeeze(-1)  # ≤ 0
    return Step(coef_in, const, _log_fan(coef.shape[2:]) * -const)


def _pool_relaxation(inp: Interval, cache: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Returns (cached) the inputs picked by the lower and upper relaxation of 2×2 max-pooling.

    lower: out = max_i x_i ≥ x_i* for i* = argmax_i l_i (any i is sound; this one is tightest at l).
    upper: with i* = argmax_i u_i and u₂ the largest u of the other inputs, if l_i* ≥ u₂ then
    x_i* ≥ x_j for all j and out = x_i* exactly (the input dominates); otherwise out ≤ u_i* (a constant).
    Picks are positions in the flattened H·W plane (max-pooling's own indices; odd edges dropped).
    """
    if "low" not in cache:
        lower, upper = inp.lower, inp.upper  # (B, C, H, W)
        _, low = F.max_pool2d(lower, 2, return_indices=True)  # (B, C, h, w)
        top, up = F.max_pool2d(upper, 2, return_indices=True)
        others = upper.flatten(2).scatter(-1, up.flatten(2), float("-inf")).view_as(upper)
        second = F.max_pool2d(others, 2)  # u₂
        dominant = lower.flatten(2).gather(-1, up.flatten(2)).view_as(top) >= second
        cache["low"], cache["up"] = low.flatten(2), up.flatten(2)  # (B, C, h·w)
        cache["dominant"] = dominant.flatten(2).to(upper.dtype)
        cache["up_const"] = torch.where(dominant, torch.zeros_like(top), top).flatten(2).unsqueeze(-1)
    return cache


@register_backward(nn.MaxPool2d)
def maxpool_backward(layer: nn.MaxPool2d, coef: torch.Tensor, ctx: Context) -> Step:
    """coef (B, S, C, h, w) → (B, S, C, H, W): each output's coefficient moves onto the picked input.

    coef ≥ 0 goes to the lower pick; coef < 0 to the dominating input, or into the constant u_i*.
    """
    ks, st = layer.kernel_size, layer.stride
    if (
        ks not in (2, (2, 2))
        or st not in (2, (2, 2))
        or layer.padding not in (0, (0, 0))
        or layer.dilation not in (1, (1, 1))
        or layer.ceil_mode
    ):
        raise UnsupportedLayerError(
            "MaxPool2d has a linear-bound rule only for kernel 2, stride 2, no padding, "
            f"dilation 1, floor mode; got kernel {ks}, stride {st}, padding {layer.padding}"
        )
    r = _pool_relaxation(ctx.inp, ctx.cache)
    bsz, s, c = coef.shape[:3]
    height, width = ctx.inp.lower.shape[-2:]
    flat = coef.reshape(bsz, s, c, -1)  # (B, S, C, h·w)
    neg = flat.clamp(max=0)
    full = coef.new_zeros(bsz, s, c, height * width)
    # Windows are disjoint, so the lower picks are distinct positions: scatter, then add the upper ones.
    full.scatter_(-1, r["low"].unsqueeze(1).expand_as(flat), flat.clamp(min=0))
    full.scatter_add_(-1, r["up"].unsqueeze(1).expand_as(flat), neg * r["dominant"].unsqueeze(1))
    const = _dot_tail(neg, r["up_const"]).squeeze(-1)
    return Step(full.view(bsz, s, c, height, width), const, _log_fan(coef.shape[2:]) * -const)


@register_backward(nn.Flatten)
def flatten_backward(layer: nn.Flatten, coef: torch.Tensor, ctx: Context) -> Step:
    """coef (B, S, n) → (B, S, *in): flattening only renames coordinates."""
    if layer.start_dim != 1 or layer.end_dim != -1:
        raise UnsupportedLayerError("Flatten has a linear-bound rule only for start_dim=1, end_dim=-1")
    zero = coef.new_zeros(coef.shape[:2])
    return Step(coef.reshape(*coef.shape[:2], *ctx.inp.lower.shape[1:]), zero, zero)


@register_backward(Normalize)
def normalize_backward(layer: Normalize, coef: torch.Tensor, ctx: Context) -> Step:
    """coef·(x − μ)/σ = (coef/σ)·x − coef·μ/σ, exactly."""
    std, mean = layer.std.unsqueeze(1), layer.mean.unsqueeze(1)  # (1, 1, C, 1, 1)
    coef_in = coef / std
    shifted = coef_in * mean
    const = -_sum_tail(shifted)
    return Step(coef_in, const, _log_fan(coef.shape[2:]) * _sum_tail(shifted.abs()))
