"""Wall time of one training epoch per algorithm, side by side.

    python benchmarks/epoch_time.py --data-dir DIR [--subset 50000] [--device cuda] [--algos standard,pgd,awp,app-abs,app-tanh]
                                    [--arch cnn4|cnn4_bn|cnn7] [--width 1] [--init default|ibp]

Each algorithm trains one epoch with `approp.train.fit` at full ε and λ (no
warm-up, no ramp, so PGD and the bounds run at their real cost) into a
temporary run directory; the table gives the epoch's training time (the
test-set evaluation after the epoch is not counted) and images per second.
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


def epoch_seconds(variant: Variant, args: argparse.Namespace, out: Path) -> float:
    """Returns the training wall time of one epoch of `variant` in seconds."""
    cfg = RunConfig().replace(
        model={"arch": args.arch, "width": args.width, "init": args.init},
        data={"data_dir": args.data_dir, "subset": args.subset, "test_subset": 500,
              "batch_size": args.batch_size, "augment": True},
        radius={"kind": variant.radius, "lam": args.lam},
        train={"algo": variant.algo, "epochs": 1, "warmup_epochs": 0, "ramp_epochs": 0,
               "eps": args.eps, "pgd_steps": args.pgd_steps, "device": args.device},
    )
    return fit(cfg, out / variant.algo / variant.radius, progress=False).history[-1]["train_seconds"]


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
    parser.add_argument("--arch", default="cnn4", help="model.arch: cnn4, cnn4_bn or cnn7")
    parser.add_argument("--width", type=int, default=1)
    parser.add_argument("--init", default="default", help="model.init: default or ibp")
    args = parser.parse_args()
    chosen = [VARIANTS[a] for a in args.algos.split(",")]
    images = args.subset or 50_000
    table = Table(title=f"{args.arch} (width {args.width}), one epoch, {images} images, "
                        f"batch {args.batch_size}, {args.device}")
    for col in ("algorithm", "seconds", "images/s", "× standard"):
        table.add_column(col, justify="right")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for variant in chosen:
            secs = epoch_seconds(variant, args, Path(tmp))
            base = secs if variant.algo == "standard" else base
            ratio = f"{secs / base:.1f}" if base else "–"
            table.add_row(variant.label, f"{secs:.1f}", f"{images / secs:.0f}", ratio)
    Console().print(table)


if __name__ == "__main__":
    main()
