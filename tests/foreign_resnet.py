"""A small residual network written as someone else would write it: torch only, no approp import.

It uses every node kind the graph engine knows besides approp's own Normalize and MaxPool2d:
Conv2d, BatchNorm2d, nn.ReLU, F.relu, torch.relu, Tensor.relu, `+=`, torch.add, Tensor.add,
AvgPool2d, F.avg_pool2d, AdaptiveAvgPool2d, F.adaptive_avg_pool2d, Identity, Dropout, view,
reshape, torch.flatten, Tensor.flatten, x.size(0), x.shape[0] and Linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + x): a basic block with an identity shortcut."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return torch.relu(out)


class ForeignResNet(nn.Module):
    """Returns logits (B, 10) for x (B, 3, 8, 8): stem, block, projection block, two pooling branches."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.block = Block(4)
        self.down = nn.Conv2d(4, 6, 3, stride=2, padding=1)  # 8 → 4
        self.down_bn = nn.BatchNorm2d(6)
        self.project = nn.Conv2d(4, 6, 1, stride=2)
        self.pool = nn.AvgPool2d(2)  # 4 → 2
        self.skip = nn.Identity()
        self.drop = nn.Dropout(0.5)
        self.head = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(self.stem(x))  # (B, 4, 8, 8)
        h = torch.add(self.down_bn(self.down(h)), self.project(h)).relu()  # (B, 6, 4, 4)
        h = self.drop(self.skip(self.pool(h))).add(F.avg_pool2d(h, 2))  # (B, 6, 2, 2): h feeds two branches
        g, g2 = self.head(h), F.adaptive_avg_pool2d(h, 1)  # (B, 6, 1, 1) each
        flat = g.view(g.size(0), -1) + torch.flatten(g2, 1) + g.reshape(g.shape[0], -1) + g2.flatten(1)
        return self.fc(flat)
