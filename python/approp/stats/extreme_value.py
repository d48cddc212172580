"""Extreme-value estimate of the worst sampled margin: a reverse Weibull fitted to block maxima.

As CLEVER does for gradient norms over an input ball, the maxima of blocks of
i.i.d. draws of a bounded quantity follow (in the limit) a reverse Weibull
law, P(M ≤ m) = exp(−((μ − m)/σ)^c) for m < μ, whose location μ is the
quantity's essential supremum. Here the quantity is the negated margin
−(z_y − max_{j≠y} z_j) of a network and input drawn uniformly from the box and
ball, so −μ̂ estimates the smallest margin the sampling distribution reaches.
This is an estimate, not a bound: it may lie on either side of the true worst
case over the box, and it says nothing about margins the sampler never comes
near (an attack can find lower ones). The fit is maximum likelihood with the
shape held at c ≥ 1 (below 1 the likelihood is unbounded at μ = max), μ
profiled on a grid above the largest maximum and (c, σ) solved exactly for
each μ. Where the likelihood keeps rising towards the largest shape or
location tried, the maxima look Gumbel-like (no endpoint in sight) and the fit
is flagged `endpoint=False`: its location is then no estimate at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MIN_BLOCKS = 5  # fewer block maxima than this give no estimate
SHAPE_MAX = 100.0  # a fit pushed to this shape (or to the grid's top) shows no finite endpoint
_GRID = torch.cat([torch.zeros(1), torch.logspace(-6, 3, 241)]).double()  # μ offsets / spread of the maxima


@dataclass(frozen=True)
class ReverseWeibull:
    """A fitted reverse Weibull: location μ (the estimated supremum), scale σ, shape c; KS distance of the fit.

    endpoint: False where the fit ran to SHAPE_MAX or to the top of the location grid.
    """

    location: float
    scale: float
    shape: float
    ks: float
    endpoint: bool = True


def _shape_mle(y: torch.Tensor) -> torch.Tensor:
    """Returns the Weibull shape MLE c ≥ 1 per row of y (G, K) > 0, solved by bisection on log c."""
    logy = y.log()
    lo = torch.zeros(len(y), dtype=y.dtype)  # log c, c = 1
    hi = torch.full((len(y),), math.log(SHAPE_MAX), dtype=y.dtype)

    def score(log_c: torch.Tensor) -> torch.Tensor:  # increasing in c; 0 at the MLE
        w = torch.softmax(log_c.exp().unsqueeze(1) * logy, dim=1)  # y^c / Σ y^c, stable
        return (w * logy).sum(1) - 1 / log_c.exp() - logy.mean(1)

    for _ in range(60):
        mid = (lo + hi) / 2
        up = score(mid) < 0
        lo, hi = torch.where(up, mid, lo), torch.where(up, hi, mid)
    # Where the score is already ≥ 0 at c = 1 the constrained optimum is c = 1.
    return torch.where(score(torch.zeros_like(lo)) >= 0, torch.ones_like(lo), ((lo + hi) / 2).exp())


def fit_reverse_weibull(maxima: torch.Tensor) -> ReverseWeibull:
    """Returns the maximum-likelihood reverse Weibull (shape ≥ 1) of the block maxima (K,)."""
    m = maxima.detach().double().flatten().cpu()
    if len(m) < MIN_BLOCKS:
        raise ValueError(f"need at least {MIN_BLOCKS} block maxima; got {len(m)}")
    top, spread = m.max(), m.max() - m.min()
    if spread <= 0:
        return ReverseWeibull(top.item(), 0.0, 1.0, 0.0)
    # μ = top + offset; the zero offset stands for the limit μ ↓ top (y gets a tiny floor).
    mu = top + spread * _GRID  # (G,)
    y = (mu.unsqueeze(1) - m.unsqueeze(0)).clamp(min=spread.item() * 1e-9)  # (G, K)
    c = _shape_mle(y)  # (G,)
    sigma = (y.pow(c.unsqueeze(1)).mean(1)).pow(1 / c)  # (G,)
    k = len(m)
    loglik = k * c.log() - k * c * sigma.log() + (c - 1) * y.log().sum(1) - k
    best = int(loglik.argmax())
    endpoint = best < len(mu) - 1 and c[best].item() < SHAPE_MAX * (1 - 1e-6)
    return ReverseWeibull(
        mu[best].item(), sigma[best].item(), c[best].item(), _ks(m, mu[best], sigma[best], c[best]), endpoint
    )


def _ks(m: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, c: torch.Tensor) -> float:
    """Returns the Kolmogorov–Smirnov distance between the maxima's empirical law and the fit."""
    s = m.sort().values
    cdf = torch.exp(-((mu - s).clamp(min=0) / sigma).pow(c))
    k = len(s)
    i = torch.arange(1, k + 1, dtype=s.dtype)
    return max((i / k - cdf).max().item(), (cdf - (i - 1) / k).max().item())


def block_maxima(values: torch.Tensor, block: int) -> torch.Tensor:
    """Returns the maxima of consecutive blocks of `block` values (S,) → (S // block,); a short tail is dropped."""
    k = len(values) // block
    return values[: k * block].reshape(k, block).amax(1)


def worst_margin_estimate(margins: torch.Tensor, block: int) -> ReverseWeibull | None:
    """Returns the reverse Weibull fitted to block maxima of −margins (None with < MIN_BLOCKS blocks).

    The estimate of the worst (smallest) margin is −location.
    """
    maxima = block_maxima(-margins.flatten(), block)
    return fit_reverse_weibull(maxima) if len(maxima) >= MIN_BLOCKS else None
