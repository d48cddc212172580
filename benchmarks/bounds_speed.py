"""Speed of interval bounds and APP steps relative to plain forward passes and standard steps.

    python benchmarks/bounds_speed.py [--arch cnn4] [--batch 128] [--repeats 20] [--device cpu] [--threads N]
                                      [--channels-last] [--precision fp32,bf16] [--no-steps]

Everything is measured side by side in one run, interleaved round by round,
so the ratios hold on a noisy machine even where absolute times do not.
Prints a Markdown table of median milliseconds and ratios to the baseline.
With --channels-last every case also runs on a channels_last copy of the
model and batch (the `train.channels_last` path), marked "[cl]", with a
second ratio column against the standard step of the same memory format.
With --precision fp32,bf16 every case runs in both precisions side by side
(bf16: under the training loop's bf16 autocast, marked "[bf16]"), with a
column of each case's bf16 time against its fp32 time.
--arch picks any approp architecture (resnet20 and preact_resnet18 are graphs
with additions); the forward table (eval mode) also times the verified
decision (interval and linear bounds, best of both).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from approp.bounds import clean_statistics, has_batchnorm, interval_bounds, worst_case_loss
from approp.bounds.verify import verified_by
from approp.config import ModelConfig, RadiusConfig
from approp.models import ARCHITECTURES, build_model
from approp.precision import training_autocast

KINDS = ("abs", "const", "tanh")
CL = " [cl]"  # suffix of the channels_last cases
BF16 = " [bf16]"  # suffix of the cases run under bf16 autocast


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


def forward_cases(model, x, eps: float, lam: float, precision: str = "fp32") -> dict[str, Callable[[], object]]:
    """Returns the forward-only cases: the plain pass, bounds per radius kind (bf16: under autocast), and the
    verified decision (always fp32: it runs outside autocast)."""
    suffix = BF16 if precision == "bf16" else ""

    @torch.no_grad()
    def forward():
        with training_autocast(precision, x.device):
            return model(x)

    cases = {"forward" + suffix: forward}
    for kind in KINDS:
        radius = RadiusConfig(kind, lam=lam)

        @torch.no_grad()
        def bounds(r=radius):
            with training_autocast(precision, x.device):
                return interval_bounds(model, x, eps, r)

        cases[f"bounds ({kind}){suffix}"] = bounds
    if precision == "fp32":
        y = torch.randint(0, 10, (len(x),), generator=torch.Generator().manual_seed(1)).to(x.device)
        tanh = RadiusConfig("tanh", lam=lam)
        cases["verified (tanh, best)"] = lambda: verified_by(model, x, y, eps, tanh, method="best")
    return cases


def step_cases(
    model, x, y, eps: float, lam: float, kappa: float, precision: str = "fp32"
) -> dict[str, Callable[[], object]]:
    """Returns training-step cases (forward, backward, SGD update): standard, then APP per kind.

    As in the training loop, bf16 autocast covers the loss only; backward and update run outside it.
    """
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    suffix = BF16 if precision == "bf16" else ""

    def standard():
        opt.zero_grad(set_to_none=True)
        with training_autocast(precision, x.device):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()

    cases = {"standard step" + suffix: standard}
    for kind in KINDS:
        radius = RadiusConfig(kind, lam=lam)

        def app(r=radius):
            opt.zero_grad(set_to_none=True)
            # BatchNorm: the clean forward records the statistics the bounds use, as in the training loop.
            with training_autocast(precision, x.device), clean_statistics(model):
                bn = has_batchnorm(model)
                clean = F.cross_entropy(model(x).float(), y) if kappa or bn else None
                worst = worst_case_loss(model, x, y, eps, r)
                loss = (1 - kappa) * worst + kappa * clean if kappa else worst
            loss.backward()
            opt.step()

        cases[f"APP step ({kind}, kappa={kappa:g}){suffix}"] = app
    return cases


def table(rows: dict[str, float], baseline: str) -> str:
    """Returns a Markdown table of median ms and the ratio to `baseline`.

    Where channels_last cases are present, a column gives each case's ratio to the
    baseline of its own memory format; where bf16 cases are present, one gives each
    bf16 case's time over the same case in fp32.
    """
    if baseline not in rows:  # bf16 only
        baseline += BF16
    both = baseline + CL in rows
    bf16 = any(name.endswith(BF16) for name in rows) and not baseline.endswith(BF16)
    head = (
        "| case | median ms | × " + baseline + (" | × same format" if both else "") + (" | × fp32 |" if bf16 else " |")
    )
    out = [head, "|---|---:|---:|" + ("---:|" if both else "") + ("---:|" if bf16 else "")]
    for name, t in rows.items():
        line = f"| {name} | {t * 1e3:.1f} | {t / rows[baseline]:.2f} |"
        if both:
            own = baseline.removesuffix(BF16) + (CL if CL in name else "") + (BF16 if name.endswith(BF16) else "")
            line += f" {t / rows[own]:.2f} |"
        if bf16:
            line += f" {t / rows[name.removesuffix(BF16)]:.2f} |" if name.endswith(BF16) else " 1.00 |"
        out.append(line)
    return "\n".join(out)


def with_channels_last(build, model, x, *args) -> dict[str, Callable[[], object]]:
    """Returns build's cases on (model, x) followed by the same cases on channels_last copies."""
    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    cl_x = x.contiguous(memory_format=torch.channels_last)
    cases = build(model, x, *args)
    cases.update({_suffixed(name, CL): fn for name, fn in build(cl_model, cl_x, *args).items()})
    return cases


def _suffixed(name: str, suffix: str) -> str:
    """Returns name with suffix inserted before a trailing [bf16] (so [bf16] stays last)."""
    if name.endswith(BF16):
        return name.removesuffix(BF16) + suffix + BF16
    return name + suffix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="cnn4", choices=sorted(ARCHITECTURES))
    ap.add_argument("--no-steps", action="store_true", help="only the forward table")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--eps", type=float, default=2 / 255)
    ap.add_argument("--lam", type=float, default=0.01)
    ap.add_argument(
        "--channels-last", action="store_true", help="also run every case in channels_last memory format, side by side"
    )
    ap.add_argument(
        "--precision",
        default="fp32",
        help="fp32, bf16 or fp32,bf16 (both side by side; bf16 is the training loop's autocast)",
    )
    args = ap.parse_args()
    precisions = args.precision.split(",")
    if not set(precisions) <= {"fp32", "bf16"}:
        ap.error(f"--precision takes fp32, bf16 or fp32,bf16; got {args.precision!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=args.arch)).to(device)
    x = torch.rand(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.arch}, batch {args.batch}, eps {args.eps:.4g}, lam {args.lam:g}, {name}, torch {torch.__version__}\n")

    def build(fn, *rest):
        cases = {}
        for precision in precisions:
            cases.update(
                with_channels_last(fn, model, x, *rest, precision)
                if args.channels_last
                else fn(model, x, *rest, precision)
            )
        return cases

    model.eval()  # BatchNorm: running statistics, as evaluated
    print(table(measure(build(forward_cases, args.eps, args.lam), args.repeats, device), "forward"))
    print()
    model.train()
    for kappa in () if args.no_steps else (0.0, 0.5):
        cases = build(lambda m, xs, *rest: step_cases(m, xs, y, *rest), args.eps, args.lam, kappa)
        print(table(measure(cases, args.repeats, device), "standard step"))
        print()


if __name__ == "__main__":
    main()
