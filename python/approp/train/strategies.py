"""Loss strategies: what one training step minimises. One loop serves them all.

A strategy returns the loss of a batch and named values to log; `after_step`
runs after the optimiser step (AWP restores its weight perturbation there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..bounds import worst_case_loss
from ..config import RadiusConfig, RunConfig, TrainConfig
from ..precision import upcast


@dataclass(frozen=True)
class StepContext:
    """The step's ramped ε, λ and κ, the run's radius and training settings, and the ramp factor.

    ramp is r in [0, 1] (0 in warm-up, 1 after the ramp); AWP scales its γ by it.
    """

    eps: float
    lam: float
    kappa: float
    radius: RadiusConfig
    train: TrainConfig
    ramp: float = 1.0


def step_context(cfg: RunConfig, r: float) -> StepContext:
    """Returns the step's settings at ramp factor r: ε·r, λ·r and κ moving from 1 to its target."""
    t = cfg.train
    return StepContext(t.eps * r, cfg.radius.lam * r, 1 - r * (1 - t.kappa), cfg.radius, t, ramp=r)


Logs = dict[str, torch.Tensor]


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Returns the mean cross-entropy of logits (B, K), in fp32 for 16-bit logits (bf16 under autocast), else in their dtype."""
    return F.cross_entropy(upcast(logits), y)


class Strategy:
    """Base class: subclasses implement `loss`; `after_step` is optional."""

    name = "base"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, Logs]:
        raise NotImplementedError

    def after_step(self, model: nn.Module) -> None:
        """Called after each optimiser step."""


class Standard(Strategy):
    """Clean cross-entropy."""

    name = "standard"

    def loss(self, model, x, y, ctx):
        loss = cross_entropy(model(x), y)
        return loss, {"clean_loss": loss.detach()}


class APP(Strategy):
    """(1 − κ)·L_worst + κ·L_clean, L_worst from the interval bounds over box and ball."""

    name = "app"

    def loss(self, model, x, y, ctx):
        kappa = ctx.kappa
        if ctx.eps == 0 and ctx.lam == 0:  # warm-up: the box is a point, L_worst = L_clean
            clean = cross_entropy(model(x), y)
            return clean, {"worst_loss": clean.detach(), "clean_loss": clean.detach()}
        worst = worst_case_loss(model, x, y, ctx.eps, ctx.radius, ctx.lam, margin=ctx.train.margin_loss)
        logs = {"worst_loss": worst.detach()}
        if kappa == 0:
            return worst, logs
        clean = cross_entropy(model(x), y)
        logs["clean_loss"] = clean.detach()
        return (1 - kappa) * worst + kappa * clean, logs


STRATEGIES: dict[str, Callable[[RunConfig], Strategy]] = {
    "standard": lambda cfg: Standard(),
    "app": lambda cfg: APP(),
}


def make_strategy(cfg: RunConfig) -> Strategy:
    """Returns the strategy for cfg.train.algo."""
    try:
        return STRATEGIES[cfg.train.algo](cfg)
    except KeyError:
        raise ValueError(
            f"algorithm {cfg.train.algo!r} has no strategy; known: {', '.join(sorted(STRATEGIES))}"
        ) from None
