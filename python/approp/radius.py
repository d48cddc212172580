"""Radius functions r(θ) and the parameter box B∞(θ, r(θ)) around a network.

Weights are the parameters with two or more dimensions, biases those with one.
Radii are differentiable in θ: APP training follows the gradient through them
(d|θ|/dθ for `abs`, d tanh(sθ²)/dθ for `tanh`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from .config import RadiusConfig


def radius_of(theta: torch.Tensor, cfg: RadiusConfig, lam: float | None = None) -> torch.Tensor:
    """Returns the elementwise radius r(θ) >= 0 (same shape as θ) for cfg.kind at `lam` (default cfg.lam)."""
    lam = cfg.lam if lam is None else lam
    if cfg.kind == "abs":
        return lam * theta.abs()
    if cfg.kind == "const":
        return torch.full_like(theta, lam)
    if cfg.kind == "tanh":
        return lam * torch.tanh(cfg.s * theta * theta) / cfg.m
    if cfg.kind == "quant":
        if theta.dim() < 2:  # weight-only quantisation: biases stay float
            return torch.zeros_like(theta)
        per_channel = cfg.per_channel is not False
        scale = quant_scale(theta, cfg.bits, per_channel, restricted=cfg.restricted is True)
        return lam * QUANT_SLACK / 2 * scale.expand_as(theta)
    raise ValueError(f"unknown radius kind {cfg.kind!r}")  # unreachable: RadiusConfig validates


def radius_per_output(theta: torch.Tensor, cfg: RadiusConfig, lam: float | None = None) -> torch.Tensor | None:
    """Returns the radius of a weight θ (C_out, …) as one value per output unit, shaped (C_out, 1, …) or
    (1, …, 1), where its kind gives every entry of an output unit the same radius (`const`, and `quant`
    weights), so that radius_of(θ) == radius_per_output(θ).expand_as(θ); None for the other kinds and biases.
    """
    lam = cfg.lam if lam is None else lam
    if theta.dim() < 2:
        return None
    if cfg.kind == "const":
        return theta.new_full((1,) * theta.dim(), lam)
    if cfg.kind == "quant":
        per_channel = cfg.per_channel is not False
        return lam * QUANT_SLACK / 2 * quant_scale(theta, cfg.bits, per_channel, restricted=cfg.restricted is True)
    return None


# Outward slack of the quantisation box: PyTorch quantises as round(θ·(1/s))·s in float32,
# whose rounding moves a weight by at most about 3·2^(bits−1)·2⁻²⁴·s past the exact s/2
# (≤ 2.3e-5·s at 8 bits); 1 + 2⁻¹² covers that with room to spare.
QUANT_SLACK = 1.0 + 2.0**-12


def quant_levels(bits: int, restricted: bool = False) -> tuple[int, int]:
    """Returns (q_min, q_max) of the signed integer grid: (−2^(bits−1), 2^(bits−1) − 1), PyTorch's default,
    or with `restricted` the symmetric deployment grid (−(2^(bits−1) − 1), 2^(bits−1) − 1), e.g. [−127, 127]."""
    q_max = 2 ** (bits - 1) - 1
    return (-q_max if restricted else -q_max - 1), q_max


def quant_scale(theta: torch.Tensor, bits: int, per_channel: bool = True, restricted: bool = False) -> torch.Tensor:
    """Returns the symmetric quantisation step s (C_out, 1, …) or (1, …, 1) of weights θ (C_out, …).

    s = max|θ| / ((q_max − q_min) / 2), at least float32's eps: PyTorch's symmetric
    MinMaxObserver / PerChannelMinMaxObserver rule (torch.ao.quantization). On PyTorch's grid
    that is max/127.5 at 8 bits; on the restricted (deployment) grid max/127, the step of
    TensorRT, ONNX Runtime and TFLite. Either way θ/s lies in [q_min − ½, q_max + ½] and
    round-to-nearest with clamping moves θ by at most s/2, whatever rule breaks ties.
    """
    q_min, q_max = quant_levels(bits, restricted)
    dims = tuple(range(1, theta.dim())) if per_channel else tuple(range(theta.dim()))
    amax = theta.detach().abs().amax(dim=dims, keepdim=True)
    return torch.clamp(amax / ((q_max - q_min) / 2), min=torch.finfo(torch.float32).eps)


def is_perturbed(param: torch.Tensor, cfg: RadiusConfig) -> bool:
    """Returns whether the box perturbs this parameter (weights: ndim >= 2; biases: ndim == 1)."""
    return cfg.perturb_weights if param.dim() >= 2 else cfg.perturb_biases


def parameter_radii(model: nn.Module, cfg: RadiusConfig, lam: float | None = None) -> dict[str, torch.Tensor]:
    """Returns {name: r(θ)} for every parameter (zeros for those not perturbed)."""
    return {
        name: radius_of(p, cfg, lam) if is_perturbed(p, cfg) else torch.zeros_like(p)
        for name, p in model.named_parameters()
    }


def parameter_box(
    model: nn.Module, cfg: RadiusConfig, lam: float | None = None
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Returns {name: (lower, upper)} of the box around the model's current parameters (detached)."""
    with torch.no_grad():
        radii = parameter_radii(model, cfg, lam)
        return {n: (p - radii[n], p + radii[n]) for n, p in model.named_parameters()}


def clamp_parameters(model: nn.Module, c: float) -> None:
    """Clamps every parameter to [-c, c] in place (the parameter range restriction)."""
    with torch.no_grad():
        for p in model.parameters():
            p.clamp_(-c, c)


def iter_perturbed(model: nn.Module, cfg: RadiusConfig) -> Iterator[tuple[str, nn.Parameter]]:
    """Yields (name, parameter) for the parameters the box perturbs."""
    for name, p in model.named_parameters():
        if is_perturbed(p, cfg):
            yield name, p
