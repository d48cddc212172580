"""Run reports: report.md with the final numbers, a per-epoch table and learning curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..data import describe_copy
from ..formatting import markdown_table, pyplot
from ..rundir import CURVES, REPORT


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def history_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Returns a Markdown table of `columns` over `rows` (floats with four decimals, missing values '–')."""
    return markdown_table(columns, [[_fmt(r.get(c, "–")) for c in columns] for r in rows])


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Writes clean and verified accuracy (validation split, else test) per epoch to a PNG."""
    plt = pyplot()
    epochs = [r["epoch"] + 1 for r in history]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(epochs, [r["clean_acc"] for r in history], marker="o", label="clean")
    ax.plot(epochs, [r["verified_acc"] for r in history], marker="s", label="verified")
    ax.set_xlabel("epoch")
    split = "validation" if history[0].get("eval_split") == "val" else "test"
    ax.set_ylabel(f"{split} accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_train_report(cfg: RunConfig, run_dir: Path, history: list[dict[str, Any]]) -> Path:
    """Writes run_dir/report.md (and curves.png); returns the report's path."""
    t, r = cfg.train, cfg.radius
    lines = [
        f"# Training run: {t.algo}",
        "",
        f"- model: {cfg.model.arch} (width {cfg.model.width}, init {cfg.model.init})",
        f"- eps = {t.eps:.6g}, radius = {r.kind} (lam = {r.lam:g}), kappa = {t.kappa:g} "
        f"({t.kappa_schedule} schedule), {t.warmup_epochs} clean warm-up epochs, then a {t.ramp} "
        f"ramp over {t.ramp_epochs} epochs"
        + (f"; warm-up regularisers λ_reg = {t.reg_weight:g}, tol = {t.reg_tol:g}" if t.reg_weight > 0 else ""),
        f"- optimiser: {cfg.optim.name}, lr {cfg.optim.lr:g}, {cfg.optim.schedule} schedule"
        + (f", gradient norm clipped to {cfg.optim.grad_clip:g}" if cfg.optim.grad_clip is not None else "")
        + "; "
        f"{t.epochs} epochs, batch {cfg.data.batch_size}, seed {t.seed}, device {t.device}",
        f"- data: {describe_copy(cfg.data.data_dir)}",
        f"- training images: {cfg.data.subset or 'all'} (less {cfg.data.val_split} held out); "
        + (
            f"per-epoch accuracies on the {cfg.data.val_split} validation images"
            if cfg.data.val_split
            else f"per-epoch accuracies on test images: {cfg.data.test_subset or 'all'}"
        ),
        "",
    ]
    if history:
        last = history[-1]
        total = sum(h["train_seconds"] for h in history)
        lines += [
            "## Result",
            "",
            f"clean accuracy **{last['clean_acc']:.4f}**, verified accuracy **{last['verified_acc']:.4f}** "
            f"(at eps {t.eps:.6g} over the {r.kind} box with lam {r.lam:g}), "
            f"after {last['epoch'] + 1} epochs and {total:.0f} s of training.",
            "",
            "## Per epoch",
            "",
            history_table(history, [c for c in history[0] if c != "ramp"]),
        ]
        plot_curves(history, run_dir / CURVES)
        lines += ["", f"![test accuracy per epoch]({CURVES})", ""]
    path = run_dir / REPORT
    path.write_text("\n".join(lines))
    return path
