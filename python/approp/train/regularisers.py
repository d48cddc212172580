"""Warm-up regularisers for interval-bound training (Shi et al. 2021, "Fast certified robust
training with short warmup"), read off the pre-activation intervals of the bound pass.

Both terms are averaged over the network's ReLU layers l, each with its
pre-activation interval ⟨c, r⟩ over the whole batch (c center, r radius):

- tightness: relu(tol − τ₀/τ_l)/tol with τ_l = mean(r) and τ₀ the mean radius
  of the input box as the network sees it (after its normalisation). It
  penalises a layer whose bounds have grown more than 1/tol times the
  input's, which is what IBP's default initialisation does with depth.
- ReLU balance: (relu(tol − ρ_mean) + relu(tol − ρ_var))/tol over the
  *stable* neurons, active (lower > 0) against inactive (upper < 0):
  ρ_mean = balance(mean(c·[active]), −mean(c·[inactive])) and
  ρ_var = balance(Σ(c − mean c)²·[active], Σ(c − mean c)²·[inactive]),
  where balance(a, b) = min(a/b, b/a) ∈ [0, 1]. It keeps IBP from killing
  most ReLUs (inactive neurons give tight bounds for free). A layer with
  neither active nor inactive neurons (0/0) adds nothing, as in the reference.

The total is (Σ_l tightness_l + Σ_l balance_l) / number of ReLU layers and
enters the loss weighted by λ_reg·(1 − ε_t/ε_max) = λ_reg·(1 − r), r the ramp
factor: full weight in the clean warm-up, fading to 0 at the end of the ramp.
Shi et al. and CTBench use λ_reg = 0.5 and tol = 0.5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..bounds import BoundsRecord, Interval

# The input ball used for the regulariser's bounds while ε = λ = 0 (clean warm-up):
# the ratios it reads are scale-free for small balls; Shi et al. and CTBench use 1e-6.
REG_MIN_EPS = 1e-6
_TINY = 1e-12  # the reference's floor under denominators


def regulariser_weight(reg_lambda: float, r: float) -> float:
    """Returns the regulariser's weight λ_reg·(1 − r) at ramp factor r in [0, 1] (0 once r = 1)."""
    return reg_lambda * (1.0 - r)


def tightness_term(first: Interval, pre: Interval, tol: float) -> torch.Tensor:
    """Returns relu(tol − τ₀/τ_l)/tol (a 0-dim tensor) for one ReLU's pre-activation interval."""
    tau0 = first.radius.mean()
    tau = pre.radius.mean()
    return F.relu(tol - tau0 / tau.clamp(min=_TINY)) / tol


def _balance(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (min(a/b, b/a), whether it is defined) for a, b >= 0; 0/0 is undefined.

    min(a, b)/max(a, b) equals the reference's min(a/b, 1/(a/b)) and has a finite
    gradient where either side is 0 (the ratio a/b would be infinite there).
    """
    hi = torch.maximum(a, b)
    return torch.minimum(a, b) / hi.clamp(min=_TINY), hi > 0


def relu_balance_term(pre: Interval, tol: float) -> torch.Tensor:
    """Returns the ReLU-balance loss (a 0-dim tensor) of one pre-activation interval.

    pre holds (B, ...) tensors; means and sums run over every element, batch included.
    """
    c, r = pre.center, pre.radius
    active = (c > r).to(c.dtype)  # lower > 0
    inactive = (c < -r).to(c.dtype)  # upper < 0
    mean_ratio, mean_ok = _balance((c * active).mean(), -(c * inactive).mean())
    delta = (c - c.mean()).square()
    var_ratio, var_ok = _balance((delta * active).sum(), (delta * inactive).sum())
    loss = (F.relu(tol - mean_ratio) + F.relu(tol - var_ratio)) / tol
    # The reference drops the layer's term when either ratio is NaN (0/0); without a host sync.
    return torch.where(mean_ok & var_ok, loss, torch.zeros_like(loss))


def warmup_regulariser(record: BoundsRecord, tol: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Returns (tightness + balance averaged over ReLU layers, detached logs of each term).

    The record must come from a bound pass over a network with at least one ReLU.
    """
    if record.first is None or not record.pre_relu:
        raise ValueError("the warm-up regulariser needs a bound pass through at least one ReLU")
    n = len(record.pre_relu)
    tight = torch.stack([tightness_term(record.first, p, tol) for p in record.pre_relu]).sum() / n
    relu = torch.stack([relu_balance_term(p, tol) for p in record.pre_relu]).sum() / n
    total = tight + relu
    return total, {"reg_tightness": tight.detach(), "reg_relu": relu.detach()}
