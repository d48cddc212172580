"""Wall time of one training epoch per algorithm, side by side.

    python benchmarks/epoch_time.py --data-dir DIR [--subset 50000] [--device cuda]
                                    [--algos standard,pgd,awp,app-abs,app-tanh]
                                    [--precision fp32,bf16] [--arch cnn4|cnn4_bn|cnn7] [--width 1] [--init default|ibp]

Each algorithm trains one epoch with `approp.train.fit` at full ε and λ (no
warm-up, no ramp, so PGD and the bounds run at their real cost) into a
temporary run directory; the table gives the epoch's training time (the
test-set evaluation after the epoch is not counted) and images per second.
With several precisions (`train.precision`) every algorithm trains its epoch
in each, one after the other, and the table gives both side by side: seconds
per precision, bf16's time over fp32's, and each against the fp32 standard
epoch.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from approp.config import RunConfig
from approp.train import fit


@dataclass(frozen=True)
class Variant:
    """One column of the comparison: a label and the config overrides it needs."""

    label: str
    algo: str
    radius: str = "abs"


VARIANTS = {
    "standard": Variant("standard", "standard"),
    "pgd": Variant("PGD-AT", "pgd"),
    "awp": Variant("AWP", "awp"),
    "app-abs": Variant("APP(abs)", "app", "abs"),
    "app-tanh": Variant("APP(tanh)", "app", "tanh"),
}


def epoch_seconds(variant: Variant, args: argparse.Namespace, out: Path, precision: str = "fp32") -> float:
    """Returns the training wall time of one epoch of `variant` in `precision` (fp32 | bf16), in seconds."""
    cfg = RunConfig().replace(
        model={"arch": args.arch, "width": args.width, "init": args.init},
        data={
            "data_dir": args.data_dir,
            "subset": args.subset,
            "test_subset": 500,
            "batch_size": args.batch_size,
            "augment": True,
        },
        radius={"kind": variant.radius, "lam": args.lam},
        train={
            "algo": variant.algo,
            "epochs": 1,
            "warmup_epochs": 0,
            "ramp_epochs": 0,
            "eps": args.eps,
            "pgd_steps": args.pgd_steps,
            "device": args.device,
            "precision": precision,
        },
    )
    return fit(cfg, out / variant.algo / variant.radius / precision, progress=False).history[-1]["train_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--subset", type=int, default=None, help="training images (default: all 50000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--eps", type=float, default=2 / 255)
    parser.add_argument("--lam", type=float, default=0.01)
    parser.add_argument("--pgd-steps", type=int, default=10)
    parser.add_argument("--algos", default=",".join(VARIANTS))
    parser.add_argument("--precision", default="fp32", help="fp32, bf16 or fp32,bf16 (side by side)")
    parser.add_argument("--arch", default="cnn4", help="model.arch: cnn4, cnn4_bn or cnn7")
    parser.add_argument("--width", type=int, default=1)
    parser.add_argument("--init", default="default", help="model.init: default or ibp")
    args = parser.parse_args()
    precisions = args.precision.split(",")
    if not set(precisions) <= {"fp32", "bf16"}:
        parser.error(f"--precision takes fp32, bf16 or fp32,bf16; got {args.precision!r}")
    chosen = [VARIANTS[a] for a in args.algos.split(",")]
    images = args.subset or 50_000
    with tempfile.TemporaryDirectory() as tmp:
        secs = {(v.label, p): epoch_seconds(v, args, Path(tmp), p) for v in chosen for p in precisions}
    Console(width=160).print(epoch_table(secs, chosen, precisions, images, args))


def epoch_table(
    secs: dict[tuple[str, str], float],
    chosen: list[Variant],
    precisions: list[str],
    images: int,
    args: argparse.Namespace,
) -> Table:
    """Returns the rich table: seconds and images/s per precision, bf16 over fp32, and × the fp32 (else
    first) standard epoch."""
    table = Table(
        title=f"{args.arch} (width {args.width}), one epoch, {images} images, batch {args.batch_size}, {args.device}"
    )
    table.add_column("algorithm", justify="right")
    for p in precisions:
        for col in (f"{p}: s", f"{p}: images/s", f"{p}: × standard {precisions[0]}"):
            table.add_column(col, justify="right")
    both = set(precisions) == {"fp32", "bf16"}
    if both:
        table.add_column("bf16 / fp32", justify="right")
    base = secs.get(("standard", precisions[0]))
    for v in chosen:
        cells = []
        for p in precisions:
            t = secs[v.label, p]
            cells += [f"{t:.1f}", f"{images / t:.0f}", f"{t / base:.2f}" if base else "–"]
        if both:
            cells.append(f"{secs[v.label, 'bf16'] / secs[v.label, 'fp32']:.2f}")
        table.add_row(v.label, *cells)
    return table


if __name__ == "__main__":
    main()
