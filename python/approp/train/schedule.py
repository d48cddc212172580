"""Optimiser, learning-rate schedule, gradient clipping and the ε/λ ramp."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import OptimConfig, TrainConfig

# auto_LiRPA's SmoothedScheduler defaults: the polynomial part covers the first quarter
# of the ramp, with exponent 4, and then joins the linear part with the same slope.
SMOOTH_MID = 0.25
SMOOTH_BETA = 4.0


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Returns SGD (momentum, weight decay) or Adam over the model's parameters."""
    if cfg.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Returns a per-step schedule: constant, cosine to 0, or ×0.1 at 50% and 75% of the run."""

    def factor(step: int) -> float:
        t = min(step / max(total_steps, 1), 1.0)
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        if cfg.schedule == "step":
            return 0.01 if t >= 0.75 else 0.1 if t >= 0.5 else 1.0
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def gradient_norm(model: nn.Module, max_norm: float | None) -> torch.Tensor:
    """Returns the global L2 norm of the model's gradients (0-dim tensor) before clipping.

    With max_norm set, the gradients are then scaled so that their norm is at most
    max_norm (torch's clip_grad_norm_); None leaves them as they are. Under DDP the
    gradients are already averaged over ranks here, so every rank clips alike.
    """
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm is not None:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    return torch.nn.utils.get_total_norm([p.grad for p in params])


def ramp_at(step: int, steps_per_epoch: int, train: TrainConfig) -> float:
    """Returns the ramp factor at a global step for the run's ramp kind, warm-up and ramp length."""
    if train.ramp == "smoothed":
        return smoothed_ramp(step, steps_per_epoch, train.ramp_epochs, train.warmup_epochs)
    return ramp(step, steps_per_epoch, train.ramp_epochs, train.warmup_epochs)


def smoothed_ramp(step: int, steps_per_epoch: int, ramp_epochs: int, warmup_epochs: int = 0) -> float:
    """Returns the smoothed ramp factor in [0, 1] at a global step (auto_LiRPA's SmoothedScheduler).

    With s0 = warm-up steps, s1 = s0 + ramp steps and sm = s0 + ⌊¼(s1 − s0)⌋:
    0 up to s0 (inclusive), α·(step − s0)^4 up to sm, then linear to 1 at s1, where
    α makes value and slope continuous at sm. Compared with the linear ramp it keeps
    ε tiny for longer while the bounds are still loose.
    """
    s0 = warmup_epochs * steps_per_epoch
    s1 = s0 + ramp_epochs * steps_per_epoch
    if step <= s0:
        return 0.0 if ramp_epochs > 0 or step < s0 else 1.0
    if step >= s1:
        return 1.0
    sm = s0 + int((s1 - s0) * SMOOTH_MID)
    if sm == s0:  # a ramp under 4 steps has no polynomial part
        return (step - s0) / (s1 - s0)
    t = (sm - s0) ** (SMOOTH_BETA - 1)
    alpha = 1.0 / ((s1 - sm) * SMOOTH_BETA * t + (sm - s0) * t)
    if step < sm:
        return alpha * (step - s0) ** SMOOTH_BETA
    mid_value = alpha * (sm - s0) ** SMOOTH_BETA
    return min(mid_value + (1.0 - mid_value) * (step - sm) / (s1 - sm), 1.0)


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
