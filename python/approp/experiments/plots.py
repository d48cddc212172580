"""Plots of the grid: accuracy vs ε per algorithm, and the parameter attack vs λ per algorithm."""

from __future__ import annotations

from pathlib import Path

from .preset import parse_eps
from .tables import CellResult

ACCURACY = "accuracy_vs_eps.png"
PARAM_ATTACK = "param_attack_vs_lambda.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _by_algo(results: list[CellResult]) -> dict[str, list[CellResult]]:
    out: dict[str, list[CellResult]] = {}
    for r in results:
        out.setdefault(r.algo_label, []).append(r)
    return out


def plot_accuracy(results: list[CellResult], path: Path) -> Path:
    """Returns `path` after plotting clean, AutoAttack and verified accuracy (%) against ε, one colour per algorithm."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), sharex=True)
    metrics = (("clean", "clean accuracy"), ("autoattack", "AutoAttack accuracy"), ("verified", "verified accuracy"))
    for ax, (attr, title) in zip(axes, metrics):
        for label, rows in _by_algo(results).items():
            pts = sorted((parse_eps(r.eps_label), getattr(r, attr)) for r in rows if getattr(r, attr) is not None)
            if pts:
                ax.plot([255 * e for e, _ in pts], [100 * v for _, v in pts], marker="o", label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("ε × 255")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("%")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_param_attack(results: list[CellResult], path: Path) -> Path:
    """Returns `path` after plotting the flipped share (%) against λ, one panel per ε, one line per algorithm."""
    plt = _pyplot()
    labels = list(dict.fromkeys(r.eps_label for r in results))
    fig, axes = plt.subplots(1, len(labels), figsize=(3.6 * len(labels), 3.2), sharey=True, squeeze=False)
    for ax, eps in zip(axes[0], labels):
        for r in (r for r in results if r.eps_label == eps and r.flipped):
            lams = sorted(r.flipped)
            ax.plot(lams, [100 * r.flipped[lam] for lam in lams], marker="o", label=r.algo_label)
        ax.set_title(f"ε = {eps}", fontsize=10)
        ax.set_xlabel("λ")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("flipped by the parameter attack (%)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
