"""The verdicts of the fronts view: APP's front against AWP's, each claim decided or undecided.

Every difference is APP − AWP in percentage points with its 95 % interval (approp.experiments.differences,
as `approp compare` uses): Newcombe's interval for paired data where both evaluations kept their
per-point outcomes on the same test points, else his hybrid score interval from the two Wilson
intervals, which treats the two samples as independent and is conservative for models scored on
the same points. A difference is decided where its interval excludes 0.

Claims:
- match or beat: does any APP point match or beat an AWP point in both clean and AutoAttack
  accuracy? An APP point matches an AWP point where neither difference's interval lies
  entirely below 0, and beats it where both lie entirely above 0. Decided "yes" where some
  pair beats, decided "no" where every pair has a difference entirely below 0, undecided where
  the best pair only matches.
- at equal clean accuracy: for the APP–AWP pair nearest in clean accuracy, which has more
  AutoAttack accuracy, verified accuracy (best of interval and linear bounds where measured),
  and, under the parameter attack at each λ, fewer of its correct points flipped and more
  accuracy left? Both, because the flipped share counts only a network's own correct points:
  a network with fewer of them can flip a smaller share and still keep fewer correct.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .differences import Diff
from .tables import CellResult, Value


@dataclass(frozen=True)
class Verdict:
    """One claim: whether it is decided, the sentence that states it, and its numbers (JSON-ready)."""

    claim: str
    decided: bool
    text: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"claim": self.claim, "decided": self.decided, "text": self.text, "numbers": self.numbers}


@dataclass(frozen=True)
class Pair:
    """An APP point against an AWP point: clean and AutoAttack differences (APP − AWP)."""

    app: CellResult
    awp: CellResult
    clean: Diff
    autoattack: Diff

    @property
    def status(self) -> str:
        """Returns 'beats', 'matches' or 'worse' (some difference entirely below 0)."""
        if self.clean.above and self.autoattack.above:
            return "beats"
        if self.clean.below or self.autoattack.below:
            return "worse"
        return "matches"

    def numbers(self) -> dict[str, Any]:
        return {
            "APP": self.app.algo_label,
            "AWP": self.awp.algo_label,
            "status": self.status,
            "clean": self.clean.as_dict(),
            "autoattack": self.autoattack.as_dict(),
        }


def pairs(app: list[CellResult], awp: list[CellResult]) -> list[Pair]:
    """Returns every APP × AWP pair with both clean and AutoAttack accuracy measured."""
    out = []
    for a in app:
        for b in awp:
            clean, robust = Diff.between(a, b, "clean"), Diff.between(a, b, "autoattack")
            if clean is not None and robust is not None:
                out.append(Pair(a, b, clean, robust))
    return out


def pair_rows(found: list[Pair]) -> list[dict[str, Value]]:
    """Returns one table row per APP × AWP pair: both differences and the pair's status."""
    return [
        {
            "APP": p.app.algo_label,
            "AWP": p.awp.algo_label,
            "clean APP − AWP": str(p.clean),
            "AutoAttack APP − AWP": str(p.autoattack),
            "APP against AWP": p.status,
        }
        for p in found
    ]


CLAIM_MATCH = "some APP point matches or beats an AWP point in both clean and AutoAttack accuracy"


def match_or_beat(found: list[Pair]) -> Verdict:
    """Returns the match-or-beat verdict, stated with the pair that comes closest to beating."""
    if not found:
        return Verdict(
            CLAIM_MATCH, False, "undecided: no APP and AWP point both have clean and AutoAttack accuracy yet"
        )
    rank = {"beats": 2, "matches": 1, "worse": 0}
    best = max(found, key=lambda p: (rank[p.status], min(p.clean.lower, p.autoattack.lower)))
    nums = f"{best.app.algo_label} − {best.awp.algo_label}: clean {best.clean}, AutoAttack {best.autoattack}"
    counts = {s: sum(p.status == s for p in found) for s in rank}
    tally = f" ({counts['beats']} of {len(found)} pairs beat, {counts['matches']} match, {counts['worse']} worse)"
    if best.status == "beats":
        text = f"decided, yes: {best.app.algo_label} beats {best.awp.algo_label} in both ({nums})" + tally
    elif best.status == "matches":
        text = (
            f"undecided: {best.app.algo_label} matches {best.awp.algo_label} — neither difference is decided "
            f"against APP, but not both for it ({nums})" + tally
        )
    else:
        text = (
            "decided, no: every APP point is below every AWP point in clean or AutoAttack accuracy; closest "
            f"pair {nums}" + tally
        )
    return Verdict(
        CLAIM_MATCH,
        best.status != "matches",
        text,
        {"best": best.numbers(), "pairs": [p.numbers() for p in found], "counts": counts},
    )


def nearest_clean(app: list[CellResult], awp: list[CellResult]) -> tuple[CellResult, CellResult, Diff] | None:
    """Returns (APP point, AWP point, clean APP − AWP) of the pair nearest in clean accuracy (None without one)."""
    found = [(a, b, d) for a in app for b in awp if (d := Diff.between(a, b, "clean")) is not None]
    return min(found, key=lambda t: abs(t[2].value), default=None)


def _verified(a: CellResult, b: CellResult) -> str:
    """Returns the verified share both points measured: best of interval and linear bounds, else interval."""
    return "verified_best" if a.share("verified_best") and b.share("verified_best") else "verified"


def equal_clean(app: list[CellResult], awp: list[CellResult], lams: tuple[float, ...]) -> list[Verdict]:
    """Returns one verdict per measure (AutoAttack, verified, parameter attack at each λ) for the
    APP–AWP pair nearest in clean accuracy (among all pairs with clean accuracy measured)."""
    pair = nearest_clean(app, awp)
    measures: list[tuple[str, str | None, float | None, bool]] = [  # (claim, share name, λ, higher is better)
        ("AutoAttack accuracy", "autoattack", None, True),
        ("verified accuracy", None, None, True),  # None: the verified share both measured (_verified)
    ]
    for lam in lams:  # the flipped share, and the accuracy left: one network can flip fewer of fewer points
        measures += [
            (f"parameter attack λ={lam:g} (flipped share)", "flipped", lam, False),
            (f"parameter attack λ={lam:g} (accuracy after)", "after", lam, True),
        ]
    if pair is None:
        return [
            Verdict(f"at equal clean accuracy: {m}", False, "undecided: no APP and AWP point evaluated yet")
            for m, _, _, _ in measures
        ]
    a, b, clean = pair
    head = f"nearest pair in clean accuracy {a.algo_label} vs {b.algo_label}, clean APP − AWP {clean}" + (
        " — itself decided, so not equal" if clean.decided else ""
    )
    base = {"APP": a.algo_label, "AWP": b.algo_label, "clean": clean.as_dict()}
    return [
        _measure_verdict(claim, a, b, name or _verified(a, b), lam, higher, base, head)
        for claim, name, lam, higher in measures
    ]


def _measure_verdict(
    name: str,
    app: CellResult,
    awp: CellResult,
    share: str,
    lam: float | None,
    higher_better: bool,
    base: dict[str, Any],
    head: str,
) -> Verdict:
    """Returns which method is more robust on one measure of the nearest pair, decided or not."""
    claim = f"at equal clean accuracy: {name}"
    d = Diff.between(app, awp, share, lam)
    if d is None:
        return Verdict(claim, False, f"undecided: not measured for both ({head})", base)
    a, b = app.share(share, lam), awp.share(share, lam)
    winner = ("APP" if d.above == higher_better else "AWP") if d.decided else None
    nums = f"APP {a} vs AWP {b}, APP − AWP {d}; {head}"
    text = f"decided: {winner} more robust ({nums})" if d.decided else f"undecided: the interval contains 0 ({nums})"
    return Verdict(
        claim,
        d.decided,
        text,
        {**base, "app": a.value, "awp": b.value, "difference": d.as_dict(), "more_robust": winner},
    )
