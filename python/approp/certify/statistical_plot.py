"""Per-model picture of the three views of each test point's worst margin: bound, estimate, attack."""

from __future__ import annotations

from pathlib import Path

from ..formatting import pyplot


def plot_statistical(stat: dict, path: Path, title: str = "") -> Path:
    """Returns `path` after plotting, per test point, attack, estimate and sampled margins against the sound bound.

    Left: each view's margin against the bound (x), with the diagonal
    y = x below which no sound view may fall. Right: the points sorted by the
    attack's margin, with the bound, attack, extreme-value estimate, lowest
    sampled and clean margins stacked on one axis (symlog, as bounds run far below 0).
    """
    plt = pyplot()
    pts = stat["points"]
    idx = [i for i, b in enumerate(pts["bound"]) if b is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    views = (
        ("attack", "joint attack", "tab:red", "v"),
        ("estimate", "extreme-value estimate", "tab:blue", "o"),
        ("sampled_min", "lowest sampled", "tab:green", "."),
        ("clean", "clean", "tab:gray", "x"),
    )
    for key, label, colour, marker in views:
        xy = [(pts["bound"][i], pts[key][i]) for i in idx if pts[key][i] is not None]
        if xy:
            left.scatter(*zip(*xy), s=12, c=colour, marker=marker, label=label)
    lo = min((pts["bound"][i] for i in idx), default=-1.0)
    left.plot([lo, 0], [lo, 0], "k--", lw=0.8, label="y = bound")
    left.set_xscale("symlog")
    left.set_yscale("symlog")
    left.set_xlabel("bound on the worst margin (best of interval and linear)")
    left.set_ylabel("margin")
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    order = sorted(idx, key=lambda i: pts["attack"][i])
    for key, label, colour, marker in (("bound", "bound (interval, linear)", "black", "_"),) + views:
        ys = [(r, pts[key][i]) for r, i in enumerate(order) if pts[key][i] is not None]
        if ys:
            right.scatter(*zip(*ys), s=10, c=colour, marker=marker, label=label)
    right.axhline(0, color="k", lw=0.6)
    right.set_yscale("symlog")
    right.set_xlabel("test point (sorted by the attack's margin)")
    right.set_ylabel("margin z_y − max z_j")
    right.legend(fontsize=7)
    right.grid(alpha=0.3)
    s = stat["summary"]
    fig.suptitle(
        f"{title} p ≤ {s['p0']:g} certified at 1 − {s['delta']:g} for {100 * s['certified']:.1f} % "
        "of points; bound ≤ worst case ≤ attack, the estimate is not a bound",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
