"""Layers of approp's own that the bound engine knows by type, below the model zoo.

The bound rules (approp.bounds) register a rule per layer type; a layer they must know
lives here, not in approp.models, so the engine never depends on the zoo of architectures.
"""

from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """Returns (x - mean) / std per channel; x is (B, C, H, W)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        # Non-persistent: constants of the architecture, not trained parameters,
        # so checkpoints hold exactly the parameters that the box perturbs.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
