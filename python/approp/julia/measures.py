"""Measures over a test split computed by the Julia engine from a PyTorch model's weights."""

from __future__ import annotations

from torch import nn

from ..config import ConfigError, RadiusConfig
from ..data import Split, batches
from .convert import UnsupportedByJuliaError, check_cnn4, check_radius


def bound_stats(
    model: nn.Module, test: Split, eps: float, radius: RadiusConfig, lam: float, device: str,
) -> tuple[float, float]:
    """Returns (verified share, mean logit-bound width) of the model on the split, from the Julia engine's
    interval bounds over the box of `radius` at λ = lam and the ball of radius eps.

    Raises ConfigError where the Julia engine is unavailable (the message says what is missing) or
    cannot hold the model (CNN4 without BatchNorm only) or the radius kind.
    """
    from .. import julia  # the package, late: its get_engine starts Julia on first use

    params = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    try:  # before Julia starts: what APProp cannot hold (BatchNorm, other nets, quant) by name
        check_cnn4(params)
        check_radius(radius)
    except UnsupportedByJuliaError as err:
        raise ConfigError(str(err)) from None
    try:
        engine = julia.get_engine(device)
    except julia.JuliaUnavailableError as err:
        raise ConfigError(f"--engine julia is unavailable: {err}") from None
    verified_n, width = 0.0, 0.0
    for x, y in batches(test, 500):
        xs, ys = x.cpu().numpy(), y.cpu().numpy()
        lower, upper = engine.bounds(params, xs, eps, radius, lam)  # (B, K) each
        width += float((upper - lower).mean(1).sum())
        verified_n += float(engine.verified(params, xs, ys, eps, radius, lam).sum())
    return verified_n / max(len(test), 1), width / max(len(test), 1)
