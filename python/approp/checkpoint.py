"""Checkpoints: the midpoint network as plain named arrays, plus JSON metadata.

A run directory holds

    model.safetensors   the midpoint parameters and BatchNorm's running statistics,
                        {state-dict name: array} (float32; the batch counters int64)
    checkpoint.json     architecture, algorithm, radius, ε, λ, epoch, sha256 of the weights
    train_state.pt      optimiser / scheduler / RNG state, for resuming

Both engines read and write the same format. Every file is written to a
temporary name and renamed into place, and checkpoint.json goes last, so an
interrupted write leaves the previous checkpoint intact. The sha256 in the
metadata catches a truncated or corrupt weight file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .config import ModelConfig, RadiusConfig
from .models import build_model
from .rundir import META, WEIGHTS, atomic_json, atomic_write
from .rundir import TRAIN_STATE as STATE  # approp.checkpoint.STATE stays the training state's name

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A missing, unreadable or mismatched checkpoint; the message names the file."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stored(value: torch.Tensor) -> torch.Tensor:
    """Returns a state-dict entry as stored: floats as float32; integers (BatchNorm's step count) as they are."""
    value = value.detach().to("cpu")
    return (value.to(torch.float32) if value.is_floating_point() else value).contiguous()


def save_checkpoint(
    run_dir: Path,
    model: nn.Module,
    model_cfg: ModelConfig,
    meta: dict[str, Any],
    train_state: dict[str, Any] | None = None,
) -> None:
    """Writes weights, optional training state, then metadata (the commit point) into run_dir."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: _stored(v) for k, v in model.state_dict().items()}
    atomic_write(run_dir / WEIGHTS, lambda p: save_file(tensors, str(p)))
    if train_state is not None:
        atomic_write(run_dir / STATE, lambda p: torch.save(train_state, p))
    full = {
        "format": FORMAT_VERSION,
        "model": asdict(model_cfg),
        "sha256": _sha256(run_dir / WEIGHTS),
        **meta,
    }
    atomic_json(run_dir / META, full)


def read_meta(run_dir: Path) -> dict[str, Any]:
    """Returns the checkpoint metadata of run_dir, or raises CheckpointError."""
    path = Path(run_dir) / META
    if not path.is_file():
        raise CheckpointError(f"no checkpoint in {run_dir} ({META} is missing): train into it first")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is corrupt: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION or "model" not in meta:
        raise CheckpointError(f"{path} is not an approp checkpoint (format {FORMAT_VERSION})")
    return meta


def is_final(meta: dict[str, Any], epochs: int) -> bool:
    """Returns whether a checkpoint's metadata is that of the last of `epochs` epochs (training is over)."""
    return meta["epoch"] + 1 >= epochs


def load_weights(run_dir: Path, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Returns the named weight arrays of run_dir after checking them against the metadata hash."""
    path = Path(run_dir) / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    if meta.get("sha256") and _sha256(path) != meta["sha256"]:
        raise CheckpointError(f"{path} is corrupt: its sha256 does not match {META}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is unreadable: {err}") from None


def load_model(
    run_dir: Path, device: str | torch.device = "cpu", expect: ModelConfig | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Returns (model with the checkpoint's midpoint weights, metadata), in eval mode.

    Eval mode: BatchNorm layers use the running statistics the checkpoint carries.

    `expect`, if given, must match the checkpoint's architecture.
    """
    meta = read_meta(run_dir)
    try:
        model_cfg = ModelConfig(**meta["model"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{run_dir}/{META} names an unknown architecture: {err}") from None
    if expect is not None and expect != model_cfg:
        raise CheckpointError(
            f"{run_dir} holds a {model_cfg.arch} of width {model_cfg.width}, "
            f"but {expect.arch} of width {expect.width} was expected"
        )
    model = build_model(model_cfg)
    weights = load_weights(run_dir, meta)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{run_dir}/{WEIGHTS} does not fit {model_cfg}: {err}") from None
    return model.to(device).eval(), meta


def load_train_state(run_dir: Path) -> dict[str, Any]:
    """Returns the saved optimiser/scheduler/RNG state of run_dir."""
    path = Path(run_dir) / STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: the run cannot resume") from None
    except Exception as err:  # torch.load raises many types on a corrupt file
        raise CheckpointError(f"{path} is unreadable: {err}") from None


def radius_from_meta(meta: dict[str, Any]) -> RadiusConfig:
    """Returns the RadiusConfig a checkpoint was trained with."""
    return RadiusConfig(**meta["radius"])
