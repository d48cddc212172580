"""auto_LiRPA's bounds on approp's models: the independent implementation the comparison checks against.

Used by tests/test_lirpa_compare.py and benchmarks/lirpa_compare.py; importing it needs auto_LiRPA.
auto_LiRPA's PyPI release (0.3) does not import under numpy 2 (it imports numpy.lib.arraysetops)
and pins torch < 1.13; its source (github.com/Verified-Intelligence/auto_LiRPA, the May 2026
release, commit a050a3d) works with this project's torch when it is on PYTHONPATH together with
the pure-Python packages appdirs, tqdm and graphviz (docs/results/lirpa/README.md).

Two workarounds, both for defects of auto_LiRPA that are not about the bound rules:
- float64: its max-pool backward step creates its buffers with torch.zeros in the default dtype
  (operators/pooling.py), which fails against float64 coefficients, so every call runs under
  `default_dtype(x.dtype)`.
- full CROWN: its intermediate (patches-mode) backward pass mishandles a (1, C, 1, 1) constant
  operand of a subtraction (approp's Normalize: "Constant operand ... has batch dimension", then
  a shape error in add_constant_node), and a (C, 1, 1) one trips an assertion in its division.
  `conv_normalised` hands it the same network with Normalize written as a 1×1 convolution
  (weight diag(1/σ), bias −μ/σ), which it handles. IBP and CROWN-IBP run on the model as it is.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm
from torch import nn

from approp.bounds import linear_rules
from approp.bounds.interval import Interval
from approp.bounds.linear import margin_specs
from approp.layers import Normalize

BATCHNORMS = nn.modules.batchnorm._BatchNorm


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Sets torch's default dtype inside the block (auto_LiRPA creates some buffers in it)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@torch.no_grad()
def calibrate(model: nn.Module, images: torch.Tensor, batch: int = 64) -> nn.Module:
    """Returns `model` in eval mode with every BatchNorm's running statistics the exact average over `images`.

    images (N, C, H, W) in [0, 1] pass through in train mode in batches; momentum None makes the
    running statistics the cumulative average instead of an exponential one (the momentum is restored).
    """
    layers = [m for m in model.modules() if isinstance(m, BATCHNORMS)]
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for start in range(0, len(images), batch):
        model(images[start : start + batch])
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    return model.eval()


def as_conv(layer: Normalize) -> nn.Conv2d:
    """Returns the 1×1 convolution computing layer's (x − μ)/σ as x·(1/σ) − μ/σ, in layer's dtype."""
    mean, std = layer.mean.flatten(), layer.std.flatten()  # (C,) each
    channels = len(mean)
    conv = nn.Conv2d(channels, channels, 1).to(mean.dtype)
    with torch.no_grad():
        conv.weight.copy_(torch.diag(1.0 / std).view(channels, channels, 1, 1))
        conv.bias.copy_(-mean / std)
    return conv


def conv_normalised(model: nn.Module) -> nn.Module:
    """Returns a deep copy of `model` with every Normalize replaced by its 1×1 convolution (see the docstring)."""
    copied = copy.deepcopy(model)
    for parent in copied.modules():
        for name, child in parent.named_children():
            if isinstance(child, Normalize):
                setattr(parent, name, as_conv(child))
    return copied


def ball(x: torch.Tensor, eps: float) -> BoundedTensor:
    """Returns x (B, C, H, W) bounded by B∞(x, ε) ∩ [0, 1], the clipped box approp's input_ball uses."""
    lower, upper = (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)
    return BoundedTensor(x, PerturbationLpNorm(norm=float("inf"), eps=eps, x_L=lower, x_U=upper))


def bounded(model: nn.Module, x: torch.Tensor) -> BoundedModule:
    """Returns auto_LiRPA's BoundedModule of `model` (eval mode) traced on x's shape and dtype."""
    with default_dtype(x.dtype):
        return BoundedModule(model, torch.zeros_like(x), device=x.device)


@torch.no_grad()
def ibp_logits(module: BoundedModule, x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns auto_LiRPA's IBP (lower, upper) logit bounds, each (B, K), over the clipped ball."""
    with default_dtype(x.dtype):
        return module.compute_bounds(x=(ball(x, eps),), method="IBP")


@torch.no_grad()
def margins(module: BoundedModule, x: torch.Tensor, y: torch.Tensor, eps: float, method: str) -> torch.Tensor:
    """Returns auto_LiRPA's lower bounds of z_y − z_j (B, K), 0 at j = y, by `method` ("IBP", "CROWN-IBP", "CROWN").

    The specification is approp's: the rows e_y − e_j for j ≠ y (approp.bounds.linear.margin_specs), passed
    as auto_LiRPA's C matrix (B, K − 1, K), which it merges with the last linear layer as approp does.
    """
    num_classes = _num_classes(module, x)
    others, spec = margin_specs(y, num_classes)
    with default_dtype(x.dtype):
        lower, _ = module.compute_bounds(x=(ball(x, eps),), C=spec.to(x.dtype), method=method, bound_upper=False)
    return lower.new_zeros(len(y), num_classes).scatter(1, others, lower.detach())


def _num_classes(module: BoundedModule, x: torch.Tensor) -> int:
    """Returns the number of logits of `module` (one forward pass on the first point)."""
    with default_dtype(x.dtype):
        return module(x[:1]).shape[1]


def lirpa_pool_relaxation(inp: Interval, cache: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Returns approp's max-pool relaxation cache (approp.bounds.linear_rules._pool_relaxation) with auto_LiRPA's rule.

    Both take out ≥ x_i, i = argmax_i l_i, below, and above either the dominating input (out = x_i
    exactly) or the constant max_i u_i. They differ only in which input they test for dominance:
    auto_LiRPA (BoundMaxPool.bound_backward) the argmax of the lower bounds, approp the argmax of
    the upper ones. Without ties both find the same windows; with ties (ReLU outputs: several
    lower bounds at 0) one may keep a window linear where the other takes the constant. Both are
    sound, and neither choice is always tighter: a linear term is relaxed further back, the constant
    is the interval bound. inp (B, C, H, W); picks are positions in the flattened H·W plane.
    """
    if "low" not in cache:
        lower, upper = inp.lower, inp.upper
        best_lower, low = F.max_pool2d(lower, 2, return_indices=True)  # (B, C, h, w)
        others = upper.flatten(2).scatter(-1, low.flatten(2), float("-inf")).view_as(upper)
        dominant = best_lower >= F.max_pool2d(others, 2)
        top = F.max_pool2d(upper, 2)
        cache["low"] = cache["up"] = low.flatten(2)  # (B, C, h·w)
        cache["dominant"] = dominant.flatten(2).to(upper.dtype)
        cache["up_const"] = torch.where(dominant, torch.zeros_like(top), top).flatten(2).unsqueeze(-1)
    return cache


@contextmanager
def lirpa_pool_rule() -> Iterator[None]:
    """Makes approp's linear bounds use auto_LiRPA's max-pool tie rule (lirpa_pool_relaxation) inside the block."""
    own = linear_rules._pool_relaxation
    linear_rules._pool_relaxation = lirpa_pool_relaxation
    try:
        yield
    finally:
        linear_rules._pool_relaxation = own
