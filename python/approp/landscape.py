"""Weight-loss landscape along filter-normalised random directions (Li, Xu, Taylor, Studer, Goldstein 2018).

For a model θ and random directions d₁, d₂ (one Gaussian draw per parameter
tensor, from a fixed seed so every model is cut along the same draw), each
filter of d (a slice along dim 0 of a weight with ≥ 2 dims) is rescaled to the
norm of the same filter of θ; biases and BatchNorm's γ, β (all one-dimensional)
get no direction (as in Li et al.), and BatchNorm uses its running statistics
(eval mode), the same in every moved network. Then

    1-D: L(θ + t·d₁),          t ∈ [-span, span]
    2-D: L(θ + a·d₁ + b·d₂),   a, b ∈ [-span, span]

is the test cross-entropy on the first n test points. Because d is
normalised per filter, t is a relative step: t = 0.1 moves every filter by
10 % of its own norm. The flatness number is the mean loss increase at
t = ±step over R directions (d₁ and R − 1 more draws) and the n points:

    Δ[r, i] = (ℓ_i(θ + step·d_r) + ℓ_i(θ − step·d_r))/2 − ℓ_i(θ),   flatness = mean Δ,

smaller is flatter. One direction says little (a model can be flat along one
draw and sharp along the next), so flatness carries a 95 % interval that
resamples directions and points (approp.stats.intervals.crossed_bootstrap), and Δ is kept
so that two models cut along the same draws on the same points can be compared
pairwise (approp.experiments.comparisons.comparisons).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from . import checkpoint as ckpt
from .config import ConfigError, check_positive_int
from .data import Split, batches, load_cifar10
from .precision import full_precision
from .rundir import LANDSCAPE as RESULT
from .rundir import atomic_json, results_key
from .stats.intervals import crossed_bootstrap

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LandscapeConfig:
    """n test points [1000]; points on the 1-D line [21]; grid×grid 2-D points [11];
    span of t, a, b [1.0]; step of the flatness number [0.1]; seed of the directions [0];
    directions the flatness number averages over [10]."""

    n: int = 1000
    points: int = 21
    grid: int = 11
    span: float = 1.0
    step: float = 0.1
    seed: int = 0
    directions: int = 10

    def __post_init__(self) -> None:
        for name in ("n", "points", "grid", "directions"):
            check_positive_int(f"landscape.{name}", getattr(self, name))
        for name in ("span", "step"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"landscape.{name} must be a finite number > 0; got {value!r}")


@dataclass(frozen=True)
class Landscape:
    """One model's landscape: t (points,), loss_1d (points,), axis (grid,), loss_2d (grid, grid),
    flatness with its 95 % interval, and its terms Δ (directions, n points) to 5 significant digits."""

    t: list[float]
    loss_1d: list[float]
    axis: list[float]
    loss_2d: list[list[float]]
    loss_0: float
    flatness: float
    flatness_interval: list[float]
    flatness_terms: list[list[float]]


def random_directions(model: nn.Module, seed: int, count: int = 2) -> list[Params]:
    """Returns `count` filter-normalised directions {name: tensor like the parameter} for the model."""
    gen = torch.Generator().manual_seed(seed)
    params = {k: v.detach() for k, v in model.named_parameters()}
    dirs = []
    for _ in range(count):
        d = {}
        for name, p in params.items():
            raw = torch.randn(p.shape, generator=gen).to(p.device)  # drawn on CPU: same on every device
            if p.dim() < 2:
                d[name] = torch.zeros_like(p)
                continue
            dims = tuple(range(1, p.dim()))
            norm = torch.linalg.vector_norm
            d[name] = raw * norm(p, dim=dims, keepdim=True) / (norm(raw, dim=dims, keepdim=True) + 1e-10)
        dirs.append(d)
    return dirs


@torch.no_grad()
def point_losses(model: nn.Module, params: Params, split: Split, batch_size: int = 500) -> torch.Tensor:
    """Returns the cross-entropy of every point (n,) of the split, with `params` substituted, in float64."""
    parts = [
        F.cross_entropy(functional_call(model, params, (x,)), y, reduction="none").double()
        for x, y in batches(split, batch_size)
    ]
    return torch.cat(parts).cpu() if parts else torch.zeros(0, dtype=torch.float64)


def loss_at(model: nn.Module, params: Params, split: Split, batch_size: int = 500) -> float:
    """Returns the mean cross-entropy of the model with `params` substituted, over the split."""
    return point_losses(model, params, split, batch_size).sum().item() / max(len(split), 1)


def _moved(base: Params, dirs: list[Params], coeffs: list[float]) -> Params:
    return {k: v + sum(c * d[k] for c, d in zip(coeffs, dirs)) for k, v in base.items()}


def _linspace(span: float, count: int) -> list[float]:
    return torch.linspace(-span, span, count, dtype=torch.float64).tolist() if count > 1 else [0.0]


@full_precision()
def compute_landscape(model: nn.Module, split: Split, cfg: LandscapeConfig, on_point=None) -> Landscape:
    """Returns the 1-D and 2-D landscape of `model` on `split`; on_point() is called after each loss."""
    model.eval()
    base = {k: v.detach() for k, v in model.named_parameters()}
    drawn = random_directions(model, cfg.seed, count=cfg.directions + 1)
    d1, d2 = drawn[:2]
    tick = on_point or (lambda: None)

    def at(coeffs: list[float], dirs: list[Params]) -> float:
        value = loss_at(model, _moved(base, dirs, coeffs), split)
        tick()
        return value

    t = _linspace(cfg.span, cfg.points)
    line = [at([v], [d1]) for v in t]
    axis = _linspace(cfg.span, cfg.grid)
    surface = [[at([a, b], [d1, d2]) for a in axis] for b in axis]  # rows: b, columns: a
    at_0 = point_losses(model, base, split)  # (n,)
    loss_0 = at_0.sum().item() / max(len(split), 1)
    tick()

    def increase(d: Params) -> torch.Tensor:  # (n,): Δ along one direction
        up, down = (point_losses(model, _moved(base, [d], [c]), split) for c in (cfg.step, -cfg.step))
        tick(), tick()
        return (up + down) / 2 - at_0

    terms = torch.stack([increase(d) for d in [d1, *drawn[2:]]])  # (R, n)
    lower, upper = crossed_bootstrap(terms, seed=cfg.seed)
    rounded = [[float(f"{v:.5g}") for v in row] for row in terms.tolist()]
    return Landscape(t, line, axis, surface, loss_0, terms.mean().item(), [lower, upper], rounded)


def run_landscape(
    run_dir: Path | str,
    cfg: LandscapeConfig,
    data_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    on_point=None,
) -> Landscape:
    """Returns the landscape of a run's checkpoint; cached in RUN_DIR/landscape.json per checkpoint and settings."""
    run_dir = Path(run_dir)
    meta = ckpt.read_meta(run_dir)
    key = results_key(meta, asdict(cfg))
    path = run_dir / RESULT
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return Landscape(**saved["landscape"])
    model, _ = ckpt.load_model(run_dir, device)
    test = Split(*load_cifar10(data_dir, train=False)).take(cfg.n).to(device)
    result = compute_landscape(model, test, cfg, on_point)
    atomic_json(path, {"key": key, "landscape": asdict(result)}, indent=None)
    return result


def points_per_model(cfg: LandscapeConfig) -> int:
    """Returns how many loss evaluations one model's landscape takes."""
    return cfg.points + cfg.grid * cfg.grid + 1 + 2 * cfg.directions


def plot_landscapes(curves: dict[str, Landscape], path: Path | str, title: str = "") -> Path:
    """Returns the path of one PNG: all 1-D curves on the left, a 2-D contour per model on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(curves)
    fig, axes = plt.subplots(1, k + 1, figsize=(4.2 * (k + 1), 3.6), squeeze=False)
    ax = axes[0, 0]
    for label, ls in curves.items():
        lo, hi = ls.flatness_interval
        ax.plot(ls.t, ls.loss_1d, marker=".", label=f"{label} (flatness {ls.flatness:.3g} [{lo:.3g}, {hi:.3g}])")
    ax.set_xlabel("t (relative step along d₁)")
    ax.set_ylabel("test loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    top = max(max(max(row) for row in ls.loss_2d) for ls in curves.values())
    levels = torch.linspace(min(ls.loss_0 for ls in curves.values()), top, 12).tolist()
    for ax, (label, ls) in zip(axes[0, 1:], curves.items()):
        cs = ax.contour(ls.axis, ls.axis, ls.loss_2d, levels=levels, cmap="viridis")
        ax.clabel(cs, fontsize=6)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("a (d₁)")
        ax.set_ylabel("b (d₂)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def landscape_runs(
    run_dirs: list[Path],
    cfg: LandscapeConfig,
    out: Path,
    labels: list[str] | None = None,
    data_dir=None,
    device: str = "cpu",
    progress: bool = True,
    title: str = "",
) -> dict[str, Landscape]:
    """Returns {label: landscape} after computing every run's landscape and plotting them together to `out`."""
    from .progress import Progress

    labels = labels or [Path(r).name for r in run_dirs]
    curves = {}
    with Progress(enabled=progress) as bar:
        for i, (label, run) in enumerate(zip(labels, run_dirs)):
            task = bar.start_batches(i, points_per_model(cfg), label=f"landscape {label}:")
            curves[label] = run_landscape(run, cfg, data_dir, device, on_point=lambda: bar.advance(task))  # noqa: B023  (used within this iteration)
    plot_landscapes(curves, out, title)
    return curves
