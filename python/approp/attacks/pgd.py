"""L∞ projected gradient descent (Madry et al. 2018) on the input, with random start.

Images live on the [0, 1] pixel scale (the model normalises internally), so
the ball B∞(x, ε) is intersected with [0, 1] after every step. Gradients are
taken with `torch.autograd.grad` with respect to the perturbation only: the
attack never writes into the parameters' `.grad`, so it can run inside a
training step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import check_eps
from ..data import Split, batches
from ..precision import upcast


def pgd_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 10,
    alpha: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Returns adversarial images (B, C, H, W) in B∞(x, eps) ∩ [0, 1] that raise the cross-entropy.

    alpha: step size (default 2.5·eps/steps, Madry's choice for evaluation; training
    passes eps/4). The model runs in eval mode during the attack and gets its
    previous mode back afterwards.
    """
    check_eps(eps)
    if eps == 0 or steps == 0:
        return x.detach().clone()
    alpha = 2.5 * eps / steps if alpha is None else alpha
    was_training = model.training
    model.eval()
    try:
        delta = torch.zeros_like(x)  # (B, C, H, W)
        if random_start:
            delta = (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * eps
        x_adv = (x + delta).clamp(0.0, 1.0).detach()
        for _ in range(steps):
            x_adv.requires_grad_(True)
            loss = F.cross_entropy(upcast(model(x_adv)), y, reduction="sum")  # fp32 loss under bf16 autocast
            (grad,) = torch.autograd.grad(loss, x_adv)
            step = x_adv.detach() + alpha * grad.sign()
            x_adv = torch.min(torch.max(step, x - eps), x + eps).clamp(0.0, 1.0).detach()
        return x_adv
    finally:
        model.train(was_training)


def pgd_correct(
    model: nn.Module,
    split: Split,
    eps: float,
    steps: int = 20,
    alpha: float | None = None,
    restarts: int = 1,
    batch_size: int = 500,
    seed: int = 0,
) -> torch.Tensor:
    """Returns a bool mask (N,): True where the clean prediction and every PGD restart are correct.

    Leaves the model in eval mode.
    """
    gen = torch.Generator(device=split.y.device).manual_seed(seed)
    masks = []
    for x, y in batches(split, batch_size):
        with torch.no_grad():
            ok = model.eval()(x).argmax(1) == y  # (B,)
        for _ in range(restarts):
            x_adv = pgd_attack(model, x, y, eps, steps, alpha, random_start=True, generator=gen)
            with torch.no_grad():
                ok &= model(x_adv).argmax(1) == y
        masks.append(ok)
    return torch.cat(masks) if masks else torch.zeros(0, dtype=torch.bool, device=split.y.device)


def pgd_accuracy(model: nn.Module, split: Split, eps: float, **kwargs) -> float:
    """Returns the share of the split still classified correctly under PGD (see `pgd_correct`)."""
    mask = pgd_correct(model, split, eps, **kwargs)
    return mask.float().mean().item() if len(mask) else 0.0
