"""One cell's numbers as the tables read them: the thesis's reference numbers, and our results
from a run's eval.json (or the stages of an evaluation still running) and its landscape."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib
import torch

from ..certify.statistical_views import view_medians
from ..checkpoint import CheckpointError, read_meta
from ..evaluate import after_key, merge_stage
from ..landscape import Landscape
from ..outcomes import OutcomesError, decode
from ..rundir import CERTIFY_RESULTS, EVAL_RESULTS, EVAL_STATE
from ..stats import intervals as stats
from ..stats.intervals import Estimate, Proportion
from .preset import Cell


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
    after: dict[float, float] = field(default_factory=dict)  # accuracy after the parameter attack, by λ
    outcomes: dict[str, Any] = field(default_factory=dict)  # per-point outcomes (eval.json, approp.outcomes)

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
        autoattack_clean (on the AutoAttack points), flipped (at λ, on the points correct
        before the attack) or after (accuracy after the parameter attack at λ, on n points).
        """
        if name == "certified_flips":
            row = next((c for c in (self.certify or {}).get("curve", []) if round(c["lam"], 6) == round(lam, 6)), None)
            # Same denominator as the attack: the points correct before any perturbation.
            return None if row is None else stats.wilson(row["flips_at_most"], row["of"])
        if name == "flipped":
            value = self.flipped.get(round(lam, 6))
            base = self.correct_before.get(round(lam, 6), self.clean)
            count = None if base is None or self.n is None else int(round(base * self.n))
        elif name == "after":
            value, count = self.after.get(round(lam, 6)), self.n
        else:
            value = getattr(self, name)
            count = self.autoattack_n if name.startswith("autoattack") and self.autoattack_n else self.n
        if value is None or count is None:
            return None
        return stats.from_share(value, count)

    def outcome(self, name: str, lam: float | None = None) -> torch.Tensor | None:
        """Returns the per-point outcomes behind share(name, lam), a bool mask (n,), where the evaluation
        kept them (clean, pgd, autoattack, verified, verified_best, after at λ), else None.

        OutcomesError where they are malformed or count other points than the share says.
        """
        key = after_key(lam) if name == "after" and lam is not None else name
        raw = self.outcomes.get(key) if name in OUTCOME_SHARES else None
        if raw is None:
            return None
        mask = decode(raw)
        share = self.share(name, lam)
        if share is None or (share.k, share.n) != (int(mask.sum()), len(mask)):
            raise OutcomesError(
                f"{self.algo_label}: the outcomes of {key} count {int(mask.sum())} of {len(mask)} points, "
                f"its accuracy {share} says otherwise"
            )
        return mask


OUTCOME_SHARES = ("clean", "pgd", "autoattack", "verified", "verified_best", "after")  # shares with outcomes


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
        after={round(row["lam"], 6): row["acc_after"] for row in r.get("param_attack", []) if "acc_after" in row},
        outcomes=dict(r.get("outcomes", {})),
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
        merge_stage(out, {k: v for k, v in result.items() if k != "seconds"})
    return out


Value = str | Proportion | Estimate | None  # a table cell: text, a share or a mean with its interval, or none
