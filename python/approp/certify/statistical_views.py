"""Three views of each test point's worst margin over the box and ball: bound, estimate, attack.

- bound: a lower bound of min_{j≠y} (z_y − z_j) over every network in the box and every input
  in the ball — a guarantee: per class j the larger of the interval bound
  (approp.bounds.margin_lower_bounds, kept as bound_interval) and the linear bound
  (approp.bounds.linear, kept as bound_linear), as both are sound;
- attack: the lowest margin the joint parameter-and-input attack reaches (approp.attacks.joint)
  — achieved, so the true worst case is at most this;
- estimate: −location of the reverse Weibull fitted to block maxima of sampled negated margins
  (approp.stats.extreme_value) — an estimate of the sampling distribution's lowest margin, not a bound.

The true worst margin m* satisfies bound ≤ m* ≤ attack. Nothing orders the
estimate against m*; `compare` counts where it falls.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.joint import joint_attack_margins
from ..bounds import margin_lower_bounds
from ..bounds.linear import linear_margin_bounds
from ..boxes import class_margin
from ..config import RadiusConfig
from ..data import Split, batches, to_float
from ..formatting import DASH, pct, table_lines
from ..precision import full_precision
from ..radius import parameter_box
from ..stats.extreme_value import MIN_BLOCKS, fit_reverse_weibull
from .statistical import PointState, StatisticalConfig, certify, dataset_statement, points_from_json, points_to_json


def margin_views(
    model: nn.Module,
    split: Split,
    radius: RadiusConfig,
    eps: float,
    attack_steps: int = 20,
    seed: int = 0,
    batch_size: int = 16,
) -> dict[str, list[float]]:
    """Returns {"clean", "bound", "bound_interval", "bound_linear", "attack"} per point (see the module docstring).

    batch_size points are attacked at once, each with its own parameter copy (memory ∝ batch_size).
    """
    model.eval()
    box = parameter_box(model, radius)
    gen = torch.Generator(device=split.y.device).manual_seed(seed)
    out: dict[str, list[float]] = {"clean": [], "bound": [], "bound_interval": [], "bound_linear": [], "attack": []}
    for x, y in batches(split, batch_size):
        with torch.no_grad():
            out["clean"] += class_margin(model(x), y).tolist()
            interval = margin_lower_bounds(model, x, y, eps, radius)  # (B, K), 0 at y
            linear = linear_margin_bounds(model, x, y, eps, radius)  # (B, K), 0 at y
            own = F.one_hot(y, interval.shape[1]).bool()
            for key, lower in (
                ("bound_interval", interval),
                ("bound_linear", linear),
                ("bound", torch.maximum(interval, linear)),
            ):
                out[key] += lower.masked_fill(own, math.inf).amin(1).tolist()
        out["attack"] += joint_attack_margins(model, box, x, y, eps, attack_steps, gen).tolist()
    return out


def estimates(points: list[PointState]) -> list[dict[str, float] | None]:
    """Returns per point the extreme-value fit {"estimate": −μ, "shape", "scale", "ks"}.

    None where there are too few blocks or the fit finds no finite endpoint (Gumbel-like maxima).
    """
    out = []
    for pt in points:
        if len(pt.maxima) < MIN_BLOCKS:
            out.append(None)
            continue
        fit = fit_reverse_weibull(torch.tensor(pt.maxima))
        if not fit.endpoint:
            out.append(None)
            continue
        out.append({"estimate": -fit.location, "shape": fit.shape, "scale": fit.scale, "ks": fit.ks})
    return out


def compare(
    views: dict[str, list[float]], points: list[PointState], fits: list[dict[str, float] | None]
) -> dict[str, float | int]:
    """Returns counts of the orderings: bound ≤ attack (must always hold), and where the estimate and the
    sampled minimum fall."""
    rows = [
        (b, a, f["estimate"], pt.min_margin)
        for b, a, f, pt in zip(views["bound"], views["attack"], fits, points)
        if f is not None
    ]
    n = max(len(rows), 1)
    return {
        "points_with_estimate": len(rows),
        "bound_le_attack": sum(b <= a for b, a, _, _ in zip(views["bound"], views["attack"], fits, points)),
        "estimate_between": sum(b <= e <= a for b, a, e, _ in rows) / n,
        "estimate_above_attack": sum(e > a for _, a, e, _ in rows) / n,
        "estimate_below_bound": sum(e < b for b, _, e, _ in rows) / n,
        "estimate_le_sampled_min": sum(e <= s for _, _, e, s in rows) / n,
    }


def per_point(
    views: dict[str, list[float]], points: list[PointState], fits: list[dict[str, float] | None]
) -> dict[str, list]:
    """Returns column lists per test point: decision, draws, failures, bounds on p and the three margin views."""

    def col(f):
        return [f(i) for i in range(len(points))]

    return {
        "decision": col(lambda i: points[i].decision),
        "samples": col(lambda i: points[i].samples),
        "failures": col(lambda i: points[i].failures),
        "p_upper": col(lambda i: points[i].upper),
        "p_lower": col(lambda i: points[i].lower),
        "clean": views["clean"],
        "bound": views["bound"],
        "bound_interval": views.get("bound_interval"),
        "bound_linear": views.get("bound_linear"),
        "attack": views["attack"],
        "sampled_min": col(lambda i: None if math.isinf(points[i].min_margin) else points[i].min_margin),
        "estimate": col(lambda i: None if fits[i] is None else fits[i]["estimate"]),
        "shape": col(lambda i: None if fits[i] is None else fits[i]["shape"]),
        "ks": col(lambda i: None if fits[i] is None else fits[i]["ks"]),
    }


def median(values: list[float | None] | None) -> float | None:
    """Returns the (upper) median of the values that are not None, or None where there are none."""
    vals = sorted(v for v in values or [] if v is not None)
    return vals[len(vals) // 2] if vals else None


# The margin views of the statistical stage, in the order bound ≤ … ≤ clean (per-point columns of eval.json).
VIEWS = ("bound", "bound_interval", "bound_linear", "attack", "estimate", "sampled_min", "clean")


def view_medians(stat: dict) -> dict[str, float | None]:
    """Returns the median over points of each margin view in VIEWS from the stage's results."""
    return {name: median(stat["points"].get(name)) for name in VIEWS}


def statistical_markdown(stat: dict) -> list[str]:
    """Returns the report lines of the statistical stage's results (as written to eval.json)."""
    s, c = stat["summary"], stat["compare"]
    m = {name: DASH if v is None else f"{v:.3g}" for name, v in view_medians(stat).items()}
    lines = [
        f"Statistical certificates ({s['points']} points, at most {stat['config']['samples']} draws each, "
        f"network uniform in the box and input uniform in the ball): with confidence ≥ 1 − {s['delta']:g} "
        f"jointly over the points, p ≤ {s['p0']:g} for {pct(s['certified'])} % of them, p > {s['p0']:g} "
        f"for {pct(s['refuted'])} %, undecided {pct(s['undecided'])} % "
        f"({s['samples_mean']:.0f} draws per point on average)."
        + (
            ""
            if s["draws_to_certify"] <= stat["config"]["samples"]
            else f" No point can be certified with {stat['config']['samples']} draws: zero failures certify only "
            f"after {s['draws_to_certify']}."
        ),
        "",
        *table_lines(
            ["margin view", "median over points", "meaning"],
            [
                [
                    "bound (best of interval and linear)",
                    m["bound"],
                    "≤ every network in the box on every input in the ball",
                ],
                ["interval bound", m["bound_interval"], "the same, intervals only"],
                ["linear bound", m["bound_linear"], "the same, linear (CROWN-style) only"],
                ["joint attack", m["attack"], "reached by one network and input: worst case ≤ this"],
                [
                    "extreme-value estimate",
                    m["estimate"],
                    "estimate of the sampler's lowest margin (median over the points with a fit), not a bound",
                ],
                ["lowest sampled", m["sampled_min"], "seen among the draws"],
                ["clean", m["clean"], "the midpoint network on x"],
            ],
        ),
        "",
        f"Where the estimate falls ({c['points_with_estimate']} points with a fit): between bound and attack "
        f"{pct(c['estimate_between'])} %, above the attack {pct(c['estimate_above_attack'])} %, below the "
        f"bound {pct(c['estimate_below_bound'])} %.",
        "",
    ]
    return lines


@full_precision()
def run_statistical(
    model: nn.Module,
    split: Split,
    radius: RadiusConfig,
    eps: float,
    cfg: StatisticalConfig,
    partial: dict,
    save: Callable[[], None],
    on_round: Callable[[], None] | None = None,
) -> dict:
    """Returns the statistical results (config, summary, compare, per-point columns) for the split.

    `partial` holds the resumable state (the margin views, then the point states after each
    round); `save()` is called whenever it changed, so a resumed run repeats at most one round.
    """
    if "views" not in partial:
        partial["views"] = margin_views(model, split, radius, eps, cfg.attack_steps, cfg.seed)
        save()
    points = points_from_json(partial["points"]) if "points" in partial else None

    def done_round(k: int, pts: list[PointState]) -> None:
        partial["points"] = points_to_json(pts)
        save()
        if on_round is not None:
            on_round()

    x = to_float(split.x.clone())  # (N, 3, 32, 32) in [0, 1]
    pts = certify(model, parameter_box(model, radius), x, split.y, eps, cfg, points, done_round)
    fits = estimates(pts)
    views = partial["views"]
    return {
        "config": asdict(cfg),
        "summary": dataset_statement(pts, cfg),
        "compare": compare(views, pts, fits),
        "points": per_point(views, pts, fits),
    }
