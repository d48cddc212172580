"""Writes a tiny-budget copy of a preset for tools/gpu_check.sh's CPU fallback and prints its cell keys.

    python tools/gpu_check_preset.py configs/presets/fronts.toml OUT/fronts_tiny.toml
    python tools/gpu_check_preset.py configs/presets/fronts.toml --keys   # the cell keys in run order only

The copy keeps every algorithm and its knob (so the fallback runs the same cells) and shrinks
only the budget: 64 training images (256 held out to monitor), 2 epochs (1 clean warm-up, a 1-epoch ramp), evaluation on
16 test points with AutoAttack on 4, one λ for the parameter attack and the certificates. Its
reference path is made absolute, so the copy works from any folder. Nothing it produces is a
result: it checks that the steps run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import tomli_w
import tomllib

TINY_RUN = {
    "data": {"subset": 64, "val_split": 256, "batch_size": 32, "eval_batch_size": 64, "augment": False},
    "train": {"epochs": 2, "warmup_epochs": 1, "ramp_epochs": 1, "precision": "fp32"},
}
TINY_EVAL = {"n": 16, "autoattack_n": 4, "param_attack": [0.02], "certify": [0.02], "quant": ["int8"]}


def tiny(raw: dict, source: Path) -> dict:
    """Returns the preset `raw` (read from `source`) with the tiny budget above and a CPU device."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    head = dict(out.get("preset", {}))
    head.update(
        name=f"{head.get('name', source.stem)}_tiny",
        device="cpu",
        landscape=False,
        description=f"tiny-budget copy of {source.name} (tools/gpu_check.sh CPU fallback; not a result)",
    )
    if "reference" in head:
        head["reference"] = str((source.parent / head["reference"]).resolve())
    out["preset"] = head
    run = {section: dict(values) for section, values in out.get("run", {}).items()}
    for section, values in TINY_RUN.items():
        run[section] = {**run.get(section, {}), **values}
    out["run"] = run
    algos = {}
    for key, spec in out.get("algorithms", {}).items():
        spec = dict(spec)
        if "ramp_epochs" in spec.get("train", {}):  # a per-algorithm ramp longer than the tiny run
            spec["train"] = {**spec["train"], "ramp_epochs": 1}
        algos[key] = spec
    out["algorithms"] = algos
    out["eval"] = {**out.get("eval", {}), **TINY_EVAL}
    return out


def main(argv: list[str] | None = None) -> int:
    """Returns the exit status after writing the tiny copy (or printing the cell keys with --keys)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("preset", type=Path)
    ap.add_argument("dest", type=Path, nargs="?")
    ap.add_argument("--keys", action="store_true", help="print the preset's algorithm keys in run order and exit")
    args = ap.parse_args(argv)
    try:
        raw = tomllib.loads(args.preset.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        print(f"error: cannot read preset {args.preset}: {err}", file=sys.stderr)
        return 2
    if args.keys:
        print(" ".join(raw.get("preset", {}).get("algorithms", [])))
        return 0
    if args.dest is None:
        ap.error("give DEST (or --keys)")
    args.dest.parent.mkdir(parents=True, exist_ok=True)
    args.dest.write_text(tomli_w.dumps(tiny(raw, args.preset)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
