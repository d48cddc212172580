"""Certified parameter robustness in the relative box [θ − λ|θ|, θ + λ|θ|]: curve and per-point radius.

A test point (x, y) is certified at λ when no network in the box — every parameter,
weights and biases, as in the parameter attack (approp.attacks.parameter) — can
change its prediction away from y: every margin z_y − z_j has a lower bound above
its rounding allowance by the best of the interval and the linear bound
(approp.bounds.verify.verified_by, ε = 0 unless an input ball is asked for too).

- certified_curve: per λ, which points are certified. Of the points the midpoint
  network classifies correctly, the others are an upper bound on the share any
  attack can flip — the dual of the attack's lower bound, on the same denominator.
- certified_radius: per point the largest certified λ* on a geometric grid, found
  by bisection over the grid's indices (each point in ⌈log₂(G + 1)⌉ checks). All
  points whose bisection stands at the same grid index are checked in one batch,
  so the checks batch although every point has its own bracket. λ* is sound by
  construction: it is a λ at which the point was checked and certified (a λ below
  the grid's first value gives λ* = 0). The bisection assumes the decision is
  monotone in λ (the boxes are nested; interval bounds are inclusion-isotone,
  linear bounds nearly so); where it is not, λ* is still certified, only maybe
  not the largest.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..bounds.verify import Method, verified_by
from ..config import ConfigError, RadiusConfig


def relative_radius(lam: float = 0.0) -> RadiusConfig:
    """Returns the box [θ − λ|θ|, θ + λ|θ|] on every parameter (the parameter attack's box)."""
    return RadiusConfig(kind="abs", lam=lam, perturb_weights=True, perturb_biases=True)


@dataclass(frozen=True)
class RadiusGrid:
    """The geometric grid λ_k = lam_min·(lam_max/lam_min)^(k/(points−1)) that λ* is searched on.

    Defaults [1e-6 … 0.5, 96 points]: neighbours 15 % apart, 7 checks per point (standard
    training's λ* lie near 1e-4, APP's near 3e-3 on the cpu preset).
    """

    lam_min: float = 1e-6
    lam_max: float = 0.5
    points: int = 96

    def __post_init__(self) -> None:
        if not 0 < self.lam_min < self.lam_max or not math.isfinite(self.lam_max):
            raise ConfigError(f"need 0 < lam_min < lam_max; got {self.lam_min!r}, {self.lam_max!r}")
        if not isinstance(self.points, int) or self.points < 2:
            raise ConfigError(f"grid points must be an integer >= 2; got {self.points!r}")

    def values(self) -> torch.Tensor:
        """Returns the grid (points,) in float64, ascending."""
        return torch.logspace(math.log10(self.lam_min), math.log10(self.lam_max), self.points, dtype=torch.float64)

    def checks(self) -> int:
        """Returns the number of checks a bisection over the grid takes per point."""
        return math.ceil(math.log2(self.points + 1))


def _verified(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, lam: float, eps: float, method: Method, batch_size: int
) -> torch.Tensor:
    """Returns the bool mask (N,) of points of x (N, C, H, W) certified at λ, batch_size at a time."""
    radius = relative_radius(lam)
    out = [
        verified_by(model, x[i : i + batch_size], y[i : i + batch_size], eps, radius, method=method)
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool, device=x.device)


def certified_curve(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    lams: tuple[float, ...],
    eps: float = 0.0,
    method: Method = "best",
    batch_size: int = 250,
) -> dict[float, torch.Tensor]:
    """Returns {λ: bool mask (N,)} of the points certified at each λ (their label y kept by every network).

    x (N, C, H, W) in [0, 1], y (N,): pass the true labels to certify correct predictions
    (a misclassified point is never certified: its margin is negative at θ itself).
    """
    model.eval()
    return {lam: _verified(model, x, y, lam, eps, method, batch_size) for lam in lams}


def bisect_largest(n: int, count: int, check: Callable[[torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
    """Returns per point (N,) the largest index k in [0, count) found passing check(idx, k), −1 where none did.

    check(idx, k) returns the bool mask (len(idx),) of the points idx (long, ascending) passing at
    index k; bisection takes ⌈log₂(count + 1)⌉ checks per point, and all points standing at the
    same index are checked in one call. A returned index was checked and passed.
    """
    lo = torch.full((n,), -1, dtype=torch.long)  # index passed so far (−1: none)
    hi = torch.full((n,), count, dtype=torch.long)  # index failed (count: beyond the last)
    while bool((hi - lo > 1).any()):
        mid = (lo + hi) // 2
        open_ = hi - lo > 1
        for k in mid[open_].unique().tolist():
            idx = (open_ & (mid == k)).nonzero().flatten()
            ok = check(idx, k).cpu()
            lo[idx[ok]] = k
            hi[idx[~ok]] = k
    return lo


def certified_radius(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    grid: RadiusGrid = RadiusGrid(),
    eps: float = 0.0,
    method: Method = "best",
    batch_size: int = 250,
) -> torch.Tensor:
    """Returns λ* (N,) float64: per point the largest grid λ found certified by bisection, 0 below the grid.

    Every point is checked ⌈log₂(G + 1)⌉ times; the points standing at the same grid index
    are checked together (see the module docstring).
    """
    model.eval()
    values = grid.values()

    def check(idx: torch.Tensor, k: int) -> torch.Tensor:
        return _verified(model, x[idx], y[idx], values[k].item(), eps, method, batch_size)

    lo = bisect_largest(len(x), grid.points, check)
    return torch.where(lo >= 0, values[lo.clamp(min=0)], torch.zeros((), dtype=torch.float64))
