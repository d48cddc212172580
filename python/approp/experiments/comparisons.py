"""Which differences between algorithms exceed their uncertainty: A − B per (ε, measure, pair of
algorithms) with its 95 % interval, and the verdict (see approp.stats.intervals)."""

from __future__ import annotations

import torch

from ..formatting import format_interval
from ..stats import intervals as stats
from .cell_results import CellResult, Value
from .differences import Diff

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

    Measures: clean, AutoAttack, verified and PGD accuracy, and at each λ the parameter attack's
    flipped share (of each model's own correct points; lower is better) and the accuracy it leaves
    (of all points), in percentage points with Newcombe's interval — for paired data where both
    evaluations kept per-point outcomes (approp.experiments.differences); and
    flatness (lower is flatter), paired over the same directions and test points, with the
    crossed bootstrap's interval.
    """
    measures = [(col, name, None, True) for col, name, _ in COMPARED]
    measures += [(f"param. attack λ={lam:g}", "flipped", lam, False) for lam in lams]
    measures += [(f"param. attack accuracy after λ={lam:g}", "after", lam, True) for lam in lams]
    rows: list[dict[str, Value]] = []
    for eps in dict.fromkeys(r.eps_label for r in results):
        group = [r for r in results if r.eps_label == eps]
        pairs = [(a, b) for i, a in enumerate(group) for b in group[i + 1 :]]
        for col, name, lam, higher_better in measures:
            for a, b in pairs:
                diff = Diff.between(a, b, name, lam)
                if diff is not None:
                    text = format_interval(diff.value, diff.lower, diff.upper, signed=True) + " pp"
                    text += " (paired)" if diff.paired else ""
                    rows.append(
                        _comparison(eps, col, a, b, diff.value, diff.lower, diff.upper, text, higher_better, "better")
                    )
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
