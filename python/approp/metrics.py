"""Accuracy measures over a whole split: clean and verified (from the bounds)."""

from __future__ import annotations

import torch
from torch import nn

from .bounds import interval_bounds, verified
from .bounds.verify import check_method, verified_by
from .config import RadiusConfig
from .data import Split, batches
from .precision import full_precision


@torch.no_grad()
@full_precision()
def clean_correct(model: nn.Module, split: Split, batch_size: int = 500) -> torch.Tensor:
    """Returns a bool mask (N,): True where the model classifies the point correctly."""
    model.eval()
    masks = [model(x).argmax(1) == y for x, y in batches(split, batch_size)]
    return torch.cat(masks) if masks else torch.zeros(0, dtype=torch.bool, device=split.y.device)


def share(mask: torch.Tensor) -> float:
    """Returns the share of True in a mask (N,) (0 for no points): the accuracy a mask counts."""
    return mask.sum().item() / max(len(mask), 1)


def clean_accuracy(model: nn.Module, split: Split, batch_size: int = 500) -> float:
    """Returns the share of the split the model classifies correctly."""
    return share(clean_correct(model, split, batch_size))


@torch.no_grad()
@full_precision()
def verified_correct(
    model: nn.Module,
    split: Split,
    eps: float,
    radius: RadiusConfig | None,
    lam: float | None = None,
    batch_size: int = 500,
    method: str | None = None,
) -> torch.Tensor:
    """Returns a bool mask (N,): True where every network in the box classifies the point correctly on the
    whole ball.

    method None: interval margin bounds as always; "ibp" | "crown" | "best": the verified
    decision of approp.bounds.verify (with its rounding allowance; "crown" the linear bounds,
    "best" per margin the better of interval and linear).
    """
    if method is not None:
        check_method(method)
    model.eval()
    masks = [
        verified(model, x, y, eps, radius, lam)
        if method is None
        else verified_by(model, x, y, eps, radius, lam, method=method)
        for x, y in batches(split, batch_size)
    ]
    return torch.cat(masks).bool() if masks else torch.zeros(0, dtype=torch.bool, device=split.y.device)


def verified_accuracy(
    model: nn.Module,
    split: Split,
    eps: float,
    radius: RadiusConfig | None,
    lam: float | None = None,
    batch_size: int = 500,
    method: str | None = None,
) -> float:
    """Returns the share of points verified_correct counts (the same arguments)."""
    return share(verified_correct(model, split, eps, radius, lam, batch_size, method))


@torch.no_grad()
def mean_bound_width(model: nn.Module, test: Split, eps: float, radius: RadiusConfig, lam: float | None) -> float:
    """Returns the mean over points and logits of the interval bounds' width (upper − lower)."""
    width = torch.zeros((), device=test.y.device)
    for x, _ in batches(test, 500):
        width += interval_bounds(model, x, eps, radius, lam).radius.mul(2).mean(1).sum()
    return width.item() / max(len(test), 1)
