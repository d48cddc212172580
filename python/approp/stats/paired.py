"""A − B of two accuracies scored on the same test points: Newcombe's interval for paired data.

    from approp.stats.paired import paired_difference
    d, lower, upper = paired_difference(correct_a, correct_b)  # two bool masks (n,) over the same points

Two models scored on the same n points give a 2 × 2 table of per-point outcomes

                 B right   B wrong
    A right        n11       n10
    A wrong        n01       n00

and A − B = (n10 − n01) / n depends only on the points where they disagree. The
interval is Newcombe's square-and-add (hybrid score) interval for paired data
(Newcombe 1998, Statistics in Medicine 17:2635, method 10): the two Wilson
intervals combined as in the independent case (approp.stats.intervals.difference),
less twice their covariance, estimated by the table's φ coefficient with a
continuity correction that shrinks a positive φ by n/2 in its numerator, so the
correction can only widen the interval. Accuracies of two networks on the same
test points are positively correlated (both get the easy points right), so this
interval is narrower than the independent one — the independent one stays
valid, but wastes the pairing. φ = 0 gives exactly the independent interval.
"""

from __future__ import annotations

import math

import torch

from .intervals import Z95, wilson


def table(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int, int, int]:
    """Returns (n11, n10, n01, n00) of two bool masks (n,): both right, only A, only B, neither."""
    if a.shape != b.shape or a.dim() != 1:
        raise ValueError(f"need two outcome masks (n,) over the same points; got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.bool(), b.bool()
    return (
        int((a & b).sum()),
        int((a & ~b).sum()),
        int((~a & b).sum()),
        int((~a & ~b).sum()),
    )


def paired_counts_difference(n11: int, n10: int, n01: int, n00: int, z: float = Z95) -> tuple[float, float, float]:
    """Returns (A − B, lower, upper) from the paired table's four counts (see the module docstring)."""
    if min(n11, n10, n01, n00) < 0:
        raise ValueError(f"counts must be >= 0; got {(n11, n10, n01, n00)}")
    n = n11 + n10 + n01 + n00
    if n == 0:
        return float("nan"), -1.0, 1.0
    pa, pb = wilson(n11 + n10, n, z), wilson(n11 + n01, n, z)
    margins = (n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00)  # row and column totals
    phi = 0.0
    if margins > 0:
        cross = n11 * n00 - n10 * n01
        # The continuity correction: a positive association counts only beyond n/2.
        corrected = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
        phi = corrected / math.sqrt(margins)
    d = pa.value - pb.value
    below_a, above_a = pa.value - pa.lower, pa.upper - pa.value
    below_b, above_b = pb.value - pb.lower, pb.upper - pb.value
    lower = d - math.sqrt(max(below_a**2 + above_b**2 - 2 * phi * below_a * above_b, 0.0))
    upper = d + math.sqrt(max(above_a**2 + below_b**2 - 2 * phi * above_a * below_b, 0.0))
    return d, max(lower, -1.0), min(upper, 1.0)


def paired_difference(a: torch.Tensor, b: torch.Tensor, z: float = Z95) -> tuple[float, float, float]:
    """Returns (A − B, lower, upper) of two models' accuracies from their outcome masks (n,) on the same points."""
    return paired_counts_difference(*table(a, b), z=z)
