"""`approp reproduce`: run the grid, then the landscapes, tables, plots and report of a preset.

    from approp.experiments import reproduce
    summary = reproduce("quick", out="runs/quick", data_dir="data")

Training and evaluation of each cell run as subprocesses (see runner); the
landscapes (one figure per ε comparing its algorithms, cached per run) and
everything after run in this process once the selected cells are done.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import describe_copy
from ..landscape import Landscape, landscape_runs
from .plots import ACCURACY, CERTIFIED, PARAM_ATTACK, plot_accuracy, plot_certified, plot_param_attack
from .preset import Cell, Preset, load_preset
from .runner import CellOutcome, cell_dir, is_trained, run_grid
from .tables import CellResult, read_eval, result_from_eval, write_tables


@dataclass(frozen=True)
class ReproduceSummary:
    """What a reproduce call did: each selected cell's outcome, and the files it wrote."""

    outcomes: list[CellOutcome]
    files: dict[str, Path]


def _landscapes(
    preset: Preset, cells: list[Cell], out: Path, progress: bool
) -> tuple[dict[str, Landscape], dict[str, Path]]:
    """Returns ({cell name: landscape}, {figure name: path}) over the trained cells of every ε.

    A landscape needs only the final checkpoint, so a cell whose evaluation still runs is in it.
    A preset with `landscape = false` draws none.
    """
    found, figures = {}, {}
    if preset.landscape is None:
        return found, figures
    for label in dict.fromkeys(c.eps_label for c in cells):
        group = [c for c in cells if c.eps_label == label and is_trained(out, c)]
        if not group:
            continue
        name = f"landscape_eps{label.replace('/', 'over')}.png"
        curves = landscape_runs(
            [cell_dir(out, c) / "run" for c in group],
            preset.landscape,
            out / name,
            labels=[c.algo.label for c in group],
            data_dir=group[0].config.data.data_dir,
            device=group[0].config.train.device,
            progress=progress,
            title=f"weight-loss landscape, ε = {label}",
        )
        found.update({c.name: curves[c.algo.label] for c in group})
        figures[name] = out / name
    return found, figures


def collect(preset: Preset, cells: list[Cell], out: Path, landscapes: dict[str, Landscape]) -> list[CellResult]:
    """Returns the measured results of the cells (empty entries for cells not evaluated yet)."""
    return [result_from_eval(c, read_eval(cell_dir(out, c) / "run"), landscapes.get(c.name)) for c in cells]


def write_report(preset: Preset, out: Path, results: list[CellResult], files: dict[str, Path], data: str) -> Path:
    """Returns OUT/report.md after writing it: tables, embedded plots, links to every cell's report.

    data: the line naming the CIFAR-10 copy the cells used (approp.data.describe_copy).
    """
    t1 = (out / "table1.md").read_text()
    t2 = (out / "table2.md").read_text()
    t3 = (out / "comparisons.md").read_text()
    lines = [
        f"# Reproduction: preset `{preset.name}`",
        "",
        preset.description,
        "",
        f"Data: {data}.",
        "",
        "Tables as CSV: [table1.csv](table1.csv), [table2.csv](table2.csv), [comparisons.csv](comparisons.csv).",
        "",
        t1,
        "",
        t2,
        "",
        "## Which differences are decided",
        "",
        t3,
        "",
    ]
    for name, title in (
        ("certified_radius.md", "Certified radius per point"),
        ("quantisation.md", "Quantisation certificates"),
    ):
        if name in files:
            lines += [f"## {title}", "", files[name].read_text(), ""]
    if "views.md" in files:
        lines += ["## Proved, statistical, attacked", "", files["views.md"].read_text(), ""]
    lines += ["## Plots", "", f"![accuracy vs ε]({ACCURACY})", "", f"![parameter attack vs λ]({PARAM_ATTACK})", ""]
    if CERTIFIED in files:
        lines += [f"![attacked and certified flips vs λ]({CERTIFIED})", ""]
    lines += [f"![{name}]({name})\n" for name in files if name.startswith("landscape")]
    lines += ["## Cells", ""]
    lines += [
        f"- [{r.eps_label} {r.algo_label}](cells/eps{r.eps_label.replace('/', 'over')}-{r.algo_key}/run/report.md)"
        for r in results
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def reproduce(
    preset_name: str | Path,
    out: Path | str,
    jobs: int = 1,
    only: str | None = None,
    data_dir: str | None = None,
    device: str | None = None,
    progress: bool = True,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> ReproduceSummary:
    """Returns the summary after running (or resuming) the preset's grid and writing tables, plots and report.

    overrides: {section: {key: value}} over every cell's config (Preset.cells); it changes the
    cells' fingerprints, so cells finished with other settings run again.
    """
    from rich.console import Console

    console = Console(stderr=True, quiet=not progress)
    preset = load_preset(preset_name)
    every = preset.cells(data_dir, device, overrides=overrides)  # invalid overrides fail here
    chosen = preset.cells(data_dir, device, only, overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    console.print(f"preset {preset.name}: {len(chosen)} of {len(every)} cells → {out}")

    def report(o: CellOutcome) -> None:
        console.print(f"  {o.name}: {o.status}" + (f" in {o.seconds:.0f} s" if o.status == "ran" else ""))

    outcomes = run_grid(preset, chosen, out, jobs, on_done=report)
    landscapes, figures = _landscapes(preset, every, out, progress)
    results = collect(preset, every, out, landscapes)
    files = write_tables(preset, results, out)
    files[ACCURACY] = plot_accuracy(results, out / ACCURACY)
    files[PARAM_ATTACK] = plot_param_attack(results, out / PARAM_ATTACK)
    certified = plot_certified(results, out / CERTIFIED)
    if certified is not None:
        files[CERTIFIED] = certified
    files.update(figures)
    files["report.md"] = write_report(preset, out, results, files, describe_copy(every[0].config.data.data_dir))
    console.print(files["table1.md"].read_text())
    return ReproduceSummary(outcomes, files)
