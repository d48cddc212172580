"""Loss strategies: what one training step minimises. One loop serves them all.

A strategy returns the loss of a batch and named values to log; `after_step`
runs after the optimiser step (AWP restores its weight perturbation there).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..bounds import BoundsRecord, clean_statistics, has_batchnorm, interval_bounds, worst_case_loss
from ..config import RadiusConfig, RunConfig, TrainConfig
from ..precision import upcast
from .regularisers import REG_MIN_EPS, regulariser_weight, warmup_regulariser


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

    @property
    def reg_weight(self) -> float:
        """Returns the warm-up regularisers' weight λ_reg·(1 − r) at this step (0 when off)."""
        return regulariser_weight(self.train.reg_weight, self.ramp)


def kappa_at(train: TrainConfig, r: float) -> float:
    """Returns the clean-loss weight κ_t at ramp factor r under train.kappa_schedule.

    Every schedule gives 1 in the warm-up (r = 0); then gowal moves from 1 to
    train.kappa with r, constant holds train.kappa and none gives 0.
    """
    if r <= 0:
        return 1.0
    if train.kappa_schedule == "constant":
        return train.kappa
    if train.kappa_schedule == "none":
        return 0.0
    return 1 - r * (1 - train.kappa)


def step_context(cfg: RunConfig, r: float) -> StepContext:
    """Returns the step's settings at ramp factor r: ε·r, λ·r and κ per the run's κ schedule."""
    t = cfg.train
    return StepContext(t.eps * r, cfg.radius.lam * r, kappa_at(t, r), cfg.radius, t, ramp=r)


Logs = dict[str, torch.Tensor]


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Returns the mean cross-entropy of logits (B, K), in fp32 for 16-bit logits (bf16 under autocast),
    else in their dtype."""
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
    """(1 − κ)·L_worst + κ·L_clean (+ the warm-up regularisers), L_worst from the interval bounds.

    With train.reg_weight > 0 the regularisers read the pre-activation intervals of
    the same bound pass; in the clean warm-up, where no bounds are needed for the
    loss, they get their own pass over a ball of REG_MIN_EPS (as Shi et al.).
    With BatchNorm the bounds use the clean batch's statistics through the midpoint network.
    """

    name = "app"

    def loss(self, model, x, y, ctx):
        kappa = ctx.kappa
        w_reg = ctx.reg_weight
        record = BoundsRecord() if w_reg > 0 else None
        warmup = ctx.eps == 0 and ctx.lam == 0  # the box is a point: L_worst = L_clean
        if warmup and record is None:
            clean = cross_entropy(model(x), y)
            return clean, {"worst_loss": clean.detach(), "clean_loss": clean.detach()}
        # BatchNorm: the clean forward runs first and records the clean batch's statistics,
        # which the bounds then use (approp.bounds.batchnorm); it is needed even at κ = 0.
        bn = has_batchnorm(model)
        with clean_statistics(model) if bn else nullcontext():
            clean = cross_entropy(model(x), y) if warmup or kappa > 0 or bn else None
            if warmup:  # only the regularisers need bounds: over Shi et al.'s tiny ball
                interval_bounds(model, x, REG_MIN_EPS, ctx.radius, 0.0, record)
                worst = clean
            else:
                worst = worst_case_loss(model, x, y, ctx.eps, ctx.radius, ctx.lam, ctx.train.margin_loss, record)
        logs = {"worst_loss": worst.detach()}
        if clean is not None:
            logs["clean_loss"] = clean.detach()
        loss = worst if warmup or kappa == 0 else (1 - kappa) * worst + kappa * clean
        if record is None:
            return loss, logs
        return _add_regulariser(loss, logs, record, w_reg, ctx.train.reg_tol)


def _add_regulariser(loss, logs: Logs, record: BoundsRecord, weight: float, tol: float):
    """Returns (loss + weight·regulariser, logs with the regulariser's terms) from a bound pass's record."""
    reg, reg_logs = warmup_regulariser(record, tol)
    return loss + weight * reg, {**logs, "reg_loss": reg.detach(), **reg_logs}


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
