"""Adversarial parameter attack in the relative L∞ box (Yu, Wang, Gao, ICML 2023).

For each λ the attack searches θ̃ ∈ [θ − λ|θ|, θ + λ|θ|] — every parameter,
weights and biases — that misclassifies as many of the given points as
possible: projected gradient ascent on the cross-entropy of the points,
projected back onto the box after every step.

Choices, and where they differ from the authors' code: the step is a sign step
scaled to each parameter's own radius, θ̃ ← θ̃ + α·λ|θ|·sign(∇), α = 2.5/steps
(Madry's PGD rule in the box's own coordinates; the authors take plain SGD
steps of learning rate 0.1), and the loss is taken on the clean points being
evaluated (the authors ascend on adversarial training inputs and then run a
second phase that restores clean accuracy; here only the flips count). The
iterate with the lowest accuracy is kept, and each λ starts from the result
of the previous smaller λ, which lies inside the larger box: the attack at
a larger λ is therefore never weaker than at a smaller one.

BatchNorm: its γ and β are parameters and move in the box like the others;
the model runs in eval mode, so the running statistics stay those of θ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..boxes import Box, Params, project
from ..data import Split, batches
from ..precision import full_precision


@dataclass(frozen=True)
class ParamAttackRow:
    """Result at one λ: accuracy before and after, share of correct points flipped; correct_after: the
    points still correct after the attack, a bool mask (N,) (None in a row read back from JSON)."""

    lam: float
    acc_before: float
    acc_after: float
    flipped: float
    correct_after: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, float]:
        return {"lam": self.lam, "acc_before": self.acc_before, "acc_after": self.acc_after, "flipped": self.flipped}


def relative_box(theta: Params, lam: float) -> Box:
    """Returns {name: (θ − λ|θ|, θ + λ|θ|)} for every parameter."""
    return {n: (p - lam * p.abs(), p + lam * p.abs()) for n, p in theta.items()}


@torch.no_grad()
def correct_mask(model: nn.Module, params: Params, split: Split, batch_size: int) -> torch.Tensor:
    """Returns a bool mask (N,): True where the model with `params` classifies the point correctly."""
    masks = [functional_call(model, params, (x,)).argmax(1) == y for x, y in batches(split, batch_size)]
    return torch.cat(masks)


def _loss_grad(model: nn.Module, params: Params, split: Split, batch_size: int) -> Params:
    """Returns the gradient of the summed cross-entropy over the split with respect to every parameter."""
    leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for x, y in batches(split, batch_size):
        loss = F.cross_entropy(functional_call(model, leaves, (x,)), y, reduction="sum")
        grads = torch.autograd.grad(loss, list(leaves.values()))
        for n, g in zip(leaves, grads):
            total[n] += g
    return total


def attack_box(
    model: nn.Module,
    theta: Params,
    start: Params,
    lam: float,
    split: Split,
    steps: int = 20,
    batch_size: int = 500,
) -> tuple[Params, torch.Tensor]:
    """Returns (parameters in the λ-box with the fewest correct points found, their correct mask (N,))."""
    box = relative_box(theta, lam)
    params = project(start, box)
    best, best_mask = params, correct_mask(model, params, split, batch_size)
    alpha = 2.5 / max(steps, 1)
    for _ in range(steps if lam > 0 else 0):
        grads = _loss_grad(model, params, split, batch_size)
        params = project({n: p + alpha * lam * theta[n].abs() * grads[n].sign() for n, p in params.items()}, box)
        mask = correct_mask(model, params, split, batch_size)
        if mask.sum() < best_mask.sum():
            best, best_mask = params, mask
    return best, best_mask


@full_precision()
def parameter_attack(
    model: nn.Module,
    split: Split,
    lams: tuple[float, ...] = (0.02, 0.04, 0.06, 0.08, 0.1),
    steps: int = 20,
    batch_size: int = 500,
    on_row: Callable[[ParamAttackRow, Params], None] | None = None,
    start: tuple[float, Params] | None = None,
) -> list[ParamAttackRow]:
    """Returns one row per λ (ascending): accuracy before/after and the share of correct points flipped.

    `on_row(row, params)` runs after each λ; `start = (λ, params)` resumes after a finished λ.
    The model's own parameters are left untouched.
    """
    model.eval()
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    before = correct_mask(model, theta, split, batch_size)  # (N,)
    n = max(len(split), 1)
    done_lam, current = start if start is not None else (None, theta)
    rows = []
    for lam in sorted(lams):
        if done_lam is not None and lam <= done_lam:
            continue
        current, after = attack_box(model, theta, current, lam, split, steps, batch_size)
        flipped = (before & ~after).sum().item() / max(before.sum().item(), 1)
        row = ParamAttackRow(lam, before.sum().item() / n, after.sum().item() / n, flipped, after)
        rows.append(row)
        if on_row is not None:
            on_row(row, current)
    return rows
