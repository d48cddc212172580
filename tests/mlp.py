"""A small MLP trained for seconds on CIFAR-10, shared by the quantisation, deployment and fault tests."""

from __future__ import annotations

from pathlib import Path

import torch

from approp.data import Split, load_cifar10


def train_mlp(cifar_dir: Path, activation: type[torch.nn.Module] = torch.nn.ReLU, small_init: bool = True):
    """Returns a one-hidden-layer MLP (3072-32-10) after 40 full-batch Adam steps on 2,000 CIFAR-10 training
    images (≈ 30 % test accuracy): small enough that the quantisation boxes certify many of its points.

    small_init: weights from N(0, 0.02²) drawn with a seeded generator; else PyTorch's default
    initialisation after torch.manual_seed(0).
    """
    from torch import nn

    from approp.data import to_float

    train = Split(*load_cifar10(cifar_dir, train=True)).take(2000)
    x, y = to_float(train.x), train.y
    if not small_init:
        torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3072, 32), activation(), nn.Linear(32, 10))
    if small_init:
        gen = torch.Generator().manual_seed(0)
        for p in model.parameters():
            nn.init.normal_(p, std=0.02, generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(40):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()
