"""The grid's two tables, our numbers with the thesis's beside them for the same (ε, algorithm) cell.

table1: clean, AutoAttack and verified accuracy (and PGD, and the landscape's flatness);
table2: share of correct points the adversarial parameter attack flips, per λ.
Both are written as Markdown and CSV; accuracies and shares are in %.
"""

from __future__ import annotations

import csv
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .preset import Cell, Preset


@dataclass(frozen=True)
class Reference:
    """The thesis's numbers: table1[(ε label, algo key)] = {clean, autoattack}; table2 flips by λ."""

    table1: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    lams: tuple[float, ...] = ()
    table2: dict[tuple[str, str], tuple[float, ...]] = field(default_factory=dict)


def load_reference(path: Path | None) -> Reference:
    """Returns the reference numbers in a TOML file (empty Reference where there is none)."""
    if path is None or not Path(path).is_file():
        return Reference()
    raw = tomllib.loads(Path(path).read_text())
    t1 = {(eps, algo): dict(v) for eps, row in raw.get("table1", {}).items() for algo, v in row.items()}
    t2raw = dict(raw.get("table2", {}))
    lams = tuple(t2raw.pop("lams", ()))
    t2 = {(eps, algo): tuple(v) for eps, row in t2raw.items() for algo, v in row.items()}
    return Reference(t1, lams, t2)


@dataclass(frozen=True)
class CellResult:
    """Our measured numbers for one cell (fractions in [0, 1]; None where not measured)."""

    eps_label: str
    algo_key: str
    algo_label: str
    clean: float | None = None
    pgd: float | None = None
    autoattack: float | None = None
    verified: float | None = None
    flipped: dict[float, float] = field(default_factory=dict)
    flatness: float | None = None
    n: int | None = None
    autoattack_clean: float | None = None  # clean accuracy on the points AutoAttack ran on


def result_from_eval(cell: Cell, results: dict[str, Any] | None, flatness: float | None = None) -> CellResult:
    """Returns the CellResult of a cell from its eval.json contents (None: not evaluated yet)."""
    r = results or {}
    aa = r.get("autoattack", {})
    return CellResult(
        cell.eps_label, cell.algo.key, cell.algo.label, r.get("clean_acc"), r.get("pgd_acc"),
        aa.get("robust_acc"), r.get("verified_acc"),
        {round(row["lam"], 6): row["flipped"] for row in r.get("param_attack", [])}, flatness, r.get("n"),
        aa.get("cascade", {}).get("clean"),
    )


def read_eval(run_dir: Path) -> dict[str, Any] | None:
    """Returns RUN_DIR/eval.json's contents, or None if the run has not been evaluated."""
    path = Path(run_dir) / "eval.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def _ref(v: float | None) -> str:
    return "–" if v is None else f"{v:g}"


def table1_rows(results: list[CellResult], ref: Reference) -> list[dict[str, str]]:
    """Returns table 1's rows: our clean/AutoAttack beside the thesis's, then verified, PGD, flatness."""
    rows = []
    for r in results:
        theirs = ref.table1.get((r.eps_label, r.algo_key), {})
        rows.append({
            "ε": r.eps_label, "algorithm": r.algo_label,
            "clean": _pct(r.clean), "clean (thesis)": _ref(theirs.get("clean")),
            "AutoAttack": _pct(r.autoattack), "AutoAttack (thesis)": _ref(theirs.get("autoattack")),
            "verified": _pct(r.verified), "PGD": _pct(r.pgd),
            "flatness": "–" if r.flatness is None else f"{r.flatness:.4f}",
            # AutoAttack may run on fewer points than the rest: their clean accuracy, to compare with.
            "clean on AA points": _pct(r.autoattack_clean),
        })
    return rows


def table2_rows(results: list[CellResult], lams: tuple[float, ...], ref: Reference) -> list[dict[str, str]]:
    """Returns table 2's rows: for each λ our flipped share beside the thesis's (where it gives one)."""
    rows = []
    for r in results:
        theirs = dict(zip((round(x, 6) for x in ref.lams), ref.table2.get((r.eps_label, r.algo_key), ())))
        row = {"ε": r.eps_label, "algorithm": r.algo_label}
        for lam in lams:
            row[f"λ={lam:g}"] = _pct(r.flipped.get(round(lam, 6)))
            row[f"λ={lam:g} (thesis)"] = _ref(theirs.get(round(lam, 6)))
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, str]]) -> str:
    """Returns rows (same keys) as a Markdown table."""
    if not rows:
        return ""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(row[c] for c in cols) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict[str, str]], stem: Path, caption: str) -> tuple[Path, Path]:
    """Returns the (md, csv) paths after writing the rows to STEM.md (with a caption) and STEM.csv."""
    md, cs = stem.with_suffix(".md"), stem.with_suffix(".csv")
    md.write_text(f"{caption}\n\n{markdown(rows)}")
    with open(cs, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    return md, cs


def write_tables(preset: Preset, results: list[CellResult], out: Path) -> dict[str, Path]:
    """Returns the paths of table1/table2 (.md, .csv) written into `out`."""
    ref = load_reference(preset.reference)
    n = next((r.n for r in results if r.n), preset.eval.n)
    aa_n = preset.eval.autoattack_n
    aa_on = f"on the first {aa_n} of them, " if aa_n and aa_n < n else ""
    cap1 = (f"Table 1 — accuracy in % on the first {n} CIFAR-10 test images: clean, AutoAttack (standard, L∞, "
            f"{aa_on}at the cell's ε), verified (interval bounds over the training box and ball), PGD-20; "
            "thesis numbers beside ours; flatness = mean test-loss increase at a relative weight step "
            f"of ±{preset.landscape.step:g} along a filter-normalised direction (lower is flatter).")
    cap2 = ("Table 2 — adversarial parameter attack in [θ − λ|θ|, θ + λ|θ|]: share (%) of correctly "
            "classified test points it flips, lower is better; thesis numbers beside ours where given.")
    md1, csv1 = write_table(table1_rows(results, ref), out / "table1", cap1)
    md2, csv2 = write_table(table2_rows(results, preset.eval.param_attack, ref), out / "table2", cap2)
    return {"table1.md": md1, "table1.csv": csv1, "table2.md": md2, "table2.csv": csv2}
