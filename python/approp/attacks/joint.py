"""Joint attack on parameters and input: the lowest margin found inside the box and the ball, per point.

Each test point gets its own copy of the parameters (stacked along a leading
dimension and run with torch.vmap), so every point is attacked by the network
in B∞(θ, r(θ)) worst for it rather than one network for the whole batch.
Projected sign-gradient descent on the margin z_y − max_{j≠y} z_j moves every
parameter by α·r·sign(∇) (the parameter attack's step, in the box's own
coordinates) and the input by α·ε·sign(∇), α = 2.5/steps, projecting onto the
box and onto B∞(x, ε) ∩ [0, 1] after each step, from a uniform random start.
The lowest margin over the iterates is kept. The result is an achieved
margin — an upper bound on the true worst case, never a guarantee.
"""

from __future__ import annotations

import torch
from torch import nn

from ..boxes import Box, batched_logits, class_margin, project, stacked_uniform, uniform_inputs
from ..precision import full_precision


def _step(model: nn.Module, params: dict, xs: torch.Tensor, y: torch.Tensor):
    """Returns (margins (B,), parameter gradients, input gradient) of the summed margin."""
    leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    x_leaf = xs.detach().requires_grad_(True)
    margin = class_margin(batched_logits(model, leaves, x_leaf), y.unsqueeze(1)).squeeze(1)  # (B,)
    grads = torch.autograd.grad(margin.sum(), [*leaves.values(), x_leaf])
    return margin.detach(), dict(zip(leaves, grads[:-1])), grads[-1]


@full_precision()
def joint_attack_margins(
    model: nn.Module,
    box: Box,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 20,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Returns the lowest margin (B,) found per point over networks in the box and inputs in the ball.

    x: (B, C, H, W) in [0, 1]; y: (B,). Memory grows with B times the parameter count.
    """
    gen = generator or torch.Generator(device=x.device).manual_seed(0)
    b = len(x)
    params = stacked_uniform(box, b, gen)  # (B, *shape) each: one network per point
    xs = uniform_inputs(x, eps, 1, gen).transpose(0, 1)  # (B, 1, C, H, W): one input per network
    pbox = {n: (lo.unsqueeze(0), hi.unsqueeze(0)) for n, (lo, hi) in box.items()}
    radius = {n: (hi - lo) / 2 for n, (lo, hi) in pbox.items()}
    x_lo = (x - eps).clamp(min=0.0).unsqueeze(1)
    x_hi = (x + eps).clamp(max=1.0).unsqueeze(1)
    alpha = 2.5 / max(steps, 1)
    best = torch.full((b,), float("inf"), device=x.device)
    for _ in range(steps):
        margin, g_params, g_x = _step(model, params, xs, y)
        best = torch.minimum(best, margin)
        params = project({n: p - alpha * radius[n] * g_params[n].sign() for n, p in params.items()}, pbox)
        xs = torch.min(torch.max(xs - alpha * eps * g_x.sign(), x_lo), x_hi)
    with torch.no_grad():
        final = class_margin(batched_logits(model, params, xs), y.unsqueeze(1)).squeeze(1)
    return torch.minimum(best, final)
