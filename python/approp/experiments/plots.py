"""Plots of the grid: accuracy vs ε per algorithm, and the parameter attack vs λ per algorithm.

Every point carries its 95 % Wilson interval as an error bar (see approp.stats.intervals).
"""

from __future__ import annotations

from pathlib import Path

from ..formatting import pyplot
from ..stats.intervals import Proportion
from .preset import parse_eps
from .tables import CellResult

ACCURACY = "accuracy_vs_eps.png"
PARAM_ATTACK = "param_attack_vs_lambda.png"
CERTIFIED = "certified_vs_lambda.png"


def _by_algo(results: list[CellResult]) -> dict[str, list[CellResult]]:
    out: dict[str, list[CellResult]] = {}
    for r in results:
        out.setdefault(r.algo_label, []).append(r)
    return out


def _errorbar(ax, xs: list[float], shares: list[Proportion], label: str) -> None:
    """Draws shares (in %) at xs with their 95 % intervals as error bars."""
    ys = [100 * p.value for p in shares]
    below = [100 * (p.value - p.lower) for p in shares]
    above = [100 * (p.upper - p.value) for p in shares]
    ax.errorbar(xs, ys, yerr=[below, above], marker="o", capsize=3, label=label)


def plot_accuracy(results: list[CellResult], path: Path) -> Path:
    """Returns `path` after plotting clean, AutoAttack and verified accuracy (%) with 95 % intervals
    against ε, one colour per algorithm."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), sharex=True)
    metrics = (("clean", "clean accuracy"), ("autoattack", "AutoAttack accuracy"), ("verified", "verified accuracy"))
    for ax, (attr, title) in zip(axes, metrics):
        for label, rows in _by_algo(results).items():
            pts = sorted((parse_eps(r.eps_label), r.share(attr)) for r in rows if r.share(attr) is not None)
            if pts:
                _errorbar(ax, [255 * e for e, _ in pts], [p for _, p in pts], label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("ε × 255")
        ax.grid(alpha=0.3)
    _save(plt, fig, axes[0], "%", path)
    return path


def plot_param_attack(results: list[CellResult], path: Path) -> Path:
    """Returns `path` after plotting the flipped share (%) with 95 % intervals against λ, one panel per ε,
    one line per algorithm."""
    plt = pyplot()
    labels = list(dict.fromkeys(r.eps_label for r in results))
    fig, axes = plt.subplots(1, len(labels), figsize=(3.6 * len(labels), 3.2), sharey=True, squeeze=False)
    for ax, eps in zip(axes[0], labels):
        for r in (r for r in results if r.eps_label == eps and r.flipped):
            lams = [lam for lam in sorted(r.flipped) if r.share("flipped", lam) is not None]
            _errorbar(ax, lams, [r.share("flipped", lam) for lam in lams], r.algo_label)
        ax.set_title(f"ε = {eps}", fontsize=10)
        ax.set_xlabel("λ")
        ax.grid(alpha=0.3)
    _save(plt, fig, axes[0, 0], "flipped by the parameter attack (%)", path)
    return path


def plot_certified(results: list[CellResult], path: Path) -> Path | None:
    """Returns `path` after plotting, per algorithm, the attack's flipped share (at least) and the certified
    bound (at most) against λ with 95 % intervals, the band between them shaded; None without certificates."""
    cells = [r for r in results if r.certify and r.flipped]
    if not cells:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(cells), figsize=(3.4 * len(cells), 3.2), sharey=True, squeeze=False)
    for ax, r in zip(axes[0], cells):
        lams = [
            lam
            for lam in sorted(r.flipped)
            if r.share("flipped", lam) is not None and r.share("certified_flips", lam) is not None
        ]
        low = [r.share("flipped", lam) for lam in lams]
        high = [r.share("certified_flips", lam) for lam in lams]
        _errorbar(ax, lams, high, "at most (certified)")
        _errorbar(ax, lams, low, "at least (attack)")
        ax.fill_between(lams, [100 * p.value for p in low], [100 * p.value for p in high], alpha=0.15)
        ax.set_title(f"{r.algo_label}, ε = {r.eps_label}", fontsize=10)
        ax.set_xlabel("λ")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    _save(plt, fig, axes[0, 0], "correct points flipped (%)", path)
    return path


def _save(plt, fig, first_ax, ylabel: str, path: Path) -> None:
    """Labels the first panel's y axis and legend, then writes the figure to `path` and closes it."""
    first_ax.set_ylabel(ylabel)
    first_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
