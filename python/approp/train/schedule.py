"""Optimiser, learning-rate schedule and the ε/λ ramp."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import OptimConfig


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Returns SGD (momentum, weight decay) or Adam over the model's parameters."""
    if cfg.name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(
    opt: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Returns a per-step schedule: constant, cosine to 0, or ×0.1 at 50% and 75% of the run."""

    def factor(step: int) -> float:
        t = min(step / max(total_steps, 1), 1.0)
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        if cfg.schedule == "step":
            return 0.01 if t >= 0.75 else 0.1 if t >= 0.5 else 1.0
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def ramp(step: int, steps_per_epoch: int, ramp_epochs: int, warmup_epochs: int = 0) -> float:
    """Returns the ramp factor in [0, 1] at a global step.

    0 during the first `warmup_epochs` epochs (clean training), then linear
    over `ramp_epochs` epochs, then 1. ε, λ and the worst-case share 1 − κ
    all scale with it.
    """
    step -= warmup_epochs * steps_per_epoch
    if step < 0:
        return 0.0
    if ramp_epochs == 0:
        return 1.0
    return min((step + 1) / (ramp_epochs * steps_per_epoch), 1.0)
