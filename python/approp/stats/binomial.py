"""Exact (Clopper–Pearson) one-sided confidence bounds on a binomial probability.

From f failures in n independent Bernoulli(p) trials, the one-sided upper
bound U(f, n, δ) is the p at which P(X ≤ f | n, p) = δ, and U = 1 when f = n;
the lower bound L(f, n, δ) is the p at which P(X ≥ f | n, p) = δ, and L = 0
when f = 0. Whatever p is, P(p ≤ U) ≥ 1 − δ and P(p ≥ L) ≥ 1 − δ. The
binomial distribution function is summed exactly in log space (float64) and
the root found by bisection, so no special-function library is needed; the
bisection keeps the side of the root that makes each bound conservative.

`round_delta(δ, k)` = δ·6/(π²k²) spends δ across the rounds k = 1, 2, … of a
sequential test: the bounds of all rounds hold at once with probability at
least 1 − Σ_k δ_k ≥ 1 − δ, so a bound read at a data-dependent stopping round
is still valid at 1 − δ.
"""

from __future__ import annotations

import math

import torch

_BISECTION_STEPS = 64  # halves [0, 1] down to 2⁻⁶⁴, below float64's resolution near the roots used here


def _as_f64(v) -> torch.Tensor:
    return torch.as_tensor(v, dtype=torch.float64)


def binomial_cdf(f: torch.Tensor, n: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Returns P(X ≤ f) for X ~ Binomial(n, p), elementwise over broadcast (f, n, p) (float64)."""
    f, n, p = torch.broadcast_tensors(_as_f64(f), _as_f64(n), _as_f64(p))
    i = torch.arange(int(f.max().item()) + 1 if f.numel() else 1, dtype=torch.float64)  # (T,)
    fi, ni, pi = f.unsqueeze(-1), n.unsqueeze(-1), p.unsqueeze(-1)  # (..., 1)
    log_choose = torch.lgamma(ni + 1) - torch.lgamma(i + 1) - torch.lgamma(ni - i + 1)  # (..., T)
    # xlogy keeps 0·log 0 = 0 at p = 0 and p = 1.
    log_terms = log_choose + torch.xlogy(i, pi) + torch.xlogy(ni - i, 1 - pi)
    log_terms = log_terms.masked_fill(i > fi, float("-inf"))
    return torch.logsumexp(log_terms, dim=-1).exp().clamp(0.0, 1.0)


def _check(f: torch.Tensor, n: torch.Tensor, delta: torch.Tensor) -> None:
    if bool(((f < 0) | (f > n) | (f != f.round()) | (n != n.round())).any()):
        raise ValueError("failures must be integers in [0, n]")
    if bool(((delta <= 0) | (delta >= 1)).any()):
        raise ValueError(f"delta must be in (0, 1); got {delta.tolist()}")


def clopper_pearson_upper(f, n, delta) -> torch.Tensor:
    """Returns the one-sided Clopper–Pearson upper bound on p at confidence 1 − δ (float64, broadcast shape).

    P(p ≤ bound) ≥ 1 − δ for every p; the bound is 1 where f = n (or n = 0), and
    1 − δ^(1/n) where f = 0.
    """
    f, n, delta = torch.broadcast_tensors(_as_f64(f), _as_f64(n), _as_f64(delta))
    _check(f, n, delta)
    lo, hi = torch.zeros_like(f), torch.ones_like(f)
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        above = binomial_cdf(f, n, mid) > delta  # the root lies above mid
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    # hi always satisfies P(X ≤ f | hi) ≤ δ, so it is at or above the exact root: conservative.
    return torch.where(f >= n, torch.ones_like(hi), hi)


def clopper_pearson_lower(f, n, delta) -> torch.Tensor:
    """Returns the one-sided Clopper–Pearson lower bound on p at confidence 1 − δ (0 where f = 0)."""
    f, n, delta = torch.broadcast_tensors(_as_f64(f), _as_f64(n), _as_f64(delta))
    # Failures of p are successes of 1 − p: L(f, n) = 1 − U(n − f, n); conservative as U is.
    return torch.where(f <= 0, torch.zeros_like(f), 1 - clopper_pearson_upper(n - f, n, delta))


def round_delta(delta: float, k: int) -> float:
    """Returns δ_k = δ·6/(π²k²), the share of δ spent on round k ≥ 1 (Σ_k δ_k = δ)."""
    if k < 1:
        raise ValueError(f"rounds count from 1; got {k}")
    return delta * 6.0 / (math.pi**2 * k * k)


def samples_for_zero_failures(p0: float, delta: float) -> int:
    """Returns the least n with U(0, n, δ) ≤ p0, i.e. ⌈ln δ / ln(1 − p0)⌉."""
    return math.ceil(math.log(delta) / math.log1p(-p0))


def samples_needed(p0: float, delta: float, failures: int) -> int:
    """Returns the least n whose upper bound with `failures` failures is ≤ p0 (by doubling, then bisection)."""
    hi = max(samples_for_zero_failures(p0, delta), failures + 1)
    while clopper_pearson_upper(failures, hi, delta).item() > p0:
        hi *= 2
    lo = failures  # U(f, f) = 1 > p0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if clopper_pearson_upper(failures, mid, delta).item() > p0:
            lo = mid
        else:
            hi = mid
    return hi
