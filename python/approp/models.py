"""CNN4 for CIFAR-10, with input normalisation inside the model.

Inputs are images in [0, 1]; the model normalises them itself, so input balls
B∞(x, ε) are always stated on the pixel scale. The network is one flat
`nn.Sequential` (`model.layers`) so that interval propagation can walk it
layer by layer, one rule per layer kind.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


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


class CNN4(nn.Module):
    """Returns logits (B, 10) for images x (B, 3, 32, 32) in [0, 1].

    conv3x3(32w)-ReLU-conv3x3(32w)-ReLU-maxpool2-conv3x3(64w)-ReLU-conv3x3(64w)-ReLU-
    maxpool2-flatten-linear(256w)-ReLU-linear(10); convolutions keep the spatial
    size (padding 1), so the flattened feature map is 64w × 8 × 8.
    """

    def __init__(self, width: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        c1, c2, hidden = 32 * width, 64 * width, 256 * width
        self.width = width
        self.layers = nn.Sequential(
            Normalize(CIFAR10_MEAN, CIFAR10_STD),  # 0
            nn.Conv2d(3, c1, 3, padding=1),  # 1: (B, c1, 32, 32)
            nn.ReLU(),
            nn.Conv2d(c1, c1, 3, padding=1),  # 3: (B, c1, 32, 32)
            nn.ReLU(),
            nn.MaxPool2d(2),  # 5: (B, c1, 16, 16)
            nn.Conv2d(c1, c2, 3, padding=1),  # 6: (B, c2, 16, 16)
            nn.ReLU(),
            nn.Conv2d(c2, c2, 3, padding=1),  # 8: (B, c2, 16, 16)
            nn.ReLU(),
            nn.MaxPool2d(2),  # 10: (B, c2, 8, 8)
            nn.Flatten(),  # 11: (B, c2 * 64)
            nn.Linear(c2 * 8 * 8, hidden),  # 12
            nn.ReLU(),
            nn.Linear(hidden, num_classes),  # 14: (B, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def build_model(cfg: ModelConfig) -> nn.Module:
    """Returns a freshly initialised model for the architecture in `cfg`."""
    if cfg.arch == "cnn4":
        return CNN4(width=cfg.width)
    raise ValueError(f"unknown architecture {cfg.arch!r}")  # unreachable: ModelConfig validates
