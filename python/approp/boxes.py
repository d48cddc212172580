"""Boxes of parameters and their sampling: the one home of `Box` for attacks, certify and neighbourhood.

A box maps each parameter name to its (lower, upper) tensors, B∞(θ, r(θ))
elementwise (approp.radius.parameter_box builds it from a radius rule,
approp.attacks.relative_box from λ|θ|). Networks are drawn in it uniformly
(every parameter independently uniform on [lower, upper]; parameters with
r = 0 stay fixed) or at its corners (every parameter at a random end, where
interval bounds are tight); inputs are drawn uniformly from
B∞(x, ε) ∩ [0, 1]^d, the same set the interval bounds cover. M networks are
stacked along a leading dimension and run at once with
torch.func.functional_call under torch.vmap; each (network, point) pair gets
its own input draw, so for a fixed test point the M margins are independent
draws of the same distribution (approp.certify.statistical's sampling).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .precision import full_precision

Box = dict[str, tuple[torch.Tensor, torch.Tensor]]
Params = dict[str, torch.Tensor]
SampleMode = Literal["uniform", "corner"]


def class_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Returns z_y − max_{j≠y} z_j of logits (..., K) for labels y broadcast to logits.shape[:-1]."""
    y = y.expand(logits.shape[:-1])
    own = F.one_hot(y, logits.shape[-1]).bool()  # (..., K)
    true = logits.masked_fill(~own, float("-inf")).amax(-1)
    other = logits.masked_fill(own, float("-inf")).amax(-1)
    return true - other


def project(params: Params, box: Box) -> Params:
    """Returns the parameters clamped elementwise into the box."""
    return {n: torch.max(torch.min(p, box[n][1]), box[n][0]) for n, p in params.items()}


def sample_in_box(box: Box, mode: SampleMode, generator: torch.Generator) -> Params:
    """Returns {name: θ̃} drawn in the box: uniform in each interval, or at a random end of each (corner)."""
    out = {}
    for name, (lo, hi) in box.items():
        u = torch.rand(lo.shape, generator=generator, device=lo.device, dtype=lo.dtype)
        out[name] = lo + (hi - lo) * u if mode == "uniform" else torch.where(u < 0.5, lo, hi)
    return out


def stacked_uniform(box: Box, m: int, generator: torch.Generator) -> Params:
    """Returns {name: (m, *shape)}: m parameter sets drawn independently and uniformly in the box."""
    out = {}
    for name, (lo, hi) in box.items():
        u = torch.rand((m, *lo.shape), generator=generator, device=lo.device, dtype=lo.dtype)
        out[name] = lo + (hi - lo) * u
    return out


def uniform_inputs(x: torch.Tensor, eps: float, m: int, generator: torch.Generator) -> torch.Tensor:
    """Returns (m, B, C, H, W) inputs drawn independently and uniformly in B∞(x, ε) ∩ [0, 1]."""
    lo, hi = (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)  # (B, C, H, W)
    u = torch.rand((m, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    return lo + (hi - lo) * u


def check_eval_batchnorm(model: nn.Module) -> None:
    """Raises ValueError naming any BatchNorm layer of `model` in training mode.

    In eval mode BatchNorm is a fixed per-channel affine map (running statistics), the same for
    every sampled network; in training mode its statistics would come from each network's own
    batch, which is not the network the box describes.
    """
    for name, layer in model.named_modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.training:
            raise ValueError(
                f"BatchNorm layer {name!r} is in training mode: call model.eval() before sampling networks"
            )


def batched_logits(model: nn.Module, params: Params, xs: torch.Tensor) -> torch.Tensor:
    """Returns logits (M, B, K): network m of the stacked params (M, …) applied to its inputs xs[m] (B, …).

    BatchNorm layers must be in eval mode (check_eval_batchnorm); their running statistics are shared.
    """
    check_eval_batchnorm(model)

    def one(p: Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, p, (x,))

    return torch.vmap(one)(params, xs)


@torch.no_grad()
@full_precision()
def sampled_margins(
    model: nn.Module,
    box: Box,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    m: int,
    generator: torch.Generator,
    chunk_images: int = 512,
) -> torch.Tensor:
    """Returns margins (m, B): m networks uniform in the box, each on its own uniform input per point.

    Networks run `chunk_images // B` at a time (at least one) to bound the
    activation memory; which numbers are drawn depends on the chunk size, so
    keep it fixed for reproducible results.
    """
    per_call = max(1, chunk_images // max(len(x), 1))
    out = []
    for start in range(0, m, per_call):
        k = min(per_call, m - start)
        params = stacked_uniform(box, k, generator)
        xs = uniform_inputs(x, eps, k, generator)  # (k, B, C, H, W)
        out.append(class_margin(batched_logits(model, params, xs), y))  # (k, B)
    return torch.cat(out) if out else torch.zeros((0, len(x)), device=x.device)
