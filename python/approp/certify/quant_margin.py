"""Quantisation margins: per point how much of the rounding box is certified, and the fewest bits certified.

The all-or-nothing quantisation certificate (approp.certify.quantise) says whether the box of
half a step per weight keeps a prediction. Two per-point numbers say more:

- the certified fraction f*: the largest f on a geometric grid in (0, 1] such that the box of
  f half-steps (radius kind "quant" at λ = f) keeps the float prediction, by bisection as λ*
  is found for the relative box (approp.certify.parameter.bisect_largest); 0 below the grid;
- the smallest bit width certified: the fewest bits b in 2 … 8 whose whole box (λ = 1 at b bits,
  same grid and layout) keeps the prediction. The step grows as bits fall (s_b = max|θ|/(2^(b−1)−1)
  on the deployment grid), so the boxes are nested and bisection over b takes 3 checks.

Both are sound by construction (each reported value was itself checked and certified); if the
decision is not monotone the value is still certified, only maybe not the extreme one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..bounds.verify import Method, verified_by
from ..stats.intervals import wilson
from .parameter import RadiusGrid, bisect_largest
from .quantise import QuantSpec, predictions

FRACTION_GRID = RadiusGrid(2.0**-8, 1.0, 33)  # neighbours 2^(1/4) ≈ 19 % apart, 6 checks per point
BITS = tuple(range(8, 1, -1))  # 8, 7, …, 2: ever larger boxes
SHOWN_BITS = (8, 6, 4)
FRACTION_BINS = (
    (0.0, 0.0, "0 (not even 2⁻⁸)"),
    (0.0, 0.25, "(0, ¼)"),
    (0.25, 0.5, "[¼, ½)"),
    (0.5, 1.0, "[½, 1)"),
    (1.0, 1.0, "1 (the whole box)"),
)


def _certified(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    spec: QuantSpec,
    lam: float,
    method: Method,
    batch_size: int,
) -> torch.Tensor:
    """Returns the bool mask (N,) of points whose labels every network in spec's box at λ = lam keeps."""
    radius = spec.radius(lam)
    out = [
        verified_by(model, x[i : i + batch_size], labels[i : i + batch_size], 0.0, radius, method=method)
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def certified_fraction(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    spec: QuantSpec,
    grid: RadiusGrid = FRACTION_GRID,
    method: Method = "best",
    batch_size: int = 250,
) -> torch.Tensor:
    """Returns f* (N,) float64: per point the largest grid fraction of spec's half-step certified, 0 below it."""
    model.eval()
    values = grid.values()

    def check(idx: torch.Tensor, k: int) -> torch.Tensor:
        return _certified(model, x[idx], labels[idx], spec, values[k].item(), method, batch_size)

    lo = bisect_largest(len(x), grid.points, check)
    return torch.where(lo >= 0, values[lo.clamp(min=0)], torch.zeros((), dtype=torch.float64))


def smallest_bits(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    spec: QuantSpec,
    method: Method = "best",
    batch_size: int = 250,
) -> torch.Tensor:
    """Returns (N,) long: per point the fewest bits (2 … 8) whose whole box, on spec's grid and layout, keeps
    the label; 0 where not even 8 bits are certified."""
    model.eval()

    def check(idx: torch.Tensor, k: int) -> torch.Tensor:
        return _certified(model, x[idx], labels[idx], replace(spec, bits=BITS[k]), 1.0, method, batch_size)

    k = bisect_largest(len(x), len(BITS), check)
    return torch.where(k >= 0, torch.tensor(BITS)[k.clamp(min=0)], torch.zeros((), dtype=torch.long))


def quant_margins(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: QuantSpec,
    grid: RadiusGrid = FRACTION_GRID,
    method: Method = "best",
    batch_size: int = 250,
) -> dict[str, Any]:
    """Returns per point (lists) f* and the smallest bits certified for the float prediction, whether it is
    correct, and the grid: what `margin_markdown` tables."""
    pred = predictions(model, x)
    return {
        "spec": spec.name,
        "n": len(x),
        "grid": [grid.lam_min, grid.lam_max, grid.points],
        "fraction": certified_fraction(model, x, pred, spec, grid, method, batch_size).tolist(),
        "smallest_bits": smallest_bits(model, x, pred, spec, method, batch_size).tolist(),
        "correct": (pred == y).tolist(),
    }


def margin_rows(result: dict[str, Any]) -> tuple[list[tuple[str, int, int]], list[tuple[str, int]]]:
    """Returns ([(bits label, certified unchanged, of them correct)], [(fraction bin, points)]) as counts."""
    bits = torch.tensor(result["smallest_bits"])
    correct = torch.tensor(result["correct"], dtype=torch.bool)
    frac = torch.tensor(result["fraction"], dtype=torch.float64)
    layout = result["spec"].partition(":")[2]
    by_bits = [
        (
            f"int{b}" + (":" + layout if layout else ""),
            int(((bits > 0) & (bits <= b)).sum()),
            int(((bits > 0) & (bits <= b) & correct).sum()),
        )
        for b in SHOWN_BITS
    ]
    bins = []
    for lo, hi, label in FRACTION_BINS:
        inside = frac == lo if lo == hi else (frac > lo) & (frac < hi) if lo == 0 else (frac >= lo) & (frac < hi)
        bins.append((label, int(inside.sum())))
    return by_bits, bins


def margin_markdown(result: dict[str, Any]) -> list[str]:
    """Returns Markdown lines: shares certified per bit width and the distribution of f*, with Wilson intervals."""
    n = result["n"]
    by_bits, bins = margin_rows(result)
    lines = [
        f"### Quantisation margins, {result['spec']}",
        "",
        f"Per point the smallest bit width whose whole rounding box keeps the float prediction, and the "
        f"largest certified fraction f* of the {result['spec']} half-step (bisection over "
        f"{result['grid'][2]} fractions from {result['grid'][0]:g} to 1); shares of all {n} points in % with "
        "95 % Wilson intervals.",
        "",
        "| weights | certified unchanged | certified correct |",
        "|---|---|---|",
    ]
    lines += [f"| {label} | {wilson(k, n)} | {wilson(c, n)} |" for label, k, c in by_bits]
    lines += ["", "| certified fraction f* | points |", "|---|---|"]
    lines += [f"| {label} | {wilson(k, n)} |" for label, k in bins]
    return lines + [""]
