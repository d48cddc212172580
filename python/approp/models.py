"""CNN4, CNN4 with BatchNorm, CNN7, ResNet-20 and PreAct ResNet-18 for CIFAR-10, input normalisation inside.

Inputs are images in [0, 1]; the model normalises them itself, so input balls
B∞(x, ε) are always stated on the pixel scale. The chain networks are one flat
`nn.Sequential` (`model.layers`); the residual ones are graphs with additions.
The bounds trace either (approp.bounds.graph) and apply one rule per node kind.

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
from .layers import Normalize

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
            *_conv_bn_relu(3, c1),
            *_conv_bn_relu(c1, c1),  # (B, c1, 32, 32)
            nn.MaxPool2d(2),  # (B, c1, 16, 16)
            *_conv_bn_relu(c1, c2),
            *_conv_bn_relu(c2, c2),
            nn.MaxPool2d(2),  # (B, c2, 8, 8)
            nn.Flatten(),
            nn.Linear(c2 * 8 * 8, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
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
            *_conv_bn_relu(3, c),
            *_conv_bn_relu(c, c),  # (B, c, 32, 32)
            *_conv_bn_relu(c, 2 * c, stride=2),  # (B, 2c, 16, 16)
            *_conv_bn_relu(2 * c, 2 * c),
            *_conv_bn_relu(2 * c, 2 * c),
            nn.Flatten(),  # (B, 2c·16·16)
            nn.Linear(2 * c * 16 * 16, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class BasicBlock(nn.Module):
    """Returns relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)): He et al.'s basic block, post-activation.

    shortcut: the identity where shape is kept; else option B, a 1×1 convolution (stride 2) with
    BatchNorm (the projection). Option A (strided subsampling, zero-padded channels) would need
    strided slicing and padding as node kinds of their own; B is built of layers the bounds know.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))  # (B, c_out, H/stride, W/stride)
        return self.relu2(out + self.shortcut(x))


class ResNet20(nn.Module):
    """Returns logits (B, 10): He et al. 2016's CIFAR ResNet-20 (§4.2), channels × width.

    normalize-conv3x3(16w)-BN-ReLU, then 3 stages of 3 basic blocks with 16w, 32w, 64w channels
    (the first block of stages 2 and 3 has stride 2: 32 → 16 → 8), global average pooling,
    linear(10): 19 convolutions and one linear layer. Shortcuts: identity, and option B
    (1×1 convolution + BatchNorm) where a stage changes shape (see BasicBlock).
    """

    def __init__(self, width: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        c = 16 * width
        self.width = width
        self.normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
        self.stem = nn.Sequential(*_conv_bn_relu(3, c))  # (B, c, 32, 32); bias kept as in _conv_bn_relu
        blocks, c_in = [], c
        for stage, c_out in enumerate((c, 2 * c, 4 * c)):
            for i in range(3):
                blocks.append(BasicBlock(c_in, c_out, stride=2 if stage > 0 and i == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)  # (B, 4c, 8, 8)
        self.pool = nn.AdaptiveAvgPool2d(1)  # (B, 4c, 1, 1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(4 * c, num_classes)  # registered last: ibp_init leaves it alone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.flatten(self.pool(self.blocks(self.stem(self.normalize(x))))))


class PreActBlock(nn.Module):
    """Returns conv2(relu(bn2(conv1(a)))) + shortcut, a = relu(bn1(x)): He et al.'s pre-activation block.

    shortcut: x where shape is kept, else a 1×1 convolution (stride s, no bias, no BatchNorm) of a,
    as in AWP's PreActResNet18 (so `a` feeds both branches).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.projection = None
        if stride != 1 or c_in != c_out:
            self.projection = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu1(self.bn1(x))
        shortcut = x if self.projection is None else self.projection(a)
        return self.conv2(self.relu2(self.bn2(self.conv1(a)))) + shortcut


class PreActResNet18(nn.Module):
    """Returns logits (B, 10): PreAct ResNet-18 as AWP (Wu et al. 2020) trains it, channels × width.

    normalize-conv3x3(64w, no bias), 4 stages of 2 pre-activation blocks with 64w, 128w, 256w, 512w
    channels (strides 1, 2, 2, 2: 32 → 4), BN-ReLU, 4×4 average pooling, flatten, linear(10).
    AWP's repository feeds unnormalised images; here the normalisation is the model's first layer.
    """

    def __init__(self, width: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        c = 64 * width
        self.width = width
        self.normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)  # (B, c, 32, 32)
        blocks, c_in = [], c
        for stage, c_out in enumerate((c, 2 * c, 4 * c, 8 * c)):
            for i in range(2):
                blocks.append(PreActBlock(c_in, c_out, stride=2 if stage > 0 and i == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)  # (B, 8c, 4, 4)
        self.bn = nn.BatchNorm2d(8 * c)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(4)  # (B, 8c, 1, 1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(8 * c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn(self.blocks(self.stem(self.normalize(x)))))
        return self.linear(self.flatten(self.pool(out)))


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "cnn4": CNN4,
    "cnn4_bn": CNN4BN,
    "cnn7": CNN7,
    "resnet20": ResNet20,
    "preact_resnet18": PreActResNet18,
}


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
