"""BatchNorm in the bounds: which statistics, and its interval and linear (backward) rules.

A BatchNorm layer with statistics μ, σ² (per channel) and parameters γ, β is the
per-channel affine map

    y = γ·(x − μ)/s + β,   s = √(σ² + e),

and γ, β are parameters like any other: the box perturbs them by the radius
(γ ∈ ⟨γ_c, γ_r⟩, β ∈ ⟨β_c, β_r⟩; both are one-dimensional, so `radius.perturb_biases`
decides whether they move). μ and σ² are constants of the bound:

- eval mode: the running statistics (buffers, carried by checkpoints);
- train mode: the statistics of the *clean* batch through the *midpoint* network,
  recorded by its clean forward pass inside `clean_statistics(model)` (Shi et al.
  2021, CTBench: statistics always from the clean input). The bound pass never
  computes statistics from interval ends and never updates the running ones; a
  train-mode BatchNorm with nothing recorded is an error, not a guess.

What the bounds guarantee (exact arithmetic):
- eval mode: for every θ̃ in the box and x̃ in the ball, the eval-mode network f_θ̃(x̃)
  lies in the bounds — the network that is evaluated and deployed.
- train mode: for every θ̃ in the box and x̃ in the ball, the network whose BatchNorm
  layers are the fixed affine maps with the recorded (μ, σ²) lies in the bounds. It
  is not a statement about the train-mode network with θ̃, whose batch statistics
  would move with θ̃ and with the whole perturbed batch: the statistics are fixed at
  the clean midpoint network's, as in the certified-training literature. The
  recorded statistics keep their autograd graph, so training differentiates
  through them exactly as through an ordinary BatchNorm forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import batch_var_mean
from .interval import Interval, ParamInterval
from .linear_rules import Context, Step, _affine_step, register_backward
from .rules import UnsupportedLayerError, register

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
# Rounding depth of the map per element: x − μ, the scale γ/s (add, sqrt, divide), one product,
# one sum, and the radius' three terms: a small constant beside an affine layer's 2·fan.
BN_FAN = 8

Stats = dict[int, tuple[torch.Tensor, torch.Tensor]]  # id(layer) → (mean (C,), biased variance (C,))
_RECORDED: ContextVar[Stats | None] = ContextVar("approp_bn_statistics", default=None)


class BatchNormStatisticsError(RuntimeError):
    """A train-mode BatchNorm reached by the bounds without recorded clean-batch statistics."""


def has_batchnorm(model: nn.Module) -> bool:
    """Returns whether any submodule of `model` is a BatchNorm layer."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _record(stats: Stats):
    """Returns a forward hook that stores a train-mode BatchNorm's batch mean and biased variance."""

    def hook(layer: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if layer.training:
            # x (B, C) or (B, C, H, W); (C,) each: what the forward normalised by (all ranks' under DDP)
            var, mean = batch_var_mean(layer, args[0])
            stats[id(layer)] = (mean, var)

    return hook


@contextmanager
def clean_statistics(model: nn.Module) -> Iterator[Stats]:
    """Yields the statistics every train-mode BatchNorm of `model` records on a forward pass inside the block.

    Run the clean forward first, then the bounds, in the same block:

        with clean_statistics(model):
            logits = model(x)                              # records μ, σ² (updates running stats once)
            worst = worst_case_loss(model, x, y, eps, ...)  # the BatchNorm rules read them

    Every train-mode forward inside the block records again (the last one wins), and the
    linear bounds read the statistics during their backward pass too: keep both in the block.
    """
    stats: Stats = {}
    handles = [m.register_forward_hook(_record(stats)) for m in model.modules() if isinstance(m, BATCHNORMS)]
    token = _RECORDED.set(stats)
    try:
        yield stats
    finally:
        _RECORDED.reset(token)
        for h in handles:
            h.remove()


def statistics(layer: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (μ, σ²), each (C,), that the bounds use for `layer` (see the module docstring)."""
    name = f"{type(layer).__name__}({layer.num_features})"
    if layer.training:
        recorded = _RECORDED.get()
        if recorded is None or id(layer) not in recorded:
            raise BatchNormStatisticsError(
                f"{name} is in training mode but no clean-batch statistics were recorded: run the clean "
                "forward pass and the bounds inside approp.bounds.clean_statistics(model), or call model.eval()"
            )
        return recorded[id(layer)]
    if layer.running_mean is None or layer.running_var is None:
        raise UnsupportedLayerError(f"{name} in eval mode has no running statistics (track_running_stats=False)")
    return layer.running_mean, layer.running_var


def _affine_parts(layer, params: dict[str, ParamInterval], shape: tuple[int, ...]):
    """Returns per-channel (μ, k_c, k_r, β_c, β_r) viewed to `shape`: y = k·(x − μ) + β, k = γ/s.

    k_r, β_r are None where the parameter is not perturbed (or absent: affine=False means γ = 1, β = 0).
    """
    mean, var = statistics(layer)
    inv = torch.rsqrt(var + layer.eps)  # 1/s (C,)
    g, b = params.get("weight"), params.get("bias")
    k_c = inv if g is None else g.center * inv
    k_r = None if g is None or g.radius is None else g.radius * inv
    b_c = torch.zeros_like(inv) if b is None else b.center
    b_r = None if b is None else b.radius

    def view(t):
        return None if t is None else t.view(shape)

    return view(mean), view(k_c), view(k_r), view(b_c), view(b_r)


def _check_shape(layer, x: torch.Tensor) -> tuple[int, ...]:
    """Returns the per-channel view shape (1, C, 1, ...) for x (B, C, *), or raises naming the layer."""
    expected = 2 if isinstance(layer, nn.BatchNorm1d) else 4
    if x.dim() != expected:
        raise UnsupportedLayerError(f"{type(layer).__name__} has interval rules only for {expected}-d inputs")
    return (1, -1) + (1,) * (x.dim() - 2)


@register(*BATCHNORMS)
def batchnorm_rule(layer, x: Interval, params: dict[str, ParamInterval]) -> Interval:
    """Returns ⟨y_c, y_r⟩: y_c = k_c·(x_c − μ) + β_c, y_r = (|k_c| + k_r)·x_r + k_r·|x_c − μ| + β_r.

    Rump's midpoint-radius product of k ∈ ⟨k_c, k_r⟩ and x − μ ∈ ⟨x_c − μ, x_r⟩, plus β's box:
    sound for every γ, β in their box and x in ⟨x_c, x_r⟩ (μ, s are constants; s > 0).
    Both per-channel maps a·t + b run as an eval-mode batch_norm with mean 0, variance 1 and eps 0
    (so its scale and shift are exactly a and b): one pass each, where broadcasting
    elementwise ops take two or run slower.
    """
    shape = _check_shape(layer, x.center)
    mean, k_c, k_r, b_c, b_r = _affine_parts(layer, params, (-1,))  # (C,) each
    dtype = torch.promote_types(x.radius.dtype, k_c.dtype)  # 16-bit intervals leave in fp32, as before
    z_c = x.center - mean.view(shape)  # (B, C, *): differentiable in a recorded μ
    yc = _channel_affine(z_c, k_c, b_c)
    k_abs = k_c.abs()
    yr = _channel_affine(x.radius.to(dtype), k_abs if k_r is None else k_abs + k_r, b_r)
    if k_r is not None:
        # Without autograd nothing holds z_c any more, so its abs may overwrite it.
        z_abs = z_c.abs() if torch.is_grad_enabled() else z_c.abs_()
        yr = yr.addcmul_(z_abs, k_r.view(shape))  # batch_norm's backward does not read its output
    return Interval(yc, yr)


def _channel_affine(t: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor:
    """Returns scale·t + shift per channel (scale, shift (C,); t (B, C, *)) in one pass."""
    scale = scale.to(t.dtype)
    shift = None if shift is None else shift.to(t.dtype)
    unit = torch.ones_like(scale)
    return F.batch_norm(t, torch.zeros_like(scale), unit, scale, shift, training=False, eps=0.0)


def _bn_cache(layer, ctx: Context) -> dict[str, torch.Tensor]:
    """Returns (cached) the layer's center map, d and the rounding magnitude, as _affine_step takes them.

    The layer is its center map y = k_c·x + t, t = β_c − k_c·μ, plus δ = (k − k_c)·(x − μ) + (β − β_c)
    with |δ| ≤ k_r·max(|l − μ|, |u − μ|) + β_r = d for every γ, β in the box and x in [l, u].
    cache["d_mag"] (B, 2, n): d and |k_c|·(m + |μ|) + |β_c| + d, m = max(|l|, |u|) (the terms
    the network's own evaluation of (x − μ)·k + β rounds); cache["bias"] (n,): t per element.
    """
    if "d_mag" not in ctx.cache:
        lo, hi = ctx.inp.lower, ctx.inp.upper  # (B, C, *)
        mean, k_c, k_r, b_c, b_r = _affine_parts(layer, ctx.params, _check_shape(layer, lo))
        d = torch.zeros_like(lo)
        if k_r is not None:
            d = k_r * torch.maximum((lo - mean).abs(), (hi - mean).abs())
        if b_r is not None:
            d = d + b_r
        m = torch.maximum(lo.abs(), hi.abs())
        mag = k_c.abs() * (m + mean.abs()) + b_c.abs() + d
        ctx.cache["d_mag"] = torch.stack([d, mag], dim=1).flatten(2)  # (B, 2, n)
        ctx.cache["bias"] = (b_c - k_c * mean)[0].expand(lo.shape[1:]).reshape(-1)  # (n,)
        ctx.cache["scale"] = k_c.unsqueeze(1)  # (1, 1, C, *ones): broadcasts over (B, S, C, *)
    return ctx.cache


@register_backward(*BATCHNORMS)
def batchnorm_backward(layer, coef: torch.Tensor, ctx: Context) -> Step:
    """coef (B, S, C, *) → coef·k_c; const Σ coef·t − Σ |coef|·d (see _bn_cache): sound over the box."""
    cache = _bn_cache(layer, ctx)
    return _affine_step(coef, coef * cache["scale"], ctx, cache, BN_FAN)
