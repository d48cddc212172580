"""CNN4, CNN4 with BatchNorm and CNN7 for CIFAR-10, with input normalisation inside the model.

Inputs are images in [0, 1]; the model normalises them itself, so input balls
B∞(x, ε) are always stated on the pixel scale. Every network is one flat
`nn.Sequential` (`model.layers`) so that interval propagation can walk it
layer by layer, one rule per layer kind.

BatchNorm layers (cnn4_bn, cnn7) follow every convolution and the hidden
linear layer, never the last one, as in Shi et al. 2021's cnn_7layer_bn2. In
training the bounds use the clean batch's statistics (approp.bounds.batchnorm);
in evaluation the running statistics, which checkpoints carry.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ModelConfig
from .layers import Normalize  # noqa: F401  (re-exported: approp.models.Normalize stays valid)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


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


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    """Returns [conv3x3 (padding 1), BatchNorm2d, ReLU]."""
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]


class CNN4BN(nn.Module):
    """Returns logits (B, 10): CNN4 with BatchNorm between every convolution and its ReLU,
    and BatchNorm1d between the hidden linear layer and its ReLU (none after the last layer).

    normalize-[conv-BN-ReLU]×2-maxpool2-[conv-BN-ReLU]×2-maxpool2-flatten-linear-BN1d-ReLU-linear.
    """

    def __init__(self, width: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        c1, c2, hidden = 32 * width, 64 * width, 256 * width
        self.width = width
        self.layers = nn.Sequential(
            Normalize(CIFAR10_MEAN, CIFAR10_STD),
            *_conv_bn_relu(3, c1), *_conv_bn_relu(c1, c1),  # (B, c1, 32, 32)
            nn.MaxPool2d(2),  # (B, c1, 16, 16)
            *_conv_bn_relu(c1, c2), *_conv_bn_relu(c2, c2),
            nn.MaxPool2d(2),  # (B, c2, 8, 8)
            nn.Flatten(),
            nn.Linear(c2 * 8 * 8, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class CNN7(nn.Module):
    """Returns logits (B, 10): Shi et al. 2021's cnn_7layer_bn2, channels and hidden units × width.

    normalize-[conv-BN-ReLU](c)-[conv-BN-ReLU](c)-[conv stride 2-BN-ReLU](2c)-[conv-BN-ReLU](2c)×2-
    flatten-linear(512w)-BN1d-ReLU-linear(10), c = 64w; the one strided convolution halves 32 → 16.
    """

    def __init__(self, width: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        c, hidden = 64 * width, 512 * width
        self.width = width
        self.layers = nn.Sequential(
            Normalize(CIFAR10_MEAN, CIFAR10_STD),
            *_conv_bn_relu(3, c), *_conv_bn_relu(c, c),  # (B, c, 32, 32)
            *_conv_bn_relu(c, 2 * c, stride=2),  # (B, 2c, 16, 16)
            *_conv_bn_relu(2 * c, 2 * c), *_conv_bn_relu(2 * c, 2 * c),
            nn.Flatten(),  # (B, 2c·16·16)
            nn.Linear(2 * c * 16 * 16, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


ARCHITECTURES: dict[str, type[nn.Module]] = {"cnn4": CNN4, "cnn4_bn": CNN4BN, "cnn7": CNN7}


def ibp_std(weight: torch.Tensor) -> float:
    """Returns Shi et al.'s IBP-init standard deviation √(2π)/fan_in for a weight (out, in, *kernel).

    fan_in is PyTorch's (in × kernel area for a convolution), as in their manual_init.py,
    which draws N(0, 2π/fan_in²).
    """
    fan_in = weight.shape[1] * math.prod(weight.shape[2:])
    return math.sqrt(2 * math.pi) / fan_in


@torch.no_grad()
def ibp_init(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Returns `model` with every weight (≥ 2 dims) but the last layer's redrawn from N(0, ibp_std²).

    Biases and BatchNorm's γ, β (one-dimensional) keep their values. Shi et al. (2021) chose σ so
    that the expected interval width of a ReLU layer's output stays that of its input at init,
    instead of growing by a factor of order √fan_in per layer as under the default init.
    """
    weights = [p for p in model.parameters() if p.dim() >= 2]  # in layer order: the last is the output layer's
    for w in weights[:-1]:
        w.normal_(0.0, ibp_std(w), generator=generator)
    return model


def build_model(cfg: ModelConfig) -> nn.Module:
    """Returns a freshly initialised model for the architecture and initialisation in `cfg`."""
    model = ARCHITECTURES[cfg.arch](width=cfg.width)  # ModelConfig validated arch
    return ibp_init(model) if cfg.init == "ibp" else model
