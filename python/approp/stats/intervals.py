"""Confidence intervals for accuracies and attack rates, and when two of them really differ.

Every accuracy approp reports is a proportion k/n over test points, so it
carries a 95 % Wilson score interval (Wilson 1927): unlike the normal
approximation it stays inside [0, 1] and keeps close to its nominal coverage at
small n and near 0 or 1. A difference between two such proportions is
called *decided* when Newcombe's hybrid score interval for p₁ − p₂
(Newcombe 1998, method 10, built from the two Wilson intervals) excludes 0.
That interval treats the two samples as independent; where both models are
scored on the same test points the correlation between them is positive in
practice, which makes it conservative, never optimistic.

Flatness is a mean over random directions and test points, not a proportion:
its interval comes from a bootstrap that resamples directions and points
independently (crossed_bootstrap), so both sources of chance are in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..formatting import format_interval, format_pct  # noqa: F401  (format_pct: stats.intervals.format_pct stays valid)

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


@dataclass(frozen=True)
class Proportion:
    """k successes of n trials with its Wilson interval [lower, upper] at level 1 − α."""

    k: int
    n: int
    lower: float
    upper: float

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else float("nan")

    def __str__(self) -> str:
        return format_pct(self.value, self.lower, self.upper)


@dataclass(frozen=True)
class Estimate:
    """A mean that is not a proportion (e.g. flatness), with its 95 % interval [lower, upper]."""

    value: float
    lower: float
    upper: float

    def __str__(self) -> str:
        return format_interval(self.value, self.lower, self.upper, scale=1.0, digits=4)


def wilson(k: int, n: int, z: float = Z95) -> Proportion:
    """Returns k/n with its Wilson score interval (z = 1.96: 95 %); n = 0 gives [0, 1]."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n; got k={k}, n={n}")
    if n == 0:
        return Proportion(0, 0, 0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At k = 0 or k = n one end is exactly 0 or 1; rounding must not push it past p.
    return Proportion(k, n, 0.0 if k == 0 else max(0.0, center - half), 1.0 if k == n else min(1.0, center + half))


def from_share(share: float, n: int, z: float = Z95) -> Proportion:
    """Returns the Wilson interval of a share measured on n points (k recovered as round(share·n))."""
    return wilson(int(round(share * n)), n, z)


def difference(a: Proportion, b: Proportion) -> tuple[float, float, float]:
    """Returns (a − b, lower, upper): Newcombe's hybrid score interval of the difference."""
    d = a.value - b.value
    lower = d - math.sqrt((a.value - a.lower) ** 2 + (b.upper - b.value) ** 2)
    upper = d + math.sqrt((a.upper - a.value) ** 2 + (b.value - b.lower) ** 2)
    return d, lower, upper


def decided(a: Proportion, b: Proportion) -> bool:
    """Returns whether the 95 % interval of a − b excludes 0 (the difference exceeds its uncertainty)."""
    _, lower, upper = difference(a, b)
    return lower > 0 or upper < 0


def crossed_bootstrap(
    matrix: torch.Tensor, reps: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Returns the percentile interval (lower, upper) of matrix.mean() for a matrix (R, n) of R random
    directions × n test points, both drawn at random.

    Each of `reps` resamples draws R rows and n columns with replacement, independently (the
    pigeonhole bootstrap of a crossed design, Owen 2007, Ann. Appl. Stat. 1(2)), and takes the
    mean of the resampled matrix: the row and column counts weight it, no copy is made.
    With R = 1 only the points vary.
    """
    if matrix.dim() != 2 or matrix.numel() == 0:
        raise ValueError(f"need a non-empty (R, n) matrix; got shape {tuple(matrix.shape)}")
    m = matrix.double()
    rows, cols = m.shape
    gen = torch.Generator().manual_seed(seed)

    def counts(size: int) -> torch.Tensor:  # (reps, size): how often each index was drawn
        idx = torch.randint(size, (reps, size), generator=gen)
        return torch.zeros(reps, size, dtype=torch.float64).scatter_add_(
            1, idx, torch.ones_like(idx, dtype=torch.float64)
        )

    w, v = counts(rows), counts(cols)
    means = ((w @ m) * v).sum(1) / (rows * cols)  # (reps,)
    alpha = (1 - level) / 2
    lower, upper = torch.quantile(means, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    return lower, upper
