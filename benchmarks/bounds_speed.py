"""Speed of interval bounds and APP steps relative to plain forward passes and standard steps.

    python benchmarks/bounds_speed.py [--batch 128] [--repeats 20] [--device cpu] [--threads N]
                                      [--channels-last]

Everything is measured side by side in one run, interleaved round by round,
so the ratios hold on a noisy machine even where absolute times do not.
Prints a Markdown table of median milliseconds and ratios to the baseline.
With --channels-last every case also runs on a channels_last copy of the
model and batch (the `train.channels_last` path), marked "[cl]", with a
second ratio column against the standard step of the same memory format.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from approp.bounds import interval_bounds, worst_case_loss
from approp.config import RadiusConfig
from approp.models import CNN4

KINDS = ("abs", "const", "tanh")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(cases: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, float]:
    """Returns the median seconds of each case, run interleaved `repeats` times after a warm-up."""
    for fn in cases.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def forward_cases(model, x, eps: float, lam: float) -> dict[str, Callable[[], object]]:
    """Returns the forward-only cases: the plain pass, then bounds per radius kind."""

    @torch.no_grad()
    def forward():
        return model(x)

    cases = {"forward": forward}
    for kind in KINDS:
        radius = RadiusConfig(kind, lam=lam)
        cases[f"bounds ({kind})"] = torch.no_grad()(lambda r=radius: interval_bounds(model, x, eps, r))
    return cases


def step_cases(model, x, y, eps: float, lam: float, kappa: float) -> dict[str, Callable[[], object]]:
    """Returns training-step cases (forward, backward, SGD update): standard, then APP per kind."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def standard():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    cases = {"standard step": standard}
    for kind in KINDS:
        radius = RadiusConfig(kind, lam=lam)

        def app(r=radius):
            opt.zero_grad(set_to_none=True)
            worst = worst_case_loss(model, x, y, eps, r)
            loss = (1 - kappa) * worst + kappa * F.cross_entropy(model(x), y) if kappa else worst
            loss.backward()
            opt.step()

        cases[f"APP step ({kind}, kappa={kappa:g})"] = app
    return cases


CL = " [cl]"  # suffix of the channels_last cases


def table(rows: dict[str, float], baseline: str) -> str:
    """Returns a Markdown table of median ms and the ratio to `baseline`.

    Where channels_last cases are present, a last column gives each case's ratio
    to the baseline of its own memory format.
    """
    both = baseline + CL in rows
    head = "| case | median ms | × " + baseline + (" | × same format |" if both else " |")
    out = [head, "|---|---:|---:|" + ("---:|" if both else "")]
    for name, t in rows.items():
        line = f"| {name} | {t * 1e3:.1f} | {t / rows[baseline]:.2f} |"
        if both:
            line += f" {t / rows[baseline + CL if name.endswith(CL) else baseline]:.2f} |"
        out.append(line)
    return "\n".join(out)


def with_channels_last(build, model, x, *args) -> dict[str, Callable[[], object]]:
    """Returns build's cases on (model, x) followed by the same cases on channels_last copies."""
    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    cl_x = x.contiguous(memory_format=torch.channels_last)
    cases = build(model, x, *args)
    cases.update({name + CL: fn for name, fn in build(cl_model, cl_x, *args).items()})
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--eps", type=float, default=2 / 255)
    ap.add_argument("--lam", type=float, default=0.01)
    ap.add_argument("--channels-last", action="store_true",
                    help="also run every case in channels_last memory format, side by side")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = CNN4().to(device)
    x = torch.rand(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"CNN4, batch {args.batch}, eps {args.eps:.4g}, lam {args.lam:g}, {name}, torch {torch.__version__}\n")
    def build(fn, *rest):
        return with_channels_last(fn, model, x, *rest) if args.channels_last else fn(model, x, *rest)

    print(table(measure(build(forward_cases, args.eps, args.lam), args.repeats, device), "forward"))
    print()
    for kappa in (0.0, 0.5):
        cases = build(lambda m, xs, *rest: step_cases(m, xs, y, *rest), args.eps, args.lam, kappa)
        print(table(measure(cases, args.repeats, device), "standard step"))
        print()


if __name__ == "__main__":
    main()
