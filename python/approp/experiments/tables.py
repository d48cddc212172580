"""The grid's two tables, our numbers with the thesis's beside them for the same (ε, algorithm) cell.

table1: clean, AutoAttack and verified accuracy (and PGD, and the landscape's flatness);
table2: share of correct points the adversarial parameter attack flips, per λ (at least), and
where certificates exist (approp.certify) the share no certificate protects (at most);
certified_radius and quantisation: λ* per point and the quantisation certificates.
Both are written as Markdown and CSV; accuracies and shares are in %, each with its
95 % Wilson interval, and flatness with its bootstrap interval (Markdown: "v [lo, hi]";
CSV: the value and two more columns "… low" and "… high"). approp.experiments.comparisons says which
differences between algorithms are larger than their uncertainty (see approp.stats.intervals).
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..certify.quantise import result_label
from ..certify.statistical_views import VIEWS
from ..formatting import DASH, markdown_table, pct
from ..stats import intervals as stats
from ..stats.intervals import Estimate, Proportion
from .cell_results import CellResult, Reference, Value, load_reference, read_eval, result_from_eval
from .comparisons import comparisons
from .preset import Preset

# The cell results (cell_results) and the comparisons (comparisons) are importable from here too.
__all__ = [
    "CellResult",
    "Reference",
    "Value",
    "comparisons",
    "csv_rows",
    "load_reference",
    "markdown",
    "quant_rows",
    "radius_rows",
    "read_eval",
    "result_from_eval",
    "table1_rows",
    "table2_rows",
    "views_rows",
    "write_table",
    "write_tables",
]


def _ref(v: float | None) -> str:
    return DASH if v is None else f"{v:g}"


def table1_rows(results: list[CellResult], ref: Reference) -> list[dict[str, Value]]:
    """Returns table 1's rows: our clean/AutoAttack beside the thesis's, then verified, PGD, flatness."""
    rows = []
    for r in results:
        theirs = ref.table1.get((r.eps_label, r.algo_key), {})
        rows.append(
            {
                "ε": r.eps_label,
                "algorithm": r.label,
                "clean": r.share("clean"),
                "clean (thesis)": _ref(theirs.get("clean")),
                "AutoAttack": r.share("autoattack"),
                "AutoAttack (thesis)": _ref(theirs.get("autoattack")),
                "verified": r.share("verified"),
                "verified (best)": r.share("verified_best"),
                "p ≤ p₀ at 1 − δ": r.share("statistical"),
                "PGD": r.share("pgd"),
                "flatness": r.flatness_estimate(),
                # AutoAttack may run on fewer points than the rest: their clean accuracy, to compare with.
                "clean on AA points": r.share("autoattack_clean"),
            }
        )
    return rows


def table2_rows(results: list[CellResult], lams: tuple[float, ...], ref: Reference) -> list[dict[str, Value]]:
    """Returns table 2's rows: for each λ our flipped share beside the thesis's (where it gives one)."""
    rows = []
    for r in results:
        theirs = dict(zip((round(x, 6) for x in ref.lams), ref.table2.get((r.eps_label, r.algo_key), ())))
        row: dict[str, Value] = {"ε": r.eps_label, "algorithm": r.label}
        for lam in lams:
            row[f"λ={lam:g}"] = r.share("flipped", lam)
            if any(c.certify for c in results):
                row[f"λ={lam:g} at most (certified)"] = r.share("certified_flips", lam)
            row[f"λ={lam:g} (thesis)"] = _ref(theirs.get(round(lam, 6)))
        rows.append(row)
    return rows


def radius_rows(results: list[CellResult]) -> list[dict[str, Value]]:
    """Returns one row per cell with λ* per point: its quartiles over the points certified at some λ."""
    from ..certify.run import lam_star_quantiles

    rows = []
    for r in results:
        q = lam_star_quantiles(r.certify) if r.certify else None
        if q is None:
            continue
        rad = r.certify["radius"]
        positive = sum(v > 0 for v in rad["lam_star"])
        rows.append(
            {
                "ε": r.eps_label,
                "algorithm": r.label,
                "λ* > 0": stats.wilson(positive, r.certify["n"]),
                "λ* 25 %": f"{q['q25']:.3g}",
                "λ* median": f"{q['median']:.3g}",
                "λ* 75 %": f"{q['q75']:.3g}",
                "checks per point": str(rad["checks_per_point"]),
                "forward passes per point": f"{rad['forward_passes_per_point']:.0f}",
            }
        )
    return rows


def quant_rows(results: list[CellResult]) -> list[dict[str, Value]]:
    """Returns one row per (cell, quantisation): certified unchanged / correct beside the real quantised model."""
    rows = []
    for r in results:
        for q in (r.certify or {}).get("quant", []):
            n = q["n"]
            rows.append(
                {
                    "ε": r.eps_label,
                    "algorithm": r.label,
                    "weights": result_label(q),
                    "certified unchanged": stats.wilson(q["certified_unchanged"], n),
                    "certified correct": stats.wilson(q["certified_correct"], n),
                    "float accuracy": stats.wilson(q["float_correct"], n),
                    "quantised accuracy": stats.wilson(q["quantised_correct"], n),
                    "prediction kept": stats.wilson(q["kept"], n),
                    "certified but changed": str(q["violations"]),
                }
            )
    return rows


VIEW_COLUMNS = dict(
    zip(
        VIEWS,
        (
            "bound (best)",
            "bound (interval)",
            "bound (linear)",
            "joint attack",
            "extreme-value estimate",
            "lowest sampled",
            "clean",
        ),
    )
)


def views_rows(results: list[CellResult]) -> list[dict[str, Value]]:
    """Returns one row per cell with statistical results: the certified and refuted shares, then the
    median over the test points of each margin view z_y − max_{j≠y} z_j (logits), from the worst-case
    bound up to the clean margin."""
    rows = []
    for r in results:
        if not r.views:
            continue
        row: dict[str, Value] = {
            "ε": r.eps_label,
            "algorithm": r.label,
            "certified p ≤ p₀": r.share("statistical"),
            "refuted p > p₀": r.share("refuted"),
        }
        row.update(
            {col: DASH if r.views.get(name) is None else f"{r.views[name]:.3f}" for name, col in VIEW_COLUMNS.items()}
        )
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Value]]) -> str:
    """Returns rows (same keys) as a Markdown table; shares show as 'v [lo, hi]' in %."""
    if not rows:
        return ""
    cols = list(rows[0])
    return markdown_table(cols, [[row[c] for c in cols] for row in rows])


def _is_share_column(rows: list[dict[str, Value]], col: str) -> bool:
    return any(isinstance(r[col], (Proportion, Estimate)) for r in rows)


def csv_rows(rows: list[dict[str, Value]]) -> tuple[list[str], list[dict[str, str]]]:
    """Returns (columns, rows) for CSV: a share column becomes value, 'low' and 'high' columns in %
    (an estimate's column the same, in its own unit)."""
    if not rows:
        return [], []
    cols: list[str] = []
    for c in rows[0]:
        cols += [c, f"{c} low", f"{c} high"] if _is_share_column(rows, c) else [c]
    out = []
    for row in rows:
        flat: dict[str, str] = {}
        for c, v in row.items():
            if isinstance(v, Proportion):
                flat.update({c: pct(v.value), f"{c} low": pct(v.lower), f"{c} high": pct(v.upper)})
            elif isinstance(v, Estimate):
                flat.update({c: f"{v.value:.6g}", f"{c} low": f"{v.lower:.6g}", f"{c} high": f"{v.upper:.6g}"})
            elif _is_share_column(rows, c):
                flat.update({c: "", f"{c} low": "", f"{c} high": ""})
            else:
                flat[c] = "" if v is None else str(v)
        out.append(flat)
    return cols, out


def write_table(rows: list[dict[str, Value]], stem: Path, caption: str, footer: str = "") -> tuple[Path, Path]:
    """Returns the (md, csv) paths after writing the rows to STEM.md (with a caption, and a footer
    paragraph after the table where given) and STEM.csv."""
    md, cs = stem.with_suffix(".md"), stem.with_suffix(".csv")
    md.write_text(f"{caption}\n\n{markdown(rows)}" + (f"\n{footer}\n" if footer else ""))
    cols, flat = csv_rows(rows)
    with open(cs, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        writer.writerows(flat)
    return md, cs


def _flatness_caption(preset: Preset) -> str:
    """Returns the caption's flatness clause ("" where the preset draws no landscape)."""
    if preset.landscape is None:
        return "; no landscape drawn (flatness not measured)"
    return (
        "; flatness = mean test-loss increase at a relative weight step "
        f"of ±{preset.landscape.step:g} along {preset.landscape.directions} filter-normalised random directions "
        "(lower is flatter; its 95 % interval resamples directions and test points)"
    )


def write_tables(preset: Preset, results: list[CellResult], out: Path) -> dict[str, Path]:
    """Returns the paths of table1/table2 (.md, .csv) written into `out`."""
    ref = load_reference(preset.reference)
    n = next((r.n for r in results if r.n), preset.eval.n)
    aa_n = preset.eval.autoattack_n
    aa_on = f"on the first {aa_n} of them, " if aa_n and aa_n < n else ""
    cap1 = (
        f"Table 1 — accuracy in % with 95 % Wilson intervals on the first {n} CIFAR-10 test images: "
        "clean, AutoAttack (standard, L∞, "
        f"{aa_on}at the cell's ε), verified (interval bounds over the training box and ball; "
        "best: per margin the better of interval and linear bounds), PGD-20; "
        "thesis numbers beside ours" + _flatness_caption(preset) + "."
    )
    if any(r.statistical is not None for r in results):
        cap1 += (
            " p ≤ p₀ at 1 − δ = share of the points certified to be misclassified with probability ≤ p₀ by "
            "a network uniform in the box on an input uniform in the ball, all points jointly at confidence "
            "1 − δ (p₀, δ: the run's eval.json; the Wilson interval is over the choice of test points)."
        )
    cap2 = (
        "Table 2 — adversarial parameter attack in [θ − λ|θ|, θ + λ|θ|]: share (%) of correctly "
        "classified test points it flips, with its 95 % Wilson interval over those points, lower is "
        "better; thesis numbers beside ours where given."
    )
    if any(r.certify for r in results):
        cap2 += (
            " 'at most (certified)': share of the same points that the bounds (best of interval and "
            "linear, with the rounding allowance, ε = 0) cannot certify against every network in the box "
            "— no attack can flip more. The attack's share is at least the true flip rate, the "
            "certified one at most: the true rate lies between them."
        )
    cap3 = (
        "Which differences between algorithms exceed their uncertainty: A − B with its 95 % interval, "
        "in percentage points for accuracies and attack rates (Newcombe's hybrid score interval from the "
        "two Wilson intervals), in loss for flatness (paired over the same random directions and test "
        "points; a bootstrap that resamples both); 'undecided' where the interval contains 0. For the "
        "parameter attack a lower flipped share (of each model's own correct points) and a higher accuracy left "
        "after it (of all points) are better; lower flatness is flatter."
    )
    md1, csv1 = write_table(table1_rows(results, ref), out / "table1", cap1)
    md2, csv2 = write_table(table2_rows(results, preset.eval.param_attack, ref), out / "table2", cap2)
    md3, csv3 = write_table(comparisons(results, preset.eval.param_attack), out / "comparisons", cap3)
    files = {
        "table1.md": md1,
        "table1.csv": csv1,
        "table2.md": md2,
        "table2.csv": csv2,
        "comparisons.md": md3,
        "comparisons.csv": csv3,
    }
    files.update(_certify_tables(results, n, out))
    views = views_rows(results)
    if views:
        cap4 = (
            "Three views of each test point's worst margin over the training box and ball — proved (bound), "
            "statistical (certificates at p₀ and δ of the run's eval.json, shares in % with 95 % Wilson "
            "intervals over the test points; an extreme-value estimate, not a bound) and attacked (the "
            "lowest margin a joint parameter-and-input attack reaches): median over the points of "
            "z_y − max_{j≠y} z_j in logits. The true worst margin lies between bound and joint attack."
        )
        files["views.md"], files["views.csv"] = write_table(views, out / "views", cap4)
    return files


def _certify_tables(results: list[CellResult], n: int, out: Path) -> dict[str, Path]:
    """Returns the paths of certified_radius and quantisation (.md, .csv), written where certificates exist."""
    files: dict[str, Path] = {}
    rad, quant = radius_rows(results), quant_rows(results)
    if rad:
        cap = (
            f"Certified radius λ* per test point (first {n} test images): the largest λ of a geometric grid at "
            "which the bounds certify that no network in [θ − λ|θ|, θ + λ|θ|] changes the point's correct "
            "prediction, found by bisection; quartiles over the points with λ* > 0 (their share in % with "
            "its 95 % interval). Cost: plain forward passes over the same points the bisection took, per point."
        )
        files["certified_radius.md"], files["certified_radius.csv"] = write_table(rad, out / "certified_radius", cap)
    if quant:
        cap = (
            f"Quantisation certificates (first {n} test images, weight-only symmetric round-to-nearest, "
            "per output channel or per tensor; biases and activations float): shares in % with 95 % Wilson "
            "intervals. Certified unchanged: no rounding of the weights to the grid can change the float "
            "model's prediction; certified correct: nor a correct one. Grids: int8 is the deployment grid (integers "
            "in [−127, 127], s = max|w|/127: TensorRT, ONNX Runtime, TFLite), int8:torch PyTorch's observer grid "
            "([−128, 127], s = max|w|/127.5); ':tensor' one step per tensor, else per output channel. Quantised "
            "accuracy and prediction kept: the model really quantised by PyTorch (observer step with the grid's "
            "range, fake_quantize). 'certified but changed' "
            "counts certified points the real quantised model changed: it must be 0."
        )
        files["quantisation.md"], files["quantisation.csv"] = write_table(quant, out / "quantisation", cap)
    return files
