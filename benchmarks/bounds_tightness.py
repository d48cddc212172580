"""Tightness and cost of interval, linear (CROWN-style) and best-of-both margin bounds on trained runs.

    python benchmarks/bounds_tightness.py RUN [RUN ...] [--n 1000] [--scales 1,0.5,0.25,0.1]
        [--data-dir data] [--attack-steps 10] [--cost-batch 128] [--repeats 5] [--threads 1]
        [--cost-scale 1] [--no-cost | --cost-only]

For every run directory and every scale s, at ε = s·ε_train and λ = s·λ_train
(the run's radius kind), on the same first n test points: the mean over points
of the smallest margin lower bound (min over j ≠ y of z_y − z_j) and the
verified accuracy by interval, linear and best-of-both bounds (a margin counts
only above its rounding allowance), the mean smallest margin a projected-gradient
attack on parameters (one network per batch, in the box) and inputs (per point,
in the ball) reaches, and the gap between that and the best bound.

Then the cost on CPU, per run, side by side in one process on a batch of test
points: a forward pass, interval bounds, the linear bound of all nine margins,
and the best-of-both decision (linear bounds only for the margins the interval
bounds leave open, each point's weakest first; its cost depends on how many
points the model gets verified, so the table says). Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call

from approp.bounds.linear import prepare
from approp.bounds.verify import MarginBounds, best_of, clears, interval_margins, margin_bounds, verified_by
from approp.checkpoint import load_model, radius_from_meta
from approp.data import Split, load_cifar10
from approp.formatting import table_lines, table_row
from approp.radius import parameter_radii
from approp.stats.intervals import from_share

METHODS = ("ibp", "crown", "best")
BATCH = 100


def smallest(bounds: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Returns min over j ≠ y of the margins (B, K) → (B,)."""
    return bounds.masked_fill(F.one_hot(y, bounds.shape[1]).bool(), float("inf")).min(1).values


def joint_attack(model, x, y, eps: float, radius, lam: float, steps: int) -> torch.Tensor:
    """Returns the smallest margin (B,) after signed-gradient descent on one network in the box and per-point inputs."""
    radii = parameter_radii(model, radius, lam)
    centre = {n: p.detach() for n, p in model.named_parameters()}
    params = {n: c.clone().requires_grad_() for n, c in centre.items()}
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    xa = x.clone().requires_grad_()
    for _ in range(steps):
        out = functional_call(model, params, (xa,))
        margin = smallest(out.gather(1, y[:, None]) - out, y)
        grads = torch.autograd.grad(margin.sum(), [xa, *params.values()])
        with torch.no_grad():
            xa.sub_(max(eps, 1e-12) / 4 * grads[0].sign())
            xa.copy_(torch.minimum(torch.maximum(xa, lo), hi))
            for (name, p), g in zip(params.items(), grads[1:]):
                r = radii[name]
                p.sub_(r / 4 * g.sign())
                p.copy_(torch.minimum(torch.maximum(p, centre[name] - r), centre[name] + r))
    with torch.no_grad():
        out = functional_call(model, params, (xa,))
        return smallest(out.gather(1, y[:, None]) - out, y)


def tightness_row(model, test: Split, eps: float, radius, lam: float, steps: int) -> dict[str, float]:
    """Returns mean smallest-margin bound and verified share per method, the attack's margin and the gap."""
    sums = {f"bound {m}": 0.0 for m in METHODS} | {f"verified {m}": 0.0 for m in METHODS}
    attacked = 0.0
    for start in range(0, len(test), BATCH):
        x = test.x[start : start + BATCH].float().div(255.0)
        y = test.y[start : start + BATCH]
        with torch.no_grad():
            prep = prepare(model, x, eps, radius, lam)
            found: dict[str, MarginBounds] = {"ibp": interval_margins(prep, y)}
            found["crown"] = margin_bounds(prep, y, "crown")
            found["best"] = best_of(found["ibp"], found["crown"])
        for m in METHODS:
            sums[f"bound {m}"] += smallest(found[m].lower, y).sum().item()
            sums[f"verified {m}"] += clears(found[m], y).all(1).sum().item()
        attacked += joint_attack(model, x, y, eps, radius, lam, steps).sum().item()
    row = {k: v / len(test) for k, v in sums.items()}
    row["attack"] = attacked / len(test)
    row["gap (best)"] = row["attack"] - row["bound best"]
    return row


def cost_table(model, x, y, eps: float, radius, lam: float, repeats: int) -> list[tuple[str, float]]:
    """Returns (case, median seconds) of a forward pass and the bounds, measured interleaved."""

    def linear_all():
        return margin_bounds(prepare(model, x, eps, radius, lam), y, "crown")

    cases = {
        "forward": lambda: model(x),
        "interval margins": lambda: interval_margins(prepare(model, x, eps, radius, lam), y),
        "linear, all 9 margins": linear_all,
        "best-of-both decision": lambda: verified_by(model, x, y, eps, radius, lam, method="best"),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    with torch.no_grad():
        for fn in cases.values():
            fn()
        for _ in range(repeats):
            for name, fn in cases.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return [(name, statistics.median(ts)) for name, ts in times.items()]


def run_name(run: Path) -> str:
    """Returns a preset cell's name for its cells/<cell>/run folder, else the folder's name."""
    return run.parent.name if run.name == "run" else run.name


def tightness_section(args, full: Split) -> None:
    """Prints the tightness table: every run at every scale on the first args.n test points."""
    scales = [float(s) for s in args.scales.split(",")]
    test = full.take(args.n)
    cols = [f"bound {m}" for m in METHODS] + [f"verified {m}" for m in METHODS] + ["attack", "gap (best)"]
    print(
        f"Tightness on the first {len(test)} test points (bounds: mean smallest margin lower bound; "
        "verified in % with its 95 % Wilson interval)\n"
    )
    print("\n".join(table_lines(["run", "algo", "radius", "ε", "λ", *cols], [])))
    for run in args.runs:
        model, meta = load_model(run)
        model.eval()
        radius = radius_from_meta(meta)
        for s in scales:
            eps, lam = s * float(meta["eps"]), s * radius.lam
            row = tightness_row(model, test, eps, radius, lam, args.attack_steps)
            cells = [str(from_share(row[c], len(test))) if c.startswith("verified") else f"{row[c]:.3f}" for c in cols]
            print(table_row([run_name(run), meta["algo"], radius.kind, f"{eps:.3g}", f"{lam:.3g}", *cells]))


def cost_section(args, full: Split) -> None:
    """Prints, per run, the cost of the bounds beside a forward pass on one batch, all cases interleaved."""
    batch = full.take(args.cost_batch)
    x, y = batch.x.float().div(255.0), batch.y
    c = args.cost_scale
    print(
        f"\nCost on CPU ({args.threads} thread(s)), batch {len(y)}, at {c:g} × each run's training ε, λ; "
        f"median of {args.repeats}, interleaved; × forward = time / the same run's forward pass\n"
    )
    print(
        "| run | forward ms | interval margins × | linear, all 9 margins × | best-of-both decision × "
        "| verified (best) in the batch |\n|---|---|---|---|---|---|"
    )
    for run in args.runs:
        model, meta = load_model(run)
        model.eval()
        radius = radius_from_meta(meta)
        eps, lam = c * float(meta["eps"]), c * radius.lam
        times = dict(cost_table(model, x, y, eps, radius, lam, args.repeats))
        base = times["forward"]
        verified = int(verified_by(model, x, y, eps, radius, lam, method="best").sum())
        print(
            f"| {run_name(run)} | {1000 * base:.1f} | {times['interval margins'] / base:.1f} | "
            f"{times['linear, all 9 margins'] / base:.1f} | {times['best-of-both decision'] / base:.1f} "
            f"| {verified} of {len(y)} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--scales", default="1,0.5,0.25,0.1")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--attack-steps", type=int, default=10)
    ap.add_argument("--cost-batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cost-scale", type=float, default=1.0, help="cost at this scale of the training ε, λ")
    ap.add_argument("--threads", type=int, default=1)
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--no-cost", action="store_true", help="skip the timing (e.g. while other jobs share the cores)")
    what.add_argument("--cost-only", action="store_true", help="only the timing")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    full = Split(*load_cifar10(args.data_dir, train=False))
    if not args.cost_only:
        tightness_section(args, full)
    if not args.no_cost:
        cost_section(args, full)


if __name__ == "__main__":
    main()
