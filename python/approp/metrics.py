"""Accuracy measures over a whole split: clean and verified (from the bounds)."""

from __future__ import annotations

import torch
from torch import nn

from .bounds import verified
from .bounds.verify import check_method, verified_by
from .config import ConfigError, RadiusConfig
from .data import Split, batches
from .precision import full_precision


@torch.no_grad()
@full_precision()
def clean_accuracy(model: nn.Module, split: Split, batch_size: int = 500) -> float:
    """Returns the share of the split the model classifies correctly."""
    model.eval()
    correct = torch.zeros((), device=split.y.device)
    for x, y in batches(split, batch_size):
        correct += (model(x).argmax(1) == y).sum()
    return correct.item() / max(len(split), 1)


@torch.no_grad()
@full_precision()
def verified_accuracy(
    model: nn.Module,
    split: Split,
    eps: float,
    radius: RadiusConfig | None,
    lam: float | None = None,
    batch_size: int = 500,
    method: str | None = None,
) -> float:
    """Returns the share of points that every network in the box classifies correctly on the whole ball.

    method None: interval margin bounds as always; "ibp" | "crown" | "best": the verified
    decision of approp.bounds.verify (with its rounding allowance; "crown" the linear bounds,
    "best" per margin the better of interval and linear).
    """
    if method is not None:
        check_method(method)
    model.eval()
    count = torch.zeros((), device=split.y.device)
    for x, y in batches(split, batch_size):
        if method is None:
            count += verified(model, x, y, eps, radius, lam).sum()
        else:
            count += verified_by(model, x, y, eps, radius, lam, method=method).sum()
    return count.item() / max(len(split), 1)


@full_precision()
def bound_summary(
    run_dir, eps: float | None = None, lam: float | None = None, n: int = 1000,
    data_dir=None, device: str = "cpu", engine: str = "torch", method: str = "ibp",
) -> dict[str, float]:
    """Returns verified accuracy and mean logit-bound width of a run's model on n test points.

    engine "julia" computes the bounds with the Julia engine from the same weights.
    method "ibp" (interval bounds, as always), "crown" (linear bounds) or "best" (per margin
    the better of both) decides verified_acc; the width is always the interval width.
    """
    if method not in ("ibp", "crown", "best"):
        raise ConfigError(f"method must be 'ibp', 'crown' or 'best'; got {method!r}")
    if engine == "julia" and method != "ibp":
        raise ConfigError(f"method {method!r} needs engine 'torch' (the Julia engine has interval bounds only)")
    from .checkpoint import load_model, radius_from_meta
    from .config import check_eps
    from .data import load_cifar10

    model, meta = load_model(run_dir, device)
    eps = meta["eps"] if eps is None else eps
    check_eps(eps)
    radius = radius_from_meta(meta)
    lam = radius.lam if lam is None else lam
    test = Split(*load_cifar10(data_dir, train=False)).take(n).to(device)
    if engine == "julia":
        verified_acc, width = _julia_bounds(model, test, eps, radius, lam, device)
    elif engine == "torch":
        verified_acc = verified_accuracy(model, test, eps, radius, lam, method=None if method == "ibp" else method)
        width = _mean_width(model, test, eps, radius, lam)
    else:
        raise ConfigError(f"engine must be 'torch' or 'julia'; got {engine!r}")
    return {
        "engine": engine, "method": method, "eps": eps, "lam": lam, "radius": radius.kind, "n": len(test),
        "clean_acc": clean_accuracy(model, test),
        "verified_acc": verified_acc,
        "mean_bound_width": width,
    }


@torch.no_grad()
def _mean_width(model, test: Split, eps, radius, lam) -> float:
    from .bounds import interval_bounds

    width = torch.zeros((), device=test.y.device)
    for x, _ in batches(test, 500):
        width += interval_bounds(model, x, eps, radius, lam).radius.mul(2).mean(1).sum()
    return width.item() / max(len(test), 1)


def _julia_bounds(model, test: Split, eps, radius, lam, device) -> tuple[float, float]:
    from . import julia

    try:
        engine = julia.get_engine(device)
    except julia.JuliaUnavailableError as err:
        raise ConfigError(f"--engine julia is unavailable: {err}") from None
    params = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    verified_n, width = 0.0, 0.0
    for x, y in batches(test, 500):
        xs, ys = x.cpu().numpy(), y.cpu().numpy()
        lower, upper = engine.bounds(params, xs, eps, radius, lam)
        width += float((upper - lower).mean(1).sum())
        verified_n += float(engine.verified(params, xs, ys, eps, radius, lam).sum())
    return verified_n / max(len(test), 1), width / max(len(test), 1)
