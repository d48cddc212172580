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
    raise ValueError(f"unknown radius kind {cfg.kind!r}")  # unreachable: RadiusConfig validates


def is_perturbed(param: torch.Tensor, cfg: RadiusConfig) -> bool:
    """Returns whether the box perturbs this parameter (weights: ndim >= 2; biases: ndim == 1)."""
    return cfg.perturb_weights if param.dim() >= 2 else cfg.perturb_biases


def parameter_radii(
    model: nn.Module, cfg: RadiusConfig, lam: float | None = None
) -> dict[str, torch.Tensor]:
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
