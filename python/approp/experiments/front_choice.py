"""The main job's choice among APP's front points, made on validation only.

    approp validate runs/fronts/cells/eps2over255-app_k095/run --n 5000   # once per finished cell
    approp fronts runs/fronts --preset fronts                              # writes fronts_validation.md/.csv

The thesis judges a network by its clean and PGD accuracy. The main job (configs/main.toml) trains
the APP point that serves that objective best, judged on each cell's held-out training images
(RUN/val.json from `approp validate`), never on test data: the highest mean of validation clean
and PGD accuracy. The page lists every scored point (AWP and reference points for context), and
the chosen point's lead over each other APP point in both measures, APP − APP with Newcombe's 95 %
interval, decided where it excludes 0. A val.json is used only where it scored the run's final
checkpoint (the sha256 that RUN/checkpoint.json records) and where every APP point was scored
on the same images, ε and PGD steps; otherwise the page says what to rescore.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import CheckpointError, read_meta
from ..config import ConfigError
from ..stats import intervals as stats
from ..stats.intervals import Proportion
from .differences import Diff
from .sweep import VAL
from .tables import Value


@dataclass(frozen=True)
class ValScores:
    """One run's validation scores (val.json): shares with Wilson intervals, where and how they were scored."""

    clean: Proportion
    pgd: Proportion
    verified: Proportion
    eps: float
    pgd_steps: int
    epoch: int | None
    stale: str = ""  # why these scores are not the final checkpoint's ('' where they are)

    @property
    def objective(self) -> float:
        """The thesis's objective: the mean of clean and PGD accuracy."""
        return (self.clean.value + self.pgd.value) / 2

    @property
    def setting(self) -> tuple[int, float, int]:
        """What makes two points' scores comparable: (images, ε, PGD steps)."""
        return self.clean.n, round(self.eps, 9), self.pgd_steps


def read_scores(run: Path) -> ValScores | None:
    """Returns RUN/val.json's scores (None where the run has none); ConfigError where it is unreadable.
    Scores of a checkpoint other than the run's current one are marked stale."""
    path = run / VAL
    if not path.is_file():
        return None
    try:
        saved: dict[str, Any] = json.loads(path.read_text())
        shares = {
            key: stats.wilson(int(saved["intervals"][key]["k"]), int(saved["intervals"][key]["n"]))
            for key in ("clean_acc", "pgd_acc", "verified_acc")
        }
        scored = saved.get("checkpoint") or {}
        stale = _stale(run, scored.get("sha256"))
        return ValScores(
            clean=shares["clean_acc"],
            pgd=shares["pgd_acc"],
            verified=shares["verified_acc"],
            eps=float(saved["eps"]),
            pgd_steps=int(saved["pgd_steps"]),
            epoch=scored.get("epoch"),
            stale=stale,
        )
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"{path} is not a val.json as `approp validate` writes it ({e!r}): score the run again"
        ) from e


def _stale(run: Path, sha: str | None) -> str:
    """Returns why scores of checkpoint `sha` are not the run's current checkpoint's ('' where they are)."""
    try:
        current = read_meta(run).get("sha256")
    except CheckpointError as err:
        return str(err)
    return "" if sha is not None and sha == current else "scored an earlier checkpoint: run `approp validate` again"


@dataclass(frozen=True)
class Candidate:
    """A front point with validation scores: its cell, label, train.algo, knob text and scores."""

    cell: str
    label: str
    algo: str
    knob: str
    scores: ValScores


@dataclass(frozen=True)
class Choice:
    """The APP point chosen for the main job (None with `why` where none can be chosen yet); provisional
    while some APP points are not scored (`pending`)."""

    chosen: Candidate | None
    why: str
    leads: list[tuple[Candidate, Diff, Diff]]  # against each other APP point: clean and PGD differences
    pending: tuple[str, ...] = ()

    @property
    def final(self) -> bool:
        return self.chosen is not None and not self.pending

    def as_dict(self) -> dict[str, Any]:
        if self.chosen is None:
            return {"chosen": None, "why": self.why}
        s = self.chosen.scores
        return {
            "chosen": {"cell": self.chosen.cell, "label": self.chosen.label, "objective": s.objective},
            "final": self.final,
            "why": self.why,
            "pending": list(self.pending),
            "leads": [
                {"against": c.label, "clean": d_clean.as_dict(), "pgd": d_pgd.as_dict()}
                for c, d_clean, d_pgd in self.leads
            ],
        }


def choose(candidates: list[Candidate], pending: list[str]) -> Choice:
    """Returns the APP candidate with the highest mean of validation clean and PGD accuracy.

    pending: labels of APP points not finished or not scored yet; the choice is provisional while
    there are any. There is none while scores are stale or APP points were scored on different
    images, ε or PGD steps.
    """
    app = [c for c in candidates if c.algo == "app"]
    stale = [c.label for c in app if c.scores.stale]
    settings = {c.scores.setting for c in app}
    if not app:
        return Choice(None, "no APP point has validation scores yet", [])
    if stale:
        return Choice(None, f"stale validation scores (an earlier checkpoint): {', '.join(stale)}", [])
    if len(settings) > 1:
        shown = "; ".join(f"{n} images, ε={eps:.4g}, PGD-{steps}" for n, eps, steps in sorted(settings))
        return Choice(None, f"APP points scored on different settings ({shown}): score them alike", [])
    best = max(app, key=lambda c: c.scores.objective)
    leads = [
        (c, Diff.of(best.scores.clean, c.scores.clean), Diff.of(best.scores.pgd, c.scores.pgd))
        for c in app
        if c is not best
    ]
    return Choice(best, "highest mean of validation clean and PGD accuracy", leads, tuple(pending))


def rows(candidates: list[Candidate], front: dict[str, str]) -> list[dict[str, Value]]:
    """Returns one table row per scored point: front, point, knob, then the shares and the objective."""
    return [
        {
            "front": front.get(c.algo, "reference"),
            "point": c.label,
            "knob": c.knob or "–",
            "images": c.scores.clean.n,
            "clean": c.scores.clean,
            "PGD": c.scores.pgd,
            "PGD steps": c.scores.pgd_steps,
            "verified (interval)": c.scores.verified,
            "mean of clean and PGD": f"{100 * c.scores.objective:.2f}",
            "checkpoint epoch": "–" if c.scores.epoch is None else c.scores.epoch + 1,
            "note": c.scores.stale or "",
        }
        for c in candidates
    ]


def choice_markdown(choice: Choice) -> str:
    """Returns the paragraph that names the choice, or says why there is none yet, with the leads."""
    if choice.chosen is None:
        return f"**No choice yet:** {choice.why}."
    c = choice.chosen
    head = "Main job" if choice.final else "Main job so far (provisional)"
    lines = [
        f"**{head}: {c.label}** (cell {c.cell}): {choice.why}, "
        f"{100 * c.scores.objective:.2f} % (clean {c.scores.clean}, PGD {c.scores.pgd}).",
        "",
    ]
    if choice.pending:
        lines += [f"Not scored yet: {', '.join(choice.pending)}.", ""]
    for other, d_clean, d_pgd in choice.leads:
        both = [name for name, d in (("clean", d_clean), ("PGD", d_pgd)) if d.above or d.below]
        state = f"decided in {' and '.join(both)}" if both else "undecided in both"
        lines.append(f"- against {other.label}: clean {d_clean}, PGD {d_pgd} ({state})")
    return "\n".join(lines)
