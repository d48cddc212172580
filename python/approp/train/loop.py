"""The training loop: one loop for every algorithm, resumable, stopping cleanly on NaN.

    result = fit(cfg, run_dir)

writes run_dir/config.toml (resolved), metrics.jsonl (one JSON line per
epoch), the checkpoint (see approp.checkpoint) after every epoch, and
report.md at the end. Calling fit again on the same run_dir with the same
config resumes after the last completed epoch.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import checkpoint as ckpt
from ..config import ConfigError, RunConfig
from ..data import Split, batches, load_splits
from ..metrics import clean_accuracy, verified_accuracy
from ..models import build_model
from ..progress import Progress
from ..radius import clamp_parameters
from .schedule import make_optimizer, make_scheduler, ramp
from .strategies import StepContext, Strategy, make_strategy

CONFIG = "config.toml"
METRICS = "metrics.jsonl"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class FitResult:
    run_dir: Path
    model: nn.Module
    history: list[dict[str, Any]]


def fit(cfg: RunConfig, run_dir: Path | str, progress: bool = True) -> FitResult:
    """Trains per `cfg` into run_dir (resuming if it holds the same run); returns the result."""
    run_dir = Path(run_dir)
    device = torch.device(cfg.train.device)
    _check_device(device)
    torch.manual_seed(cfg.train.seed)
    train, test = load_splits(cfg.data, device)
    model = build_model(cfg.model).to(device)
    steps_per_epoch = math.ceil(len(train) / cfg.data.batch_size)
    opt = make_optimizer(model, cfg.optim)
    sched = make_scheduler(opt, cfg.optim, cfg.train.epochs * steps_per_epoch)
    gen = torch.Generator(device=device).manual_seed(cfg.train.seed)
    start_epoch = _prepare_run_dir(cfg, run_dir, model, opt, sched, gen)
    strategy = make_strategy(cfg)
    julia_epochs = None
    if cfg.train.engine == "julia":
        from .julia_runner import JuliaEpochs

        julia_epochs = JuliaEpochs(cfg, model)
    history = _read_history(run_dir)
    with Progress(enabled=progress) as bar:
        for epoch in range(start_epoch, cfg.train.epochs):
            t0 = time.perf_counter()
            if julia_epochs is None:
                logs = _train_epoch(cfg, model, strategy, train, opt, sched, gen, epoch, bar, run_dir)
            else:
                logs = julia_epochs.run_epoch(train, sched, gen, epoch, bar)
                if "diverged_batch" in logs:
                    raise _diverged(logs["loss"], epoch, logs["diverged_batch"], run_dir)
            row = _epoch_row(cfg, model, test, epoch, logs, time.perf_counter() - t0, sched)
            state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "generator": gen.get_state(), "torch_rng": torch.get_rng_state(), "epoch": epoch}
            ckpt.save_checkpoint(run_dir, model, cfg.model, _meta(cfg, epoch), state)
            with open(run_dir / METRICS, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            history.append(row)
            bar.log_epoch(row)
    from ..report import write_train_report  # late: plotting is only needed at the end

    write_train_report(cfg, run_dir, history)
    return FitResult(run_dir, model, history)


def _check_device(device: torch.device) -> None:
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available; use --device cpu")


def _meta(cfg: RunConfig, epoch: int) -> dict[str, Any]:
    return {
        "algo": cfg.train.algo,
        "radius": cfg.to_dict()["radius"],
        "eps": cfg.train.eps,
        "lam": cfg.radius.lam,
        "epoch": epoch,
        "epochs": cfg.train.epochs,
        "engine": cfg.train.engine,
    }


def _prepare_run_dir(cfg, run_dir, model, opt, sched, gen) -> int:
    """Returns the first epoch to run: 0 for a new run dir, k+1 after a checkpoint at epoch k."""
    cfg_path = run_dir / CONFIG
    if cfg_path.exists():
        old = RunConfig.load(cfg_path)
        if old != cfg:
            raise ConfigError(
                f"{run_dir} already holds a run with a different configuration "
                f"(see {cfg_path}); choose another --out directory"
            )
        if (run_dir / ckpt.META).exists():
            loaded, meta = ckpt.load_model(run_dir, expect=cfg.model)
            model.load_state_dict(loaded.state_dict())
            state = ckpt.load_train_state(run_dir)
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            _truncate_history(run_dir, meta["epoch"])
            return meta["epoch"] + 1
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(cfg_path)
    (run_dir / METRICS).write_text("")
    return 0


def _read_history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_history(run_dir: Path, last_epoch: int) -> None:
    """Drops metric lines written after the last checkpoint (a crash between the two writes)."""
    rows = [r for r in _read_history(run_dir) if r["epoch"] <= last_epoch]
    (run_dir / METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))


def _diverged(loss: float, epoch: int, batch: int, run_dir: Path) -> TrainingDiverged:
    kept = f"the checkpoint after epoch {epoch} is kept" if epoch > 0 else "no epoch had completed"
    return TrainingDiverged(
        f"loss became {loss} at epoch {epoch + 1}, batch {batch}; training stopped and "
        f"{kept} in {run_dir}. Lower the learning rate or lengthen the ε/λ ramp."
    )


def _train_epoch(cfg, model, strategy: Strategy, train: Split, opt, sched, gen, epoch, bar, run_dir):
    """Runs one epoch; returns the mean of each logged value (floats)."""
    model.train()
    steps = math.ceil(len(train) / cfg.data.batch_size)
    sums: dict[str, torch.Tensor] = {}
    check_every = 1 if train.y.device.type == "cpu" else 50  # a NaN check is a host sync on GPU
    task = bar.start_batches(epoch, steps)
    for i, (x, y) in enumerate(batches(train, cfg.data.batch_size, True, gen, cfg.data.augment)):
        r = ramp(epoch * steps + i, steps, cfg.train.ramp_epochs, cfg.train.warmup_epochs)
        kappa = 1 - r * (1 - cfg.train.kappa)
        ctx = StepContext(cfg.train.eps * r, cfg.radius.lam * r, kappa, cfg.radius, cfg.train)
        loss, logs = strategy.loss(model, x, y, ctx)
        if (i % check_every == 0 or i == steps - 1) and not torch.isfinite(loss).item():
            raise _diverged(loss.item(), epoch, i + 1, run_dir)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        strategy.after_step(model)
        if cfg.radius.clamp is not None:
            clamp_parameters(model, cfg.radius.clamp)
        logs = {"loss": loss.detach(), **logs}
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + v
        bar.advance(task)
    out = {k: (v / steps).item() for k, v in sums.items()}
    out["ramp"] = ramp((epoch + 1) * steps - 1, steps, cfg.train.ramp_epochs, cfg.train.warmup_epochs)
    return out


def _epoch_row(cfg, model, test: Split, epoch, logs, seconds, sched) -> dict[str, Any]:
    bs = cfg.data.eval_batch_size
    return {
        "epoch": epoch,
        **logs,
        "lr": sched.get_last_lr()[0],
        "clean_acc": clean_accuracy(model, test, bs),
        "verified_acc": verified_accuracy(model, test, cfg.train.eps, cfg.radius, batch_size=bs),
        "train_seconds": seconds,
    }
