"""The grid's two tables, our numbers with the thesis's beside them for the same (ε, algorithm) cell.

table1: clean, AutoAttack and verified accuracy (and PGD, and the landscape's flatness);
table2: share of correct points the adversarial parameter attack flips, per λ (at least), and
where certificates exist (approp.certify) the share no certificate protects (at most);
certified_radius and quantisation: λ* per point and the quantisation certificates.
Both are written as Markdown and CSV; accuracies and shares are in %, each with its
95 % Wilson interval, and flatness with its bootstrap interval (Markdown: "v [lo, hi]";
CSV: the value and two more columns "… low" and "… high"). `comparisons` says which
differences between algorithms are larger than their uncertainty (see approp.stats.intervals).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib
import torch

from ..certify.quantise import result_label
from ..certify.statistical_views import VIEWS, view_medians
from ..checkpoint import CheckpointError, read_meta
from ..formatting import DASH, format_interval, markdown_table, pct
from ..landscape import Landscape
from ..rundir import CERTIFY_RESULTS, EVAL_RESULTS, EVAL_STATE
from ..stats import intervals as stats
from ..stats.intervals import Estimate, Proportion
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
    autoattack_n: int | None = None  # the points AutoAttack ran on (None: all n)
    correct_before: dict[float, float] = field(default_factory=dict)  # accuracy before the parameter attack, by λ
    statistical: float | None = None  # share certified p ≤ p0 at 1 − δ, jointly (approp.certify.statistical)
    verified_best: float | None = None  # verified by the better of interval and linear bounds per margin
    refuted: float | None = None  # share shown p > p0 at 1 − δ, jointly (approp.certify.statistical)
    views: dict[str, float | None] = field(
        default_factory=dict
    )  # median margin per view (certify.statistical_views.VIEWS)
    in_progress: bool = False  # its evaluation has not finished: only some measures are filled
    flatness_interval: tuple[float, float] | None = None  # 95 % over directions and points
    flatness_terms: list[list[float]] | None = None  # Δ (directions, points): approp.landscape
    certify: dict[str, Any] | None = None  # approp.certify.run results (eval.json or the run's certify.json)

    @property
    def label(self) -> str:
        """Returns the algorithm's label for the tables, marked while its evaluation is in progress."""
        return self.algo_label + (" (evaluation in progress)" if self.in_progress else "")

    def flatness_estimate(self) -> Estimate | None:
        """Returns flatness with its 95 % interval (None where no landscape was drawn)."""
        if self.flatness is None or self.flatness_interval is None:
            return None
        return Estimate(self.flatness, *self.flatness_interval)

    def share(self, name: str, lam: float | None = None) -> Proportion | None:
        """Returns a measured share with its 95 % interval (None where not measured).

        name: clean, pgd, verified, verified_best, statistical, refuted (on n points), autoattack,
        autoattack_clean (on the AutoAttack points) or flipped (at λ, on the points correct
        before the attack).
        """
        if name == "certified_flips":
            row = next((c for c in (self.certify or {}).get("curve", []) if round(c["lam"], 6) == round(lam, 6)), None)
            # Same denominator as the attack: the points correct before any perturbation.
            return None if row is None else stats.wilson(row["flips_at_most"], row["of"])
        if name == "flipped":
            value = self.flipped.get(round(lam, 6))
            base = self.correct_before.get(round(lam, 6), self.clean)
            count = None if base is None or self.n is None else int(round(base * self.n))
        else:
            value = getattr(self, name)
            count = self.autoattack_n if name.startswith("autoattack") and self.autoattack_n else self.n
        if value is None or count is None:
            return None
        return stats.from_share(value, count)


def result_from_eval(cell: Cell, results: dict[str, Any] | None, landscape: Landscape | None = None) -> CellResult:
    """Returns the CellResult of a cell from its eval.json contents (None: not evaluated yet) and its
    landscape (None: not drawn)."""
    r = results or {}
    flatness = None if landscape is None else landscape.flatness
    aa = r.get("autoattack", {})
    stat = r.get("statistical")
    summary = stat["summary"] if stat else {}
    return CellResult(
        cell.eps_label,
        cell.algo.key,
        cell.algo.label,
        r.get("clean_acc"),
        r.get("pgd_acc"),
        aa.get("robust_acc"),
        r.get("verified_acc"),
        {round(row["lam"], 6): row["flipped"] for row in r.get("param_attack", [])},
        flatness,
        r.get("n"),
        aa.get("cascade", {}).get("clean"),
        aa.get("n"),
        {round(row["lam"], 6): row["acc_before"] for row in r.get("param_attack", [])},
        statistical=summary.get("certified"),
        verified_best=r.get("verified_acc_best"),
        refuted=summary.get("refuted"),
        views=view_medians(stat) if stat else {},
        in_progress=bool(r.get("in_progress")),
        flatness_interval=None if landscape is None else tuple(landscape.flatness_interval),
        flatness_terms=None if landscape is None else landscape.flatness_terms,
        certify=r.get("certify"),
    )


def read_eval(run_dir: Path) -> dict[str, Any] | None:
    """Returns RUN_DIR/eval.json's contents; for an evaluation still running (or interrupted), the
    stages it has finished, marked "in_progress"; None if no stage has finished."""
    path = Path(run_dir) / EVAL_RESULTS
    results = json.loads(path.read_text()) if path.is_file() else _finished_stages(Path(run_dir))
    extra = Path(run_dir) / CERTIFY_RESULTS  # written by `approp certify` after the evaluation
    if results is not None and "certify" not in results and extra.is_file():
        results["certify"] = json.loads(extra.read_text())
    return results


def _finished_stages(run_dir: Path) -> dict[str, Any] | None:
    """Returns the results of the finished stages in RUN_DIR/eval_state.json, if it belongs to the
    run's current checkpoint (a state left by an older checkpoint is ignored, as Evaluator does)."""
    path = run_dir / EVAL_STATE
    try:
        state = json.loads(path.read_text())
        current = read_meta(run_dir).get("sha256")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, CheckpointError):
        return None
    key, stages = state.get("key") or {}, state.get("stages") or {}
    if not stages or key.get("sha256") != current:
        return None
    out: dict[str, Any] = {"n": key.get("n"), "in_progress": sorted(stages)}
    for result in stages.values():
        out.update({k: v for k, v in result.items() if k != "seconds"})
    return out


Value = str | Proportion | Estimate | None  # a table cell: text, a share or a mean with its interval, or none


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


def write_table(rows: list[dict[str, Value]], stem: Path, caption: str) -> tuple[Path, Path]:
    """Returns the (md, csv) paths after writing the rows to STEM.md (with a caption) and STEM.csv."""
    md, cs = stem.with_suffix(".md"), stem.with_suffix(".csv")
    md.write_text(f"{caption}\n\n{markdown(rows)}")
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
        "parameter attack lower is better; lower flatness is flatter."
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


# (table column, CellResult.share name, higher is better) of every measure the comparison covers.
COMPARED = (
    ("clean", "clean", True),
    ("AutoAttack", "autoattack", True),
    ("verified", "verified", True),
    ("PGD", "pgd", True),
)


def comparisons(results: list[CellResult], lams: tuple[float, ...]) -> list[dict[str, Value]]:
    """Returns one row per (ε, measure, pair of algorithms): the difference with its 95 % interval
    and whether it is decided, i.e. larger than its uncertainty.

    Measures: clean, AutoAttack, verified and PGD accuracy, and the parameter attack's flipped
    share at each λ (where lower is better), in percentage points with Newcombe's interval; and
    flatness (lower is flatter), paired over the same directions and test points, with the
    crossed bootstrap's interval.
    """
    measures = [(col, name, None, True) for col, name, _ in COMPARED]
    measures += [(f"param. attack λ={lam:g}", "flipped", lam, False) for lam in lams]
    rows: list[dict[str, Value]] = []
    for eps in dict.fromkeys(r.eps_label for r in results):
        group = [r for r in results if r.eps_label == eps]
        pairs = [(a, b) for i, a in enumerate(group) for b in group[i + 1 :]]
        for col, name, lam, higher_better in measures:
            for a, b in pairs:
                pa, pb = a.share(name, lam), b.share(name, lam)
                if pa is not None and pb is not None:
                    d, lo, hi = stats.difference(pa, pb)
                    text = format_interval(d, lo, hi, signed=True) + " pp"
                    rows.append(_comparison(eps, col, a, b, d, lo, hi, text, higher_better, "better"))
        for a, b in pairs:
            paired = _flatness_difference(a, b)
            if paired is not None:
                d, lo, hi = paired
                text = format_interval(d, lo, hi, scale=1.0, digits=4, signed=True)
                rows.append(_comparison(eps, "flatness", a, b, d, lo, hi, text, False, "flatter"))
    return rows


def _comparison(
    eps: str,
    measure: str,
    a: CellResult,
    b: CellResult,
    d: float,
    lo: float,
    hi: float,
    text: str,
    higher_better: bool,
    word: str,
) -> dict[str, Value]:
    """Returns one comparisons row; decided where [lo, hi] excludes 0."""
    if lo > 0 or hi < 0:
        verdict = f"{(a if (d > 0) == higher_better else b).algo_label} {word}"
    else:
        verdict = "undecided"
    return {"ε": eps, "measure": measure, "A": a.algo_label, "B": b.algo_label, "A − B": text, "verdict": verdict}


def _flatness_difference(a: CellResult, b: CellResult) -> tuple[float, float, float] | None:
    """Returns (A − B, lower, upper) of flatness, paired over directions and points; None where a
    landscape is missing or the two were not cut along the same number of directions and points."""
    if a.flatness_terms is None or b.flatness_terms is None:
        return None
    ta, tb = torch.tensor(a.flatness_terms, dtype=torch.float64), torch.tensor(b.flatness_terms, dtype=torch.float64)
    if ta.shape != tb.shape or ta.numel() == 0:
        return None
    diff = ta - tb  # (directions, points)
    lower, upper = stats.crossed_bootstrap(diff)
    return diff.mean().item(), lower, upper
