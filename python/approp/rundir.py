"""Run-directory I/O: the files a run directory holds, one atomic write, one fingerprint rule.

A run directory (`approp train --out RUN`) holds:

    config.toml, metrics.jsonl, report.md, curves.png       training (approp.train)
    model.safetensors, checkpoint.json, train_state.pt      the checkpoint (approp.checkpoint)
    eval_state.json, eval.json, eval_param_attack.safetensors, statistical.png   evaluation
    landscape.json                                          the loss landscape's cache
    certify.json, certify.md                                `approp certify` (any output folder)

Every file is written atomically (atomic_write: a temporary file in the same folder, then
os.replace), so an interrupted write leaves the previous version intact.

Fingerprints: a result is reused only under the key of what made it, and a key leaves out
what holds its neutral value, so that an option added later (neutral by default) does not
make every finished result look stale. Config fields added after results existed are
listed in NEUTRAL_FIELDS with the value that reproduces those results; evaluation settings
are compared with their defaults; stages that are off leave their settings out.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
REPORT = "report.md"
CURVES = "curves.png"
WEIGHTS = "model.safetensors"
META = "checkpoint.json"
TRAIN_STATE = "train_state.pt"
EVAL_STATE = "eval_state.json"
EVAL_RESULTS = "eval.json"
EVAL_PARAM_STATE = "eval_param_attack.safetensors"
STATISTICAL_PLOT = "statistical.png"
LANDSCAPE = "landscape.json"
CERTIFY_RESULTS = "certify.json"
CERTIFY_REPORT = "certify.md"


def atomic_write(path: Path | str, content: str | Callable[[Path], object]) -> Path:
    """Returns `path` after writing it atomically: text, or what `content(tmp)` writes to the temporary path."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if callable(content):
        content(tmp)
    else:
        tmp.write_text(content)
    os.replace(tmp, path)
    return path


def atomic_json(path: Path | str, obj: Any, indent: int | None = 2) -> Path:
    """Returns `path` after writing `obj` as JSON atomically (indent None: one line)."""
    return atomic_write(path, json.dumps(obj, indent=indent))


# Config fields added after presets had finished cells, each with the value that reproduces
# what those cells ran: a cell holding that value hashes as it did before the field existed,
# so a new option does not make every finished cell look unfinished. (Not the field's current
# default: a default that changes later must change the fingerprint of cells that use it.)
NEUTRAL_FIELDS: dict[tuple[str, str], object] = {
    ("model", "init"): "default",
    ("train", "ramp"): "linear",
    ("train", "kappa_schedule"): "gowal",
    ("train", "reg_weight"): 0.0,
    ("train", "reg_tol"): 0.5,
    ("train", "precision"): "fp32",
}


def without_neutral(values: Mapping[str, Any], neutral: Mapping[str, Any]) -> dict[str, Any]:
    """Returns a copy of `values` without the entries that equal their value in `neutral`."""
    return {k: v for k, v in values.items() if k not in neutral or v != neutral[k]}


def comparable_config(config: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Returns a copy of RunConfig.to_dict() without the NEUTRAL_FIELDS that hold their neutral value."""
    return {
        section: without_neutral(values, {k: v for (s, k), v in NEUTRAL_FIELDS.items() if s == section})
        for section, values in config.items()
    }


def fingerprint(config: dict[str, dict[str, Any]], settings: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    """Returns the 16-hex-digit hash of a training config (RunConfig.to_dict()) and the evaluation
    settings that differ from their defaults: what defines a result of an experiment's cell."""
    blob = json.dumps(
        {"config": comparable_config(config), "eval": without_neutral(settings, defaults)}, sort_keys=True, default=list
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def results_key(meta: Mapping[str, Any], settings: dict[str, Any], off: Iterable[str] = (), **extra: Any) -> dict:
    """Returns the key of results derived from a checkpoint: its weights' sha256, `extra`, and the
    settings without the names in `off` (the settings of stages that are off, so that results
    saved before those stages existed stay valid)."""
    dropped = set(off)
    return {"sha256": meta.get("sha256"), **extra, "config": {k: v for k, v in settings.items() if k not in dropped}}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Returns the JSON objects of a JSON-lines file in order, blank lines skipped; [] if it does not exist."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """Returns the run's per-epoch metrics lines (METRICS in run_dir), oldest first; [] before the first epoch."""
    return read_jsonl(run_dir / METRICS)
