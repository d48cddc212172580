"""Statistical robustness of the parameter neighbourhood: certificates with a stated confidence.

For test point (x, y) let p(x) = P(argmax f_θ̃(x̃) ≠ y), where θ̃ is uniform on
the parameter box B∞(θ, r(θ)) and x̃ is, independently, uniform on
B∞(x, ε) ∩ [0, 1]^d (see approp.boxes; a tie z_y = max_{j≠y} z_j counts as
a misclassification). Each point is sampled in rounds k = 1, 2, … of
first_round·2^(k−1) fresh i.i.d. draws, until `samples` draws are spent or
its one-sided Clopper–Pearson bounds at δ_k = δ_pt·6/(π²k²) decide p
against p₀ (approp.stats.binomial):

- certified: upper bound U ≤ p₀, stated "p(x) ≤ p₀";
- refuted: lower bound L > p₀, stated "p(x) > p₀";
- undecided: neither within the budget.

What is guaranteed. δ_pt = δ / N for N test points (Bonferroni). Since the
δ_k of one point sum to δ_pt, all upper bounds of that point's rounds hold at
once with probability ≥ 1 − δ_pt, so the reported U (read at a data-dependent
round) satisfies p(x) ≤ U with probability ≥ 1 − δ_pt, and so does each
decision (only one side can be wrong for a given p). By the union bound over
the N points, with probability ≥ 1 − δ over the sampling every reported U and
every decision holds at once; in particular the share of the N test points
with p(x) ≤ p₀ is at least the certified share. The randomness is that of
the sampler only: nothing is claimed about other test points, other boxes,
or the worst case inside the box (for that see the interval bounds; the
extreme-value estimate in approp.stats.extreme_value is an estimate, not a bound).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from ..boxes import Box, sampled_margins
from ..config import ConfigError, check_positive_int
from ..stats.binomial import clopper_pearson_lower, clopper_pearson_upper, round_delta
from ..stats.extreme_value import block_maxima

CERTIFIED, REFUTED, UNDECIDED = "certified", "refuted", "undecided"


@dataclass(frozen=True)
class StatisticalConfig:
    """Options of the statistical certificates (defaults in brackets).

    samples: most draws per test point [2000]; delta: the confidence is 1 − δ for all points
    jointly [1e-3]; p0: the misclassification probability certified against [0.01];
    first_round: draws in round 1, doubling each round [128]; block: size of the blocks whose
    maxima the extreme-value fit uses (divides first_round) [16]; attack_steps: steps of the joint
    attack [20]; chunk_images: network × input pairs per batched call [512]; seed [0].
    """

    samples: int = 2000
    delta: float = 1e-3
    p0: float = 0.01
    first_round: int = 128
    block: int = 16
    attack_steps: int = 20
    chunk_images: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("samples", "first_round", "block", "attack_steps", "chunk_images"):
            check_positive_int(f"statistical.{name}", getattr(self, name))
        for name in ("delta", "p0"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 < value < 1:
                raise ConfigError(f"statistical.{name} must be in (0, 1); got {value!r}")
        if self.first_round % self.block:
            raise ConfigError(
                f"statistical.block ({self.block}) must divide statistical.first_round ({self.first_round})"
            )


@dataclass
class PointState:
    """One test point's sequential test so far (mutable: rounds add to it)."""

    samples: int = 0
    failures: int = 0
    rounds: int = 0
    decision: str = UNDECIDED
    upper: float = 1.0
    lower: float = 0.0
    min_margin: float = math.inf
    maxima: list[float] = field(default_factory=list)  # block maxima of −margin, for the extreme-value fit

    def open(self, budget: int) -> bool:
        """Returns whether the point still needs draws (undecided and under budget)."""
        return self.decision == UNDECIDED and self.samples < budget


def round_size(cfg: StatisticalConfig, k: int) -> int:
    """Returns the draws per open point in round k ≥ 1 before the budget cut: first_round·2^(k−1)."""
    return cfg.first_round * 2 ** (k - 1)


def max_rounds(cfg: StatisticalConfig) -> int:
    """Returns the most rounds a point can take before its draws reach cfg.samples."""
    k, drawn = 0, 0
    while drawn < cfg.samples:
        k += 1
        drawn += round_size(cfg, k)
    return k


def draws_to_certify(cfg: StatisticalConfig, points: int) -> int:
    """Returns the fewest draws (a round boundary, budget ignored) at which zero failures certify p ≤ p0.

    Below it — e.g. when cfg.samples is smaller — no point can be certified, whatever the model.
    """
    delta_point, k, drawn = cfg.delta / max(points, 1), 0, 0
    while True:
        k += 1
        drawn += round_size(cfg, k)
        if 1 - round_delta(delta_point, k) ** (1 / drawn) <= cfg.p0:  # U(0, n, δ_k) = 1 − δ_k^(1/n)
            return drawn


def decide(points: list[PointState], idx: list[int], k: int, delta_point: float, p0: float) -> None:
    """Updates bounds and decisions of points[idx] after their round k (bounds at δ_k of δ_pt)."""
    f = torch.tensor([points[i].failures for i in idx])
    n = torch.tensor([points[i].samples for i in idx])
    dk = round_delta(delta_point, k)
    # The exact sums take (points × failures) memory: 64 points at a time.
    upper = torch.cat([clopper_pearson_upper(fc, nc, dk) for fc, nc in zip(f.split(64), n.split(64))])
    lower = torch.cat([clopper_pearson_lower(fc, nc, dk) for fc, nc in zip(f.split(64), n.split(64))])
    for j, i in enumerate(idx):
        pt = points[i]
        pt.upper, pt.lower, pt.rounds = upper[j].item(), lower[j].item(), k
        if pt.upper <= p0:
            pt.decision = CERTIFIED
        elif pt.lower > p0:
            pt.decision = REFUTED


def _round_generator(device, seed: int, k: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + k)


def run_round(
    model: nn.Module,
    box: Box,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    cfg: StatisticalConfig,
    points: list[PointState],
    k: int,
    delta_point: float,
    point_chunk: int = 64,
) -> None:
    """Draws round k for every open point of x (N, C, H, W), y (N,) and updates `points` in place.

    The round's generator depends on (seed, k) only, so a run resumed at a round boundary
    draws exactly what the uninterrupted run would have.
    """
    idx = [i for i, pt in enumerate(points) if pt.open(cfg.samples)]
    if not idx:
        return
    gen = _round_generator(x.device, cfg.seed, k)
    for start in range(0, len(idx), point_chunk):
        chunk = idx[start : start + point_chunk]
        draws = min(round_size(cfg, k), cfg.samples - points[chunk[0]].samples)
        margins = sampled_margins(model, box, x[chunk], y[chunk], eps, draws, gen, cfg.chunk_images)  # (s, P)
        for j, i in enumerate(chunk):
            pt = points[i]
            m = margins[:, j]
            pt.samples += len(m)
            pt.failures += int((m <= 0).sum())
            pt.min_margin = min(pt.min_margin, m.min().item())
            pt.maxima += block_maxima(-m, cfg.block).tolist()
    decide(points, idx, k, delta_point, cfg.p0)


def certify(
    model: nn.Module,
    box: Box,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    cfg: StatisticalConfig,
    points: list[PointState] | None = None,
    on_round: Callable[[int, list[PointState]], None] | None = None,
) -> list[PointState]:
    """Returns the per-point sequential tests for x (N, …), y (N,) with δ_pt = δ/N (see module docstring).

    Every point of a round has had the same number of draws, so rounds run in lockstep;
    `points` (with their `rounds`) resumes after the last finished round, `on_round(k, points)`
    runs after each round.
    """
    model.eval()
    pts = points if points is not None else [PointState() for _ in range(len(x))]
    delta_point = cfg.delta / max(len(pts), 1)
    k = max((pt.rounds for pt in pts), default=0)
    while any(pt.open(cfg.samples) for pt in pts):
        k += 1
        run_round(model, box, x, y, eps, cfg, pts, k, delta_point)
        if on_round is not None:
            on_round(k, pts)
    return pts


def dataset_statement(points: list[PointState], cfg: StatisticalConfig) -> dict[str, float | int | str]:
    """Returns the test-set summary: shares certified / refuted / undecided and what they guarantee."""
    n = max(len(points), 1)
    count = {d: sum(pt.decision == d for pt in points) for d in (CERTIFIED, REFUTED, UNDECIDED)}
    drawn = [pt.samples for pt in points]
    return {
        "points": len(points),
        "delta": cfg.delta,
        "p0": cfg.p0,
        "delta_point": cfg.delta / n,
        "certified": count[CERTIFIED] / n,
        "refuted": count[REFUTED] / n,
        "undecided": count[UNDECIDED] / n,
        "samples_total": sum(drawn),
        "samples_mean": sum(drawn) / n,
        "samples_max": max(drawn, default=0),
        "draws_to_certify": draws_to_certify(cfg, len(points)),
        "statement": (
            f"with confidence >= 1 - {cfg.delta:g} (Bonferroni: {cfg.delta / n:.3g} per point, "
            f"spent over rounds as 6/(pi^2 k^2)), every certified point has p <= {cfg.p0:g} and every "
            f"refuted point has p > {cfg.p0:g}, where p is the probability that a network uniform in "
            "the box on an input uniform in the ball misclassifies it; so at least the certified "
            "share of these test points has p <= p0"
        ),
    }


def points_to_json(points: list[PointState]) -> list[dict]:
    """Returns the point states as JSON-ready dicts (an infinite min_margin becomes None)."""
    out = []
    for pt in points:
        d = asdict(pt)
        d["min_margin"] = None if math.isinf(pt.min_margin) else pt.min_margin
        out.append(d)
    return out


def points_from_json(raw: list[dict]) -> list[PointState]:
    """Returns point states saved by `points_to_json`."""
    pts = [PointState(**r) for r in raw]
    return [replace(pt, min_margin=math.inf) if pt.min_margin is None else pt for pt in pts]
