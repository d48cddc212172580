"""Training throughput (images/s) of standard, APP and AWP training on whatever device runs it.

    python benchmarks/throughput.py                     # the best device present
    python benchmarks/throughput.py --device cpu --batch-size 128 --steps 5
    python benchmarks/throughput.py --compile           # add torch.compile of the forward
    python benchmarks/throughput.py --precision fp32,bf16   # both precisions side by side

Each algorithm runs the training loop's own optimiser step (approp.train.loop)
on synthetic CIFAR-sized data resident on the device, at full ε and λ (the
cost after the ramp), after a few warm-up steps; on CUDA the timing
synchronises once per measurement, not per step. With several precisions
(`train.precision`) each algorithm runs in each, interleaved, and the table
gives images/s per precision and bf16's speed-up over fp32. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch

from approp import distributed as ddp
from approp.config import RunConfig
from approp.formatting import table_lines
from approp.train import make_strategy
from approp.train.loop import LossModule, _optimiser_step, _Step, prepare_model
from approp.train.schedule import make_optimizer, make_scheduler
from approp.train.strategies import StepContext

ALGOS = {
    "standard": {"train": {"algo": "standard"}},
    "APP(tanh)": {"train": {"algo": "app"}, "radius": {"kind": "tanh"}},
    "APP(abs)": {"train": {"algo": "app"}, "radius": {"kind": "abs"}},
    "AWP": {"train": {"algo": "awp"}},
}


@dataclass(frozen=True)
class Measurement:
    """Images per second of one algorithm, and the settings it ran with."""

    algo: str
    precision: str
    images_per_s: float
    batch_size: int
    steps: int


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    label: str, device: torch.device, batch_size: int, steps: int, warmup: int, compile_: bool, precision: str = "fp32"
) -> Measurement:
    """Returns the training throughput of one algorithm on `device` in `precision` (fp32 | bf16)."""
    over = ALGOS[label]
    cfg = RunConfig().replace(
        train={"device": str(device), "compile": compile_, "eps": 2 / 255, "precision": precision, **over["train"]},
        radius={"lam": 0.01, **over.get("radius", {})},
    )
    model, channels_last = prepare_model(cfg, device)
    strategy = make_strategy(cfg)
    opt = make_optimizer(model, cfg.optim)
    step = _Step(
        cfg,
        model,
        LossModule(model, strategy),
        strategy,
        opt,
        make_scheduler(opt, cfg.optim, warmup + steps),
        ddp.DistInfo(),
        channels_last,
    )
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(batch_size, 3, 32, 32, generator=gen, device=device)  # (B, 3, 32, 32)
    y = torch.randint(0, 10, (batch_size,), generator=gen, device=device)  # (B,)
    ctx = StepContext(cfg.train.eps, cfg.radius.lam, cfg.train.kappa, cfg.radius, cfg.train)
    model.train()
    for _ in range(warmup):
        _optimiser_step(step, x, y, ctx, check=False)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        _optimiser_step(step, x, y, ctx, check=False)
    _sync(device)
    return Measurement(label, precision, batch_size * steps / (time.perf_counter() - t0), batch_size, steps)


def device_name(device: torch.device) -> str:
    """Returns a human-readable name of the device (GPU model, or CPU with its thread count)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 512 on CUDA, 128 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 50 on CUDA, 5 on CPU)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model's forward")
    parser.add_argument("--algos", default=",".join(ALGOS), help="comma-separated subset of " + ", ".join(ALGOS))
    parser.add_argument("--precision", default="fp32", help="fp32, bf16 or fp32,bf16 (side by side)")
    args = parser.parse_args()
    precisions = args.precision.split(",")
    if not set(precisions) <= {"fp32", "bf16"}:
        parser.error(f"--precision takes fp32, bf16 or fp32,bf16; got {args.precision!r}")
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    batch = args.batch_size or (512 if gpu else 128)
    steps = args.steps or (50 if gpu else 5)
    rows = {
        (a, p): measure(a, device, batch, steps, args.warmup, args.compile, p)
        for a in args.algos.split(",")
        for p in precisions
    }
    print(
        f"Training throughput on {device_name(device)}, batch {batch}, {steps} timed steps"
        f"{', torch.compile' if args.compile else ''}:\n"
    )
    print(throughput_table(rows, args.algos.split(","), precisions))


def throughput_table(rows: dict[tuple[str, str], Measurement], algos: list[str], precisions: list[str]) -> str:
    """Returns a Markdown table of images/s per algorithm and precision (and bf16 over fp32 where both ran)."""
    both = precisions == ["fp32", "bf16"] or precisions == ["bf16", "fp32"]
    header = ["algorithm", *(f"images/s {p}" for p in precisions), *(["bf16 speed-up"] if both else [])]
    body = [
        [
            a,
            *(f"{rows[a, p].images_per_s:.0f}" for p in precisions),
            *([f"{rows[a, 'bf16'].images_per_s / rows[a, 'fp32'].images_per_s:.2f}×"] if both else []),
        ]
        for a in algos
    ]
    return "\n".join(table_lines(header, body, ["---"] + ["---:"] * (len(precisions) + both)))


if __name__ == "__main__":
    main()
