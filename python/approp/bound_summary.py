"""`approp bounds`: verified accuracy and mean logit-bound width of a run's model, from either engine.

The model is a run directory (its ε, λ and radius are the defaults) or a model file as
`approp certify` reads it (approp.certify.sources: a torch.save'd module of any traceable
class, or safetensors with --arch); a file's box is the relative one of `approp certify`,
[θ − λ|θ|, θ + λ|θ|] (radius kind "abs"), with λ and ε given (ε defaults to 0).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from . import julia
from .certify.sources import load_source
from .checkpoint import load_model, radius_from_meta
from .config import ConfigError, RadiusConfig, check_eps
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
    arch: str | None = None,
) -> dict[str, float]:
    """Returns verified accuracy and mean logit-bound width of a run's (or a model file's) model on n test points.

    engine "julia" computes the bounds with the Julia engine from the same weights.
    method "ibp" (interval bounds, as always), "crown" (linear bounds) or "best" (per margin
    the better of both) decides verified_acc; the width is always the interval width.
    arch: the architecture of a .safetensors file (see approp.certify.sources.parse_arch).
    """
    if method not in ("ibp", "crown", "best"):
        raise ConfigError(f"method must be 'ibp', 'crown' or 'best'; got {method!r}")
    if engine == "julia" and method != "ibp":
        raise ConfigError(f"method {method!r} needs engine 'torch' (the Julia engine has interval bounds only)")
    model, eps, radius, lam = _model_and_box(Path(run_dir), eps, lam, device, arch)
    check_eps(eps)
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


def _model_and_box(
    source: Path, eps: float | None, lam: float | None, device: str, arch: str | None
) -> tuple[nn.Module, float, RadiusConfig, float]:
    """Returns (model on device, ε, radius, λ): a run's own where not given; a model file's box is "abs".

    A model file is traced and checked (every node's rules, a final Linear) before any data is read.
    """
    if source.is_dir() or not source.exists():  # a missing path: the run directory's "no checkpoint" error
        model, meta = load_model(source, device)
        radius = radius_from_meta(meta)
        return model, meta["eps"] if eps is None else eps, radius, radius.lam if lam is None else lam
    if lam is None:
        raise ConfigError(f"{source} is a model file, not a run directory: give the box's λ with --lam")
    model, _ = load_source(source, arch)
    return model.to(device), 0.0 if eps is None else eps, RadiusConfig(kind="abs", lam=lam), lam
