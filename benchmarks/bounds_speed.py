"""Speed of interval bounds and APP steps relative to plain forward passes and standard steps.

    python benchmarks/bounds_speed.py [--arch cnn4] [--batch 128] [--repeats 20] [--device cpu] [--threads N]
                                      [--channels-last] [--precision fp32,bf16] [--no-steps]
                                      [--baseline-ref COMMIT [--rounds 4]]

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

--baseline-ref COMMIT compares two bound engines: the one on this script's
import path (new) and the one in COMMIT's python/ tree (old; git archive into a
temporary folder, so any commit of this repository serves, e.g. the last one
with the layer walk before the graph engine). Each engine runs in its own
subprocesses, --rounds of them, old and new alternating (old first in even
rounds); both get the same weights and batch, and each reports every case as a
ratio to the forward pass or standard step it measured itself, so load that
slows one subprocess cancels in its own ratios. Printed: the medians over
rounds, old, new and new/old per case. The old tree must have the
architecture; a case it lacks prints "–".
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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


def measure_tables(args, model, x, y, precisions: list[str]) -> list[tuple[str, dict[str, float]]]:
    """Returns [(baseline case, {case: median seconds})]: the forward table (eval mode), then one step
    table per κ (train mode) unless args.no_steps."""
    device = x.device

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
    out = [("forward", measure(build(forward_cases, args.eps, args.lam), args.repeats, device))]
    model.train()
    for kappa in () if args.no_steps else (0.0, 0.5):
        cases = build(lambda m, xs, *rest: step_cases(m, xs, y, *rest), args.eps, args.lam, kappa)
        out.append(("standard step", measure(cases, args.repeats, device)))
    return out


def ratios(tables: list[tuple[str, dict[str, float]]]) -> list[tuple[str, dict[str, float]]]:
    """Returns each table as (its baseline, {case: ratio to that baseline}); bf16's where only bf16 ran."""
    out = []
    for base, rows in tables:
        base = base if base in rows else base + BF16
        out.append((base, {name: t / rows[base] for name, t in rows.items()}))
    return out


def worker(args: argparse.Namespace) -> None:
    """--baseline-ref's subprocess: loads the parent's model and batch, times every case with the approp
    on its PYTHONPATH and prints one JSON line {"approp": its path, "ratios": [per table {case: ratio}]}."""
    import approp

    state = torch.load(args.worker, weights_only=True)
    device = torch.device(args.device)
    model = build_model(ModelConfig(arch=args.arch))
    model.load_state_dict(state["model"])  # strict: the same weights in both engines
    model, x, y = model.to(device), state["x"].to(device), state["y"].to(device)
    tables = measure_tables(args, model, x, y, args.precisions)
    print(json.dumps({"approp": str(Path(approp.__file__).resolve()), "ratios": ratios(tables)}))


def export_tree(ref: str, into: Path) -> Path:
    """Returns the python/ folder of commit `ref` of this repository, exported (git archive) into `into`."""
    repo = Path(__file__).resolve().parents[1]
    try:
        tar = subprocess.run(
            ["git", "-C", str(repo), "archive", "--format=tar", ref, "python"], capture_output=True, check=True
        ).stdout
    except subprocess.CalledProcessError as err:
        raise SystemExit(f"--baseline-ref {ref!r}: git archive failed: {err.stderr.decode().strip()}") from None
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
    return into / "python"


def worker_argv(args: argparse.Namespace) -> list[str]:
    """Returns the command-line options a worker needs to measure what this run measures."""
    argv = ["--arch", args.arch, "--batch", str(args.batch), "--repeats", str(args.repeats), "--device", args.device]
    argv += ["--eps", repr(args.eps), "--lam", repr(args.lam), "--precision", args.precision]
    argv += ["--threads", str(args.threads)] if args.threads else []
    return argv + ["--no-steps"] * args.no_steps + ["--channels-last"] * args.channels_last


def run_worker(tree: Path, state: Path, argv: list[str]) -> list[tuple[str, dict[str, float]]]:
    """Returns the ratios a worker subprocess measured with the approp package under `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", str(state)],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no message)"]
        raise SystemExit(f"the engine under {tree} failed: {tail[0]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if not Path(report["approp"]).is_relative_to(tree.resolve()):
        raise SystemExit(f"the worker imported {report['approp']}, not the approp under {tree}")
    return report["ratios"]


def compare(args: argparse.Namespace, model, x, y) -> None:
    """Prints, per table, each case's ratio to its own baseline in the engine of --baseline-ref (old) and in
    this tree (new), and new/old: medians over --rounds subprocess rounds, old and new alternating."""
    import approp

    new_tree = Path(approp.__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = export_tree(args.baseline_ref, Path(tmp))
        state = Path(tmp) / "state.pt"
        torch.save({"model": model.cpu().state_dict(), "x": x.cpu(), "y": y.cpu()}, state)
        runs: dict[str, list] = {"old": [], "new": []}
        for r in range(args.rounds):
            for which in ("old", "new") if r % 2 == 0 else ("new", "old"):
                runs[which].append(run_worker(old_tree if which == "old" else new_tree, state, worker_argv(args)))
    print(f"old: the engine at {args.baseline_ref}; new: {new_tree}; medians of {args.rounds} rounds each\n")
    for t, (base, cases) in enumerate(runs["new"][0]):
        print(f"| case | old × {base} | new × {base} | new / old |\n|---|---:|---:|---:|")
        for name in cases:
            new = statistics.median(run[t][1][name] for run in runs["new"])
            if name not in runs["old"][0][t][1]:
                print(f"| {name} | – | {new:.2f} | – |")
                continue
            old = statistics.median(run[t][1][name] for run in runs["old"])
            print(f"| {name} | {old:.2f} | {new:.2f} | {new / old:.3f} |")
        print()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Returns the parsed command line (see the module docstring)."""
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
    ap.add_argument(
        "--baseline-ref",
        default=None,
        metavar="COMMIT",
        help="also time the engine of this commit's python/ tree in subprocesses, alternating with this one",
    )
    ap.add_argument("--rounds", type=int, default=4, help="with --baseline-ref: subprocess rounds per engine")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: --baseline-ref's subprocess
    args = ap.parse_args(argv)
    precisions = args.precision.split(",")
    if not set(precisions) <= {"fp32", "bf16"}:
        ap.error(f"--precision takes fp32, bf16 or fp32,bf16; got {args.precision!r}")
    if args.rounds < 1:
        ap.error(f"--rounds must be >= 1; got {args.rounds}")
    args.precisions = precisions
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        return worker(args)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=args.arch)).to(device)
    x = torch.rand(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.arch}, batch {args.batch}, eps {args.eps:.4g}, lam {args.lam:g}, {name}, torch {torch.__version__}\n")
    if args.baseline_ref:
        return compare(args, model, x, y)
    for base, rows in measure_tables(args, model, x, y, args.precisions):
        print(table(rows, base))
        print()


if __name__ == "__main__":
    main()
