"""`approp bounds`: verified accuracy and mean logit-bound width of a run's model, from either engine."""

from __future__ import annotations

from . import julia
from .checkpoint import load_model, radius_from_meta
from .config import ConfigError, check_eps
from .data import Split, load_cifar10
from .metrics import clean_accuracy, mean_bound_width, verified_accuracy
from .precision import full_precision


@full_precision()
def bound_summary(
    run_dir,
    eps: float | None = None,
    lam: float | None = None,
    n: int = 1000,
    data_dir=None,
    device: str = "cpu",
    engine: str = "torch",
    method: str = "ibp",
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
    model, meta = load_model(run_dir, device)
    eps = meta["eps"] if eps is None else eps
    check_eps(eps)
    radius = radius_from_meta(meta)
    lam = radius.lam if lam is None else lam
    test = Split(*load_cifar10(data_dir, train=False)).take(n).to(device)
    if engine == "julia":
        verified_acc, width = julia.bound_stats(model, test, eps, radius, lam, device)
    elif engine == "torch":
        verified_acc = verified_accuracy(model, test, eps, radius, lam, method=None if method == "ibp" else method)
        width = mean_bound_width(model, test, eps, radius, lam)
    else:
        raise ConfigError(f"engine must be 'torch' or 'julia'; got {engine!r}")
    return {
        "engine": engine,
        "method": method,
        "eps": eps,
        "lam": lam,
        "radius": radius.kind,
        "n": len(test),
        "clean_acc": clean_accuracy(model, test),
        "verified_acc": verified_acc,
        "mean_bound_width": width,
    }
