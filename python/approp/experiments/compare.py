"""`approp compare`: the models of several finished presets side by side (before and after a recipe).

    from approp.experiments.compare import compare
    files = compare({"cpu": "docs/results/cpu", "cpu_recipe": "docs/results/cpu_recipe"}, out="before_after")

Each preset's cells are read from its results folder (nothing is trained or evaluated). A cell
that two presets share (the same fingerprint: the same training and evaluation) appears once.
Every pair of models is compared on clean, AutoAttack, verified and PGD accuracy and on the
parameter attack's flipped share (approp.experiments.comparisons.comparisons: A − B with Newcombe's
95 % interval and a verdict), and one figure shows where each model stands: clean against
AutoAttack accuracy, and clean against verified accuracy, every point with its intervals. The
presets must have been evaluated on the same test points, or the comparison is refused.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..config import ConfigError
from ..formatting import pyplot
from .plots import _save
from .preset import Preset, load_preset
from .runner import cell_dir
from .tables import CellResult, Value, comparisons, read_eval, result_from_eval, write_table

TRADEOFF = "tradeoff.png"


def collect_presets(results: dict[str, Path | str]) -> list[CellResult]:
    """Returns the evaluated cells of every preset ({preset name or file: results folder}), each
    labelled "ALGORITHM [PRESET]", a cell shared by fingerprint only once (labelled by the first
    preset that has it); ConfigError where the presets' test points differ or nothing was evaluated."""
    if len(results) < 2:
        raise ConfigError("compare needs at least two distinct presets (PRESET=RESULTS_DIR)")
    presets: list[tuple[Preset, Path]] = [(load_preset(name), Path(folder)) for name, folder in results.items()]
    for preset, folder in presets:
        if not folder.is_dir():
            raise ConfigError(f"no results folder {folder} for preset {preset.name!r}")
    first = presets[0][0].eval
    for preset, _ in presets[1:]:
        if (preset.eval.n, preset.eval.autoattack_n) != (first.n, first.autoattack_n):
            raise ConfigError(
                f"preset {preset.name!r} was evaluated on other test points (n = {preset.eval.n}, "
                f"AutoAttack on {preset.eval.autoattack_n}) than {presets[0][0].name!r} "
                f"(n = {first.n}, {first.autoattack_n}): the comparison would not be paired"
            )
    seen: set[str] = set()
    out: list[CellResult] = []
    for preset, folder in presets:
        for cell in preset.cells():
            key = cell.fingerprint(preset.eval)
            evaluated = read_eval(cell_dir(folder, cell) / "run")
            if key in seen or evaluated is None:
                continue
            seen.add(key)
            result = result_from_eval(cell, evaluated)
            out.append(replace(result, algo_label=f"{result.algo_label} [{preset.name}]"))
    if not out:
        raise ConfigError("none of the presets' cells has been evaluated in the folders given")
    return out


def model_rows(results: list[CellResult], lams: tuple[float, ...]) -> list[dict[str, Value]]:
    """Returns one row per model: clean, AutoAttack, verified (interval; best of interval and linear),
    PGD and the parameter attack's flipped share at each λ, all with their 95 % intervals."""
    rows = []
    for r in results:
        row: dict[str, Value] = {
            "ε": r.eps_label,
            "model": r.label,
            "clean": r.share("clean"),
            "AutoAttack": r.share("autoattack"),
            "verified": r.share("verified"),
            "verified (best)": r.share("verified_best"),
            "PGD": r.share("pgd"),
        }
        row.update({f"param. attack λ={lam:g}": r.share("flipped", lam) for lam in lams})
        rows.append(row)
    return rows


def plot_tradeoff(results: list[CellResult], path: Path) -> Path:
    """Returns `path` after plotting clean (x) against AutoAttack and against verified (best of
    interval and linear bounds where measured) accuracy in %, one point per model with its 95 %
    intervals on both axes."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    panels = (("autoattack", "AutoAttack accuracy (%)"), ("verified_best", "verified accuracy, best bound (%)"))
    for ax, (name, ylabel) in zip(axes, panels):
        for r in results:
            x = r.share("clean")
            y = r.share(name) or (r.share("verified") if name == "verified_best" else None)
            if x is None or y is None:
                continue
            ax.errorbar(
                [100 * x.value],
                [100 * y.value],
                xerr=[[100 * (x.value - x.lower)], [100 * (x.upper - x.value)]],
                yerr=[[100 * (y.value - y.lower)], [100 * (y.upper - y.value)]],
                marker="o",
                capsize=3,
                label=r.label,
            )
        ax.set_xlabel("clean accuracy (%)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    _save(plt, fig, axes[0], panels[0][1], path)
    return path


def compare(results: dict[str, Path | str], out: Path | str, lams: tuple[float, ...] | None = None) -> dict[str, Path]:
    """Returns the files written into `out`: models (every model's numbers with intervals),
    comparisons (every pair, decided or not) as .md and .csv, and the trade-off figure.

    lams: parameter-attack λ compared (default: every λ the models were attacked at)."""
    cells = collect_presets(results)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lams = lams if lams is not None else tuple(sorted({lam for c in cells for lam in c.flipped}))
    files: dict[str, Path] = {}
    caption = (
        "Every model of the presets, on the same test points: accuracy in % with 95 % Wilson "
        "intervals (AutoAttack on its subset of the points; verified at the model's training box "
        "and ball), and the share of correct points the parameter attack flips at each λ (lower "
        "is better). A cell two presets share appears once, named by the first."
    )
    files["models.md"], files["models.csv"] = write_table(model_rows(cells, tuple(lams)), out / "models", caption)
    caption = (
        "A − B in percentage points with Newcombe's 95 % interval; decided where the interval "
        "excludes 0 (the parameter attack: a lower flipped share of the model's own correct points, a higher "
        "accuracy left of all points, is better)."
    )
    files["comparisons.md"], files["comparisons.csv"] = write_table(
        comparisons(cells, tuple(lams)), out / "comparisons", caption
    )
    files[TRADEOFF] = plot_tradeoff(cells, out / TRADEOFF)
    return files
