"""Adversarial-training strategies: PGD-AT (Madry et al. 2018) and AT-AWP (Wu, Xia, Wang 2020).

Both train on PGD adversarial examples at the step's (ramped) ε, with
`train.pgd_steps` steps of size ε/4 from a random start. AWP additionally
moves the weights to an adversarial point before the step:

    v_l = γ · ‖w_l‖ · g_l / ‖g_l‖     for every weight w_l with ≥ 2 dimensions,

g_l being the gradient of the adversarial cross-entropy at the current
weights. The authors obtain g by one SGD ascent step on a proxy copy of the
model and take the difference of weights; that difference is η·g, and the
normalisation removes η, so the gradient is taken here directly (with
`torch.autograd.grad`, leaving `.grad` alone), which gives the same v. The
proxy's BatchNorm running statistics are thrown away with the proxy, so the
gradient pass here restores them: one running-statistics update per step, as
in the reference. The
loss is computed on the perturbed model, the loop backpropagates and steps
there, and `after_step` subtracts v again.

γ follows the run's warm-up and ramp like ε does (γ·r), so every algorithm
gets the same schedule: on a CNN4 without batch normalisation trained from
scratch, full γ from the first step keeps the loss at log 10 (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..attacks.pgd import pgd_attack
from .strategies import STRATEGIES, StepContext, Strategy, cross_entropy

AWP_EPS = 1e-20  # guards ‖g‖ = 0, as in the reference implementation


def _adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
    """Returns PGD adversarial images (B, C, H, W) at ctx.eps: train.pgd_steps steps of ε/4, random start."""
    return pgd_attack(model, x, y, ctx.eps, ctx.train.pgd_steps, alpha=ctx.eps / 4, random_start=True)


def perturbed_weights(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Returns (name, parameter) of the weights AWP perturbs: those with ≥ 2 dimensions."""
    return [(n, p) for n, p in model.named_parameters() if p.dim() >= 2 and "weight" in n]


@contextmanager
def running_statistics_kept(model: nn.Module) -> Iterator[None]:
    """Yields with the BatchNorm buffers (running mean, variance, batch count) restored on exit."""
    saved = [
        (m, {n: b.clone() for n, b in m.named_buffers(recurse=False) if b is not None})
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in saved:
                for n, b in buffers.items():
                    getattr(m, n).copy_(b)


def awp_perturbation(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, gamma: float) -> dict[str, torch.Tensor]:
    """Returns {name: v_l} with v_l = γ·‖w_l‖·g_l/‖g_l‖, g_l the adversarial loss gradient.

    The gradient pass leaves the BatchNorm running statistics as it found them (the reference takes it
    on a proxy copy it discards); it still normalises by the batch's statistics in training mode.
    """
    named = perturbed_weights(model)
    with running_statistics_kept(model):  # restored after the backward pass, which reads the buffers' versions
        loss = cross_entropy(model(x_adv), y)
        grads = torch.autograd.grad(loss, [p for _, p in named])
    return {n: gamma * p.detach().norm() * g / (g.norm() + AWP_EPS) for (n, p), g in zip(named, grads)}


@torch.no_grad()
def add_into(model: nn.Module, diff: dict[str, torch.Tensor], coeff: float) -> None:
    """Adds coeff·diff[name] to each named parameter in place."""
    for name, p in model.named_parameters():
        if name in diff:
            p.add_(diff[name], alpha=coeff)


class PGDTraining(Strategy):
    """Cross-entropy on PGD adversarial examples (Madry)."""

    name = "pgd"

    def loss(self, model, x, y, ctx):
        loss = cross_entropy(model(_adversarial(model, x, y, ctx)), y)
        return loss, {"adv_loss": loss.detach()}


class AWP(Strategy):
    """AT-AWP: adversarial examples, then an adversarial weight perturbation held during the step."""

    name = "awp"

    def __init__(self, gamma: float) -> None:
        self.gamma = gamma
        self.diff: dict[str, torch.Tensor] | None = None

    def loss(self, model, x, y, ctx):
        if self.diff is not None:  # a step that never reached after_step: undo it first
            self.after_step(model)
        x_adv = _adversarial(model, x, y, ctx)
        gamma = self.gamma * ctx.ramp
        if gamma > 0:
            self.diff = awp_perturbation(model, x_adv, y, gamma)
            add_into(model, self.diff, 1.0)
            # Under bf16 autocast the proxy forward cached bf16 copies of the weights, and an in-place
            # change does not invalidate that cache: without this the step would run on the unperturbed
            # weights (AWP silently reduced to PGD-AT).
            torch.clear_autocast_cache()
        loss = cross_entropy(model(x_adv), y)
        return loss, {"adv_loss": loss.detach()}

    def after_step(self, model: nn.Module) -> None:
        """Removes the weight perturbation added in `loss`."""
        if self.diff is not None:
            add_into(model, self.diff, -1.0)
            self.diff = None


STRATEGIES["pgd"] = lambda cfg: PGDTraining()
STRATEGIES["awp"] = lambda cfg: AWP(cfg.train.awp_gamma)
