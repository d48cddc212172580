"""A − B of one measure between two evaluated models, with the interval the data allow.

    d = Diff.between(a, b, "autoattack")      # CellResult a, b; None where either lacks the measure
    print(d)                                  # "+1.2 [-0.8, +3.1] pp (paired)"

Where both evaluations kept their per-point outcomes on the same points (eval.json
"outcomes", approp.outcomes), the interval is Newcombe's for paired data
(approp.stats.paired); otherwise Newcombe's hybrid score interval from the two Wilson
intervals (approp.stats.intervals.difference), which treats the two samples as
independent and is conservative for models scored on the same points. Either way a
difference is decided where its interval excludes 0. The flipped share of the
parameter attack counts each model's own correct points, so its two samples differ
and it always takes the independent interval.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..stats import intervals as stats
from ..stats.intervals import Proportion
from ..stats.paired import paired_difference
from .cell_results import CellResult


@dataclass(frozen=True)
class Diff:
    """A − B in fractions with its 95 % interval; paired: from per-point outcomes on the same points."""

    value: float
    lower: float
    upper: float
    paired: bool = False

    @classmethod
    def of(cls, a: Proportion, b: Proportion) -> Diff:
        """Returns the independent difference of two shares (Newcombe's hybrid score interval)."""
        return cls(*stats.difference(a, b))

    @classmethod
    def between(cls, a: CellResult, b: CellResult, name: str, lam: float | None = None) -> Diff | None:
        """Returns A − B of CellResult.share(name, lam), paired where both kept outcomes on the same
        points; None where either model lacks the measure."""
        pa, pb = a.share(name, lam), b.share(name, lam)
        if pa is None or pb is None:
            return None
        ma, mb = a.outcome(name, lam), b.outcome(name, lam)
        if ma is not None and mb is not None and ma.shape == mb.shape:
            return cls(*paired_difference(ma, mb), paired=True)
        return cls.of(pa, pb)

    @property
    def above(self) -> bool:
        return self.lower > 0

    @property
    def below(self) -> bool:
        return self.upper < 0

    @property
    def decided(self) -> bool:
        return self.above or self.below

    @property
    def kind(self) -> str:
        """Returns which interval this is: 'paired' or 'independent'."""
        return "paired" if self.paired else "independent"

    def __str__(self) -> str:
        text = f"{100 * self.value:+.1f} [{100 * self.lower:+.1f}, {100 * self.upper:+.1f}] pp"
        return text + (" (paired)" if self.paired else "")

    def as_dict(self) -> dict[str, float | str]:
        return {"value": self.value, "lower": self.lower, "upper": self.upper, "interval": self.kind}
