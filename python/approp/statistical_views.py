"""Three views of each test point's worst margin over the box and ball: bound, estimate, attack.

- bound: the interval lower bound of min_{j≠y} (z_y − z_j) over every network in the box and
  every input in the ball (approp.bounds.margin_lower_bounds) — a guarantee;
- attack: the lowest margin the joint parameter-and-input attack reaches (approp.attacks.joint)
  — achieved, so the true worst case is at most this;
- estimate: −location of the reverse Weibull fitted to block maxima of sampled negated margins
  (approp.extreme_value) — an estimate of the sampling distribution's lowest margin, not a bound.

The true worst margin m* satisfies bound ≤ m* ≤ attack. Nothing orders the
estimate against m*; `compare` counts where it falls.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attacks.joint import joint_attack_margins
from .bounds import margin_lower_bounds
from .config import RadiusConfig
from .data import Split, batches
from .extreme_value import MIN_BLOCKS, fit_reverse_weibull
from .radius import parameter_box
from .sampling import class_margin
from .statistical import PointState


def margin_views(
    model: nn.Module, split: Split, radius: RadiusConfig, eps: float, attack_steps: int = 20,
    seed: int = 0, batch_size: int = 16,
) -> dict[str, list[float]]:
    """Returns {"clean", "bound", "attack"}: per point the clean margin, its interval bound and the attack's margin.

    batch_size points are attacked at once, each with its own parameter copy (memory ∝ batch_size).
    """
    model.eval()
    box = parameter_box(model, radius)
    gen = torch.Generator(device=split.y.device).manual_seed(seed)
    out: dict[str, list[float]] = {"clean": [], "bound": [], "attack": []}
    for x, y in batches(split, batch_size):
        with torch.no_grad():
            out["clean"] += class_margin(model(x), y).tolist()
            lower = margin_lower_bounds(model, x, y, eps, radius)  # (B, K), 0 at y
            own = F.one_hot(y, lower.shape[1]).bool()
            out["bound"] += lower.masked_fill(own, math.inf).amin(1).tolist()
        out["attack"] += joint_attack_margins(model, box, x, y, eps, attack_steps, gen).tolist()
    return out


def estimates(points: list[PointState]) -> list[dict[str, float] | None]:
    """Returns per point the extreme-value fit {"estimate": −μ, "shape", "scale", "ks"} (None: too few blocks)."""
    out = []
    for pt in points:
        if len(pt.maxima) < MIN_BLOCKS:
            out.append(None)
            continue
        fit = fit_reverse_weibull(torch.tensor(pt.maxima))
        out.append({"estimate": -fit.location, "shape": fit.shape, "scale": fit.scale, "ks": fit.ks})
    return out


def compare(views: dict[str, list[float]], points: list[PointState],
            fits: list[dict[str, float] | None]) -> dict[str, float | int]:
    """Returns counts of the orderings: bound ≤ attack (must always hold), where the estimate and the sampled minimum fall."""
    rows = [(b, a, f["estimate"], pt.min_margin)
            for b, a, f, pt in zip(views["bound"], views["attack"], fits, points) if f is not None]
    n = max(len(rows), 1)
    return {
        "points_with_estimate": len(rows),
        "bound_le_attack": sum(b <= a for b, a, _, _ in zip(views["bound"], views["attack"], fits, points)),
        "estimate_between": sum(b <= e <= a for b, a, e, _ in rows) / n,
        "estimate_above_attack": sum(e > a for _, a, e, _ in rows) / n,
        "estimate_below_bound": sum(e < b for b, _, e, _ in rows) / n,
        "estimate_le_sampled_min": sum(e <= s for _, _, e, s in rows) / n,
    }
