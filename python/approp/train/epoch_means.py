"""Per-epoch means of the values a training step logs, each over the steps that logged it.

A value some steps leave out (the clean loss where κ = 0, i.e. after the warm-up under
kappa_schedule "none") is averaged over the steps that computed it, not over the whole epoch:
dividing by every step's count would log a clean loss of 0.006 for an epoch whose first few
steps alone computed one.
"""

from __future__ import annotations

from typing import Any


class EpochMeans:
    """Accumulates step logs; `means()` returns {key: mean over the steps that logged key}.

    Values may be device tensors (summed without a host sync) or floats.
    """

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def add(self, logs: dict[str, Any]) -> None:
        """Adds one step's logs."""
        for key, value in logs.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def means(self) -> dict[str, float]:
        """Returns each key's mean over the steps that logged it, as floats."""
        return {k: float(v / self.counts[k]) for k, v in self.sums.items()}
