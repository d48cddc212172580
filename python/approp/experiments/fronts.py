"""`approp fronts`: the trade-off fronts of a preset's results folder, and the verdicts they give.

    from approp.experiments.fronts import fronts
    view = fronts("docs/results/fronts", out="docs/results/fronts", preset="fronts")

Cells are grouped into fronts by their training config's `train.algo`: APP's front and AWP's
front (each spanned by its own knob, κ or γ); standard and any other algorithm are reference
points. Nothing is trained or evaluated: each cell's run/eval.json is read as `approp
evaluate` wrote it, and a cell without one (not started, training, or evaluating) is listed as
pending. Written into `out`:

- fronts_table.md/.csv: per point clean, AutoAttack, PGD-20, verified (interval and best), the
  parameter attack's flipped share and the accuracy left after it at each λ, the share with a
  certified λ* > 0 and its median, and the int8 certificates, every share with its 95 % Wilson
  interval;
- fronts_pairs.md/.csv: every APP × AWP pair, clean and AutoAttack APP − AWP with Newcombe's interval
  (paired where both evaluations kept per-point outcomes, approp.experiments.differences);
- fronts_clean_vs_autoattack.png, fronts_clean_vs_verified.png: both fronts with intervals on both axes;
- fronts_verdicts.md/.json: each claim (approp.experiments.front_verdicts) decided or undecided,
  with its numbers, and the pending cells;
- fronts_validation.md/.csv: every point's validation scores (RUN/val.json from `approp
  validate`) and the APP point they choose for the main job (approp.experiments.front_choice).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..certify.run import lam_star_quantiles
from ..config import ConfigError, RunConfig, load_run_config
from ..formatting import pyplot
from ..rundir import read_history
from ..stats import intervals as stats
from ..stats.intervals import Proportion
from .front_choice import Candidate, Choice, ValScores, choice_markdown, choose, read_scores
from .front_choice import rows as validation_rows
from .front_verdicts import Verdict, equal_clean, match_or_beat, pair_rows, pairs
from .plots import _save
from .preset import AlgoSpec, Cell, load_preset, parse_eps
from .runner import cell_dir, is_trained
from .tables import CellResult, Value, read_eval, result_from_eval, write_table

FRONTS = {"app": "APP", "awp": "AWP"}  # train.algo → the front it belongs to; any other algo is a reference point
PLOTS = {
    "fronts_clean_vs_autoattack.png": ("autoattack", "AutoAttack accuracy (%)"),
    "fronts_clean_vs_verified.png": ("verified", "verified accuracy (%), best of interval and linear bounds"),
}


@dataclass(frozen=True)
class FrontPoint:
    """One cell of the folder: its name, label, train.algo, knob text, result (None: pending, with why)
    and validation scores (None: not scored)."""

    name: str
    label: str
    algo: str
    knob: str
    result: CellResult | None
    pending: str = ""
    val: ValScores | None = None


@dataclass(frozen=True)
class FrontView:
    """The fronts of one results folder: the points, the verdicts, the main job's choice and the files written."""

    points: list[FrontPoint]
    verdicts: list[Verdict]
    choice: Choice
    files: dict[str, Path]

    @property
    def pending(self) -> list[FrontPoint]:
        return [p for p in self.points if p.result is None]


def knob(cfg: RunConfig) -> str:
    """Returns the text of a config's trade-off knob: 'κ=0.95' or 'κ none' (APP), 'γ=0.01' (AWP), else ''."""
    if cfg.train.algo == "app":
        return "κ none" if cfg.train.kappa_schedule == "none" else f"κ={cfg.train.kappa:g}"
    if cfg.train.algo == "awp":
        return f"γ={cfg.train.awp_gamma:g}"
    return ""


def default_label(cfg: RunConfig) -> str:
    """Returns a point's label from its config alone, e.g. 'APP(tanh) κ=0.95', 'AWP γ=0.01', 'standard'."""
    algo = cfg.train.algo
    if algo == "app":
        return f"APP({cfg.radius.kind}) {knob(cfg)}"
    return {"awp": f"AWP {knob(cfg)}", "pgd": "PGD-AT"}.get(algo, algo)


def _folder_cells(folder: Path) -> list[Cell]:
    """Returns a Cell for every OUT/cells/NAME that records its config (cells/NAME/config.toml as the
    runner writes it, else cells/NAME/run/config.toml), labelled from the config."""
    cells = []
    for sub in sorted(p for p in (folder / "cells").glob("*") if p.is_dir()):
        path = next((p for p in (sub / "config.toml", sub / "run" / "config.toml") if p.is_file()), None)
        if path is None:
            continue
        cfg = load_run_config(path)
        eps_slug, _, key = sub.name.partition("-")
        label = (
            eps_slug.removeprefix("eps").replace("over", "/") if eps_slug.startswith("eps") else f"{cfg.train.eps:g}"
        )
        try:
            eps = parse_eps(label)
        except ConfigError:
            label, eps = f"{cfg.train.eps:g}", cfg.train.eps
        cells.append(Cell(sub.name, label, eps, AlgoSpec(key or sub.name, default_label(cfg), ()), cfg))
    return cells


def training_state(run: Path, cfg: RunConfig) -> str:
    """Returns 'training: epoch E of N, validation clean X [lo, hi] on n images' from the run's last metrics line
    ('training' before its first epoch ends)."""
    history = read_history(run)
    if not history:
        return "training"
    last = history[-1]
    split = "validation" if last.get("eval_split") == "val" else "test"
    n = cfg.data.val_split if split == "validation" else (cfg.data.test_subset or 10_000)
    acc = stats.wilson(round(last["clean_acc"] * n), n)
    return f"training: epoch {last['epoch'] + 1} of {cfg.train.epochs}, {split} clean {acc} on {n:,} images"


def collect_points(folder: Path | str, preset: str | Path | None = None) -> list[FrontPoint]:
    """Returns every cell of the results folder as a FrontPoint (the preset's cells in its order where a
    preset is given, so cells not started yet are listed too); ConfigError if the folder is missing or holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"no results folder {folder}")
    cells = load_preset(preset).cells() if preset is not None else _folder_cells(folder)
    if not cells:
        raise ConfigError(f"{folder} holds no cells (cells/NAME/config.toml); give --preset to list a preset's cells")
    points = []
    for cell in cells:
        run = cell_dir(folder, cell) / "run"
        result = result_from_eval(cell, read_eval(run)) if (run / "eval.json").is_file() else None
        why = (
            ""
            if result
            else (
                "evaluating"
                if is_trained(folder, cell)
                else training_state(run, cell.config)
                if run.is_dir()
                else "not started"
            )
        )
        points.append(
            FrontPoint(
                cell.name, cell.algo.label, cell.config.train.algo, knob(cell.config), result, why, read_scores(run)
            )
        )
    return points


def _quant8(r: CellResult) -> dict | None:
    """Returns the int8 (per channel where both exist) quantisation certificate of a cell, if any."""
    found = [q for q in (r.certify or {}).get("quant", []) if q.get("bits") == 8]
    return next((q for q in found if q.get("per_channel")), found[0] if found else None)


def table_rows(points: list[FrontPoint], lams: tuple[float, ...]) -> list[dict[str, Value]]:
    """Returns one row per finished point: front, label, knob, then every measure with its 95 % interval."""
    rows = []
    for p in points:
        r = p.result
        if r is None:
            continue
        q, rad = _quant8(r), lam_star_quantiles(r.certify) if r.certify else None
        row: dict[str, Value] = {
            "front": FRONTS.get(p.algo, "reference"),
            "point": p.label,
            "knob": p.knob or "–",
            "clean": r.share("clean"),
            "AutoAttack": r.share("autoattack"),
            "PGD-20": r.share("pgd"),
            "verified (interval)": r.share("verified"),
            "verified (best)": r.share("verified_best"),
        }
        row.update({f"param. attack flipped λ={lam:g}": r.share("flipped", lam) for lam in lams})
        row.update({f"param. attack accuracy after λ={lam:g}": r.share("after", lam) for lam in lams})
        lam_star = r.certify.get("radius", {}).get("lam_star") if r.certify else None
        row["certified λ* > 0"] = stats.wilson(sum(v > 0 for v in lam_star), len(lam_star)) if lam_star else None
        row["certified λ* median"] = f"{rad['median']:.3g}" if rad else None
        row["int8 certified unchanged"] = stats.wilson(q["certified_unchanged"], q["n"]) if q else None
        row["int8 certified correct"] = stats.wilson(q["certified_correct"], q["n"]) if q else None
        rows.append(row)
    return rows


def _bars(ax, shares: list[tuple[Proportion, Proportion]], style: str, label: str) -> None:
    """Draws (x, y) shares in % with their 95 % intervals on both axes."""
    xs, ys = [100 * x.value for x, _ in shares], [100 * y.value for _, y in shares]
    xerr = [[100 * (x.value - x.lower) for x, _ in shares], [100 * (x.upper - x.value) for x, _ in shares]]
    yerr = [[100 * (y.value - y.lower) for _, y in shares], [100 * (y.upper - y.value) for _, y in shares]]
    ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt=style, capsize=3, label=label, markersize=6 if "o" in style else 11)


def _measure(r: CellResult, measure: str) -> Proportion | None:
    """Returns a point's share of `measure`; verified: the best bound's where measured, else the interval's."""
    if measure == "verified":
        return r.share("verified_best") or r.share("verified")
    return r.share(measure)


def plot_front(points: list[FrontPoint], measure: str, ylabel: str, path: Path) -> Path:
    """Returns `path` after plotting clean (x) against `measure` (autoattack | verified: best bound where
    measured) in %, each front a line through its points in order of clean accuracy, reference points alone."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    groups: dict[str, list[FrontPoint]] = {}
    for p in points:
        if p.result is not None:
            groups.setdefault(FRONTS.get(p.algo, p.label), []).append(p)
    for name, members in groups.items():
        knobs = [p.knob for p in members]
        shares = []
        for p in members:
            x, y = p.result.share("clean"), _measure(p.result, measure)
            if x is not None and y is not None:
                # The knob names a point within its front, unless two points share it (e.g. two radius kinds).
                shares.append((x, y, p.knob if knobs.count(p.knob) == 1 else p.label))
        shares.sort(key=lambda t: t[0].value)
        if not shares:
            continue
        _bars(ax, [(x, y) for x, y, _ in shares], "-o" if name in FRONTS.values() else "*", name)
        for i, (x, y, text) in enumerate(shares):  # above and below in turn: neighbours on a front sit close
            if text:
                ax.annotate(
                    text,
                    (100 * x.value, 100 * y.value),
                    textcoords="offset points",
                    xytext=(4, 4 if i % 2 == 0 else -11),
                    fontsize=7,
                )
    if not ax.has_data():  # every cell pending: an empty figure that says so
        ax.plot([], [], " ", label="no finished point yet")
    ax.set_xlabel("clean accuracy (%)")
    ax.grid(alpha=0.3)
    _save(plt, fig, ax, ylabel, path)
    return path


def verdicts_markdown(view_points: list[FrontPoint], verdicts: list[Verdict]) -> str:
    """Returns the verdicts page: each claim with 'decided' or 'undecided' and its numbers, then the pending cells."""
    intro = (
        "APP − AWP in percentage points with Newcombe's 95 % interval: for paired data, marked (paired), where "
        "both evaluations kept their per-point outcomes on the same test points; else from the two Wilson "
        "intervals, which is conservative for models scored on the same points. Decided where it excludes 0. "
        "Table: [fronts_table.md](fronts_table.md); every pair: [fronts_pairs.md](fronts_pairs.md); the main "
        "job's choice on validation: [fronts_validation.md](fronts_validation.md)."
    )
    lines = ["# Verdicts on the fronts", "", intro, ""]
    lines += [f"- **{v.claim}** — {v.text}" for v in verdicts]
    pending = [p for p in view_points if p.result is None]
    lines += ["", "## Pending (no eval.json yet)", ""]
    lines += [f"- {p.name} ({p.label}): {p.pending}" for p in pending] or ["- none"]
    lines += ["", *(f"![{name}]({name})" for name in PLOTS)]
    return "\n".join(lines) + "\n"


def scored(points: list[FrontPoint]) -> list[Candidate]:
    """Returns the points with validation scores as candidates for the main job."""
    return [Candidate(p.name, p.label, p.algo, p.knob, p.val) for p in points if p.val is not None]


def main_choice(points: list[FrontPoint]) -> Choice:
    """Returns the APP point the validation scores choose for the main job (front_choice.choose)."""
    return choose(scored(points), [p.label for p in points if p.algo == "app" and p.val is None])


def write_validation(points: list[FrontPoint], choice: Choice, stem: Path) -> tuple[Path, Path]:
    """Returns the (md, csv) paths after writing every scored point's validation table and the choice."""
    cap = (
        "Validation scores of the front points (RUN/val.json, written by `approp validate RUN --n N`): the "
        "first N held-out training images, never test data, in % with 95 % Wilson intervals; PGD and verified "
        "at the point's training ε (verified: interval bounds over its training box). The main job trains the "
        "APP point with the highest mean of clean and PGD accuracy, the thesis's two measures; its lead over "
        "each other APP point is APP − APP with Newcombe's 95 % interval, decided where it excludes 0."
    )
    found = scored(points)
    footer = choice_markdown(choice) if found else f"No point has validation scores yet.\n\n{choice_markdown(choice)}"
    return write_table(validation_rows(found, FRONTS), stem, cap, footer)


def fronts(
    folder: Path | str,
    out: Path | str | None = None,
    preset: str | Path | None = None,
    lams: tuple[float, ...] | None = None,
) -> FrontView:
    """Returns the fronts view of a results folder after writing its table, pairs, plots and verdicts
    into `out` (default: the folder itself).

    preset: list the preset's cells (labels and cells not started yet) instead of the folder's;
    lams: parameter-attack λ shown and judged (default: every λ a finished point was attacked at).
    """
    points = collect_points(folder, preset)
    out = Path(out) if out is not None else Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    done = [p.result for p in points if p.result is not None]
    lams = lams if lams is not None else tuple(sorted({lam for r in done for lam in r.flipped}))
    app = [p.result for p in points if p.result is not None and p.algo == "app"]
    awp = [p.result for p in points if p.result is not None and p.algo == "awp"]
    found = pairs(app, awp)
    verdicts = [match_or_beat(found), *equal_clean(app, awp, lams)]
    choice = main_choice(points)
    files: dict[str, Path] = {}
    cap = (
        "Trade-off fronts: per point, accuracy in % with 95 % Wilson intervals on the test points (AutoAttack on "
        "its subset), verified at the point's training box and ball (interval bounds; best: per margin the better "
        "of interval and linear bounds), the share of correct points the parameter attack flips at each λ (lower "
        "is better) and the accuracy left after it (of all points), the share of points with a certified λ* > 0 "
        "and the median λ* over them, and the int8 "
        "weight-quantisation certificates (of all points). Pending cells are listed in fronts_verdicts.md."
    )
    files["fronts_table.md"], files["fronts_table.csv"] = write_table(
        table_rows(points, lams), out / "fronts_table", cap
    )
    cap = (
        "Every APP point against every AWP point: APP − AWP with Newcombe's 95 % interval (for paired data where "
        "marked (paired), else from the two Wilson intervals); 'beats' where both intervals lie above 0, 'worse' "
        "where either lies below 0, else 'matches'."
    )
    files["fronts_pairs.md"], files["fronts_pairs.csv"] = write_table(pair_rows(found), out / "fronts_pairs", cap)
    for name, (measure, ylabel) in PLOTS.items():
        files[name] = plot_front(points, measure, ylabel, out / name)
    files["fronts_validation.md"], files["fronts_validation.csv"] = write_validation(
        points, choice, out / "fronts_validation"
    )
    files["fronts_verdicts.md"] = out / "fronts_verdicts.md"
    files["fronts_verdicts.md"].write_text(verdicts_markdown(points, verdicts))
    files["fronts_verdicts.json"] = out / "fronts_verdicts.json"
    files["fronts_verdicts.json"].write_text(
        json.dumps(
            {
                "verdicts": [v.as_dict() for v in verdicts],
                "main_choice": choice.as_dict(),
                "pending": [
                    {"cell": p.name, "label": p.label, "status": p.pending} for p in points if p.result is None
                ],
            },
            indent=2,
            ensure_ascii=False,
        )
    )
    return FrontView(points, verdicts, choice, files)
