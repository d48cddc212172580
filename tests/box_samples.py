"""Networks drawn inside a parameter box, for the soundness tests of the bound rules."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from approp.config import RadiusConfig
from approp.radius import parameter_radii


def samples(model, radius: RadiusConfig, corners: bool, gen: torch.Generator, n: int) -> Iterator[dict]:
    """Yields n parameter dicts in the box of `model` under `radius`: uniform, or at random corners."""
    radii = parameter_radii(model, radius)
    for _ in range(n):
        params = {}
        for name, p in model.named_parameters():
            u = torch.rand(p.shape, generator=gen, dtype=p.dtype) * 2 - 1
            params[name] = (p + (u.sign() if corners else u) * radii[name]).detach()
        yield params
