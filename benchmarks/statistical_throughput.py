"""Throughput of the statistical sampler, and the draws a certificate needs.

    python benchmarks/statistical_throughput.py [--images 512] [--repeats 5] [--threads 1]

Table 1: margins of M CNN4 networks drawn uniformly in the box, each on its own
B inputs drawn uniformly in the ball (approp.boxes.sampled_margins), for
several splits M × B of the same number of (network, image) pairs, beside one
plain forward pass of the midpoint network on the same number of images — all
measured interleaved in one process, so the ratios hold on a shared machine
even where the absolute rates do not. Table 2: the least n whose one-sided
Clopper–Pearson bound is ≤ p0 with 0, 1, 2, … failures among n draws, for a
single point at δ and for each of N points at δ/N (Bonferroni).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from approp.boxes import sampled_margins, stacked_uniform
from approp.config import RadiusConfig
from approp.models import CNN4
from approp.radius import parameter_box
from approp.stats.binomial import samples_needed


def measure(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Returns the median seconds of each case, run interleaved `repeats` times after a warm-up."""
    for fn in cases.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def throughput_rows(images: int, repeats: int) -> list[tuple[str, int, float, float]]:
    """Returns (case, pairs, pairs per second, seconds relative to the plain forward) per case."""
    torch.manual_seed(0)
    model = CNN4().eval()
    box = parameter_box(model, RadiusConfig(kind="tanh", lam=0.01))
    x = torch.rand(images, 3, 32, 32)
    y = torch.randint(0, 10, (images,))
    gen = torch.Generator().manual_seed(0)
    cases: dict[str, Callable[[], object]] = {}

    def plain() -> None:
        with torch.no_grad():
            model(x)

    cases[f"plain forward, 1 network × {images} images"] = plain
    for m in (1, 8, 32, 128):
        b = images // m
        cases[f"sampler, {m} networks × {b} images"] = lambda m=m, b=b: sampled_margins(
            model, box, x[:b], y[:b], 2 / 255, m, gen, chunk_images=images
        )
    cases["parameter draws only, 32 networks"] = lambda: stacked_uniform(box, 32, gen)
    secs = measure(cases, repeats)
    base = secs[f"plain forward, 1 network × {images} images"]
    rows = []
    for name, s in secs.items():
        pairs = 0 if name.startswith("parameter") else images
        rows.append((name, pairs, pairs / s if pairs else float("nan"), s / base))
    return rows


def samples_rows(p0: float, delta: float, points: int, failures: int = 5) -> list[tuple[int, int, int]]:
    """Returns (failures, n at δ, n at δ/points) for 0 … failures failures."""
    return [(f, samples_needed(p0, delta, f), samples_needed(p0, delta / points, f)) for f in range(failures + 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512, help="(network, image) pairs per measured call")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--p0", type=float, default=0.01)
    ap.add_argument("--delta", type=float, default=1e-3)
    ap.add_argument("--points", type=int, default=1000, help="test points for the Bonferroni column")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CNN4, CPU, {args.threads} thread(s), median of {args.repeats} interleaved runs\n")
    print("| case | pairs | networks × images / s | time vs plain forward |\n|---|---|---|---|")
    for name, pairs, rate, ratio in throughput_rows(args.images, args.repeats):
        rate_text = "–" if pairs == 0 else f"{rate:.0f}"
        print(f"| {name} | {pairs or '–'} | {rate_text} | {ratio:.2f} |")
    print(f"\nDraws needed for p ≤ {args.p0:g} (one-sided Clopper–Pearson)\n")
    print(f"| failures | n at δ = {args.delta:g} | n at δ/{args.points} (Bonferroni over {args.points} points) |")
    print("|---|---|---|")
    for f, n1, nb in samples_rows(args.p0, args.delta, args.points):
        print(f"| {f} | {n1} | {nb} |")


if __name__ == "__main__":
    main()
