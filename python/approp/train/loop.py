"""The training loop: one loop for every algorithm, resumable, stopping cleanly on NaN.

    result = fit(cfg, run_dir)

writes run_dir/config.toml (resolved), metrics.jsonl (one JSON line per
epoch), the checkpoint (see approp.checkpoint) after every epoch, and
report.md at the end. Calling fit again on the same run_dir with the same
config resumes after the last completed epoch.

Fast path: the splits stay resident on the training device, batches are cut
and augmented there, the model and its inputs are channels_last
(`train.channels_last`; not with the Julia engine), `train.compile` compiles the model's forward with
torch.compile, and inside an epoch the host syncs with the device only for the
NaN check (every batch on CPU, every `NAN_CHECK_EVERY` batches on GPU).

Under torchrun the same loop trains data-parallel (see approp.distributed):
every rank draws the same batch and trains on its shard, gradients are
averaged by DistributedDataParallel, and only rank 0 evaluates and writes.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import checkpoint as ckpt
from .. import distributed as ddp
from ..config import ConfigError, RunConfig, load_run_config
from ..data import Split, batches, load_splits
from ..metrics import clean_accuracy, verified_accuracy
from ..models import build_model
from ..precision import resolve_precision, training_autocast
from ..progress import Progress
from ..radius import clamp_parameters
from ..rundir import CONFIG, METRICS, read_history
from .epoch_means import EpochMeans
from .schedule import gradient_norm, make_optimizer, make_scheduler, ramp_at
from .strategies import StepContext, Strategy, make_strategy, step_context

NAN_CHECK_EVERY = 50  # batches between NaN checks on GPU: each check is a host sync


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class FitResult:
    run_dir: Path
    model: nn.Module
    history: list[dict[str, Any]]


class LossModule(nn.Module):
    """Returns (loss, logs) of a strategy on a batch; one module so that DDP can wrap the whole step."""

    def __init__(self, model: nn.Module, strategy: Strategy) -> None:
        super().__init__()
        self.model = model
        self.strategy = strategy

    def forward(self, x: torch.Tensor, y: torch.Tensor, ctx: StepContext):
        return self.strategy.loss(self.model, x, y, ctx)


@dataclass
class _Step:
    """What one optimiser step needs: the (possibly DDP-wrapped) loss module, optimiser, schedule."""

    cfg: RunConfig
    model: nn.Module
    step_fn: nn.Module
    strategy: Strategy
    opt: torch.optim.Optimizer
    sched: Any
    dist: ddp.DistInfo
    channels_last: bool


def prepare_model(cfg: RunConfig, device: torch.device) -> tuple[nn.Module, bool]:
    """Returns (model on device, whether inputs go channels_last) per the fast-path flags."""
    model = build_model(cfg.model).to(device)
    # Julia reads the weights' memory as C-contiguous arrays: no channels_last there.
    channels_last = cfg.train.channels_last and cfg.train.engine == "torch"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.train.compile:
        model.compile()  # in place: state_dict names stay those of the plain model
    return model, channels_last


def fit(cfg: RunConfig, run_dir: Path | str, progress: bool = True) -> FitResult:
    """Trains per `cfg` into run_dir (resuming if it holds the same run); returns the result."""
    run_dir = Path(run_dir)
    cfg = _resolve_precision(cfg, run_dir)
    device = torch.device(cfg.train.device)
    _check_device(device)
    dist, device = ddp.setup(device)
    try:
        return _fit(cfg, run_dir, device, dist, progress and dist.is_main)
    finally:
        ddp.teardown(dist)


def _resolve_precision(cfg: RunConfig, run_dir: Path) -> RunConfig:
    """Returns cfg with train.precision "auto" made concrete (recorded so in the run directory)."""
    saved = run_dir / CONFIG
    resumed = load_run_config(saved).train.precision if saved.is_file() else None
    t = cfg.train
    precision = resolve_precision(t.precision, t.device, t.engine, resumed)
    return cfg if precision == t.precision else cfg.replace(train={"precision": precision})


def _fit(cfg: RunConfig, run_dir: Path, device: torch.device, dist: ddp.DistInfo, progress: bool) -> FitResult:
    if cfg.train.engine == "julia":  # refuse before loading data or writing the run directory
        from .. import julia  # late: only when the Julia engine is asked for

        julia.check_julia_run(cfg, dist.world_size)
    torch.manual_seed(cfg.train.seed)
    train, monitor = load_splits(cfg.data, device)  # monitor: validation split, else test
    model, channels_last = prepare_model(cfg, device)
    ddp.sync_batchnorm(model, dist)  # BatchNorm statistics over the whole batch, not this rank's shard
    steps_per_epoch = math.ceil(len(train) / cfg.data.batch_size)
    opt = make_optimizer(model, cfg.optim)
    sched = make_scheduler(opt, cfg.optim, cfg.train.epochs * steps_per_epoch)
    gen = torch.Generator(device=device).manual_seed(cfg.train.seed)
    julia_epochs = None
    if cfg.train.engine == "julia":  # starts Julia: where it cannot, refused before the run dir is written
        from .. import julia

        julia_epochs = julia.JuliaEpochs(cfg, model, world_size=dist.world_size, opt=opt)
    start_epoch = _prepare_run_dir(cfg, run_dir, model, opt, sched, gen, dist)
    strategy = make_strategy(cfg)
    step = _Step(
        cfg, model, ddp.wrap(LossModule(model, strategy), dist, device), strategy, opt, sched, dist, channels_last
    )
    history = read_history(run_dir)
    with Progress(enabled=progress) as bar:
        for epoch in range(start_epoch, cfg.train.epochs):
            t0 = time.perf_counter()
            if julia_epochs is None:
                logs = _train_epoch(step, train, gen, epoch, bar, run_dir)
            else:
                logs = _julia_epoch(cfg, julia_epochs, train, sched, gen, epoch, bar, run_dir)
            if dist.is_main:
                row = _epoch_row(cfg, model, monitor, epoch, logs, time.perf_counter() - t0, sched)
                _save_epoch(cfg, run_dir, model, opt, sched, gen, epoch, row)
                history.append(row)
                bar.log_epoch(row)
            ddp.barrier(dist)
    if dist.is_main:
        from .report import write_train_report  # late: plotting is only needed at the end

        write_train_report(cfg, run_dir, history)
    return FitResult(run_dir, model, history)


def _save_epoch(cfg, run_dir, model, opt, sched, gen, epoch, row) -> None:
    """Writes the checkpoint (the commit point) and then the epoch's metrics line."""
    state = {
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "epoch": epoch,
    }
    ckpt.save_checkpoint(run_dir, model, cfg.model, _meta(cfg, epoch), state)
    with open(run_dir / METRICS, "a") as fh:
        fh.write(json.dumps(row) + "\n")


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
        "precision": cfg.train.precision,
    }


def _prepare_run_dir(cfg, run_dir, model, opt, sched, gen, dist: ddp.DistInfo) -> int:
    """Returns the first epoch to run: 0 for a new run dir, k+1 after a checkpoint at epoch k.

    Rank 0 checks and creates the run dir first; the other ranks then read the same state.
    """
    if dist.is_main:
        first = _open_run_dir(cfg, run_dir, model, opt, sched, gen)
    ddp.barrier(dist)
    if not dist.is_main:
        first = (
            _load_run_state(run_dir, model, opt, sched, gen, cfg.train.epochs) if (run_dir / ckpt.META).exists() else 0
        )
    return first


def _open_run_dir(cfg, run_dir, model, opt, sched, gen) -> int:
    """Returns the first epoch to run after checking run_dir's config (creating the dir if new)."""
    cfg_path = run_dir / CONFIG
    if cfg_path.exists():
        old = load_run_config(cfg_path)
        if old != cfg:
            raise ConfigError(
                f"{run_dir} already holds a run with a different configuration "
                f"(see {cfg_path}); choose another --out directory"
            )
        if (run_dir / ckpt.META).exists():
            first = _load_run_state(run_dir, model, opt, sched, gen, cfg.train.epochs, expect=cfg.model)
            _truncate_history(run_dir, first - 1)
            return first
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(cfg_path)
    (run_dir / METRICS).write_text("")
    return 0


def _load_run_state(run_dir, model, opt, sched, gen, epochs: int, expect=None) -> int:
    """Returns the epoch after the checkpoint's, having loaded its weights and optimiser/RNG state.

    A run whose checkpoint is its last epoch (of `epochs`) loads only the weights: its
    train_state.pt may be gone (results committed without it) and is not needed.
    """
    loaded, meta = ckpt.load_model(run_dir, expect=expect)
    model.load_state_dict(loaded.state_dict())
    if ckpt.is_final(meta, epochs):  # nothing left to train, so no optimiser state is needed
        return meta["epoch"] + 1
    state = ckpt.load_train_state(run_dir)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    return meta["epoch"] + 1


def _truncate_history(run_dir: Path, last_epoch: int) -> None:
    """Drops metric lines written after the last checkpoint (a crash between the two writes)."""
    rows = [r for r in read_history(run_dir) if r["epoch"] <= last_epoch]
    (run_dir / METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))


def _diverged(loss: float, epoch: int, batch: int, run_dir: Path) -> TrainingDiverged:
    kept = f"the checkpoint after epoch {epoch} is kept" if epoch > 0 else "no epoch had completed"
    return TrainingDiverged(
        f"loss became {loss} at epoch {epoch + 1}, batch {batch}; training stopped and "
        f"{kept} in {run_dir}. Lower the learning rate or lengthen the ε/λ ramp."
    )


def _train_epoch(step: _Step, train: Split, gen, epoch, bar, run_dir):
    """Runs one epoch; returns the mean of each logged value over the steps that logged it
    (floats; this rank's shards under DDP)."""
    cfg = step.cfg
    step.model.train()
    steps = math.ceil(len(train) / cfg.data.batch_size)
    means = EpochMeans()
    check_every = 1 if train.y.device.type == "cpu" else NAN_CHECK_EVERY
    task = bar.start_batches(epoch, steps)
    for i, (x, y) in enumerate(batches(train, cfg.data.batch_size, True, gen, cfg.data.augment)):
        ctx = step_context(cfg, ramp_at(epoch * steps + i, steps, cfg.train))
        loss, logs = _optimiser_step(step, x, y, ctx, check=i % check_every == 0 or i == steps - 1)
        if loss is not None:
            raise _diverged(loss, epoch, i + 1, run_dir)
        means.add(logs)  # device tensors: no host sync here
        bar.advance(task)
    out = means.means()
    out["ramp"] = ramp_at((epoch + 1) * steps - 1, steps, cfg.train)
    return out


def _julia_epoch(cfg: RunConfig, runner, train: Split, sched, gen, epoch, bar, run_dir):
    """Runs one epoch in the Julia engine (runner: approp.julia.JuliaEpochs); returns the mean of each
    logged value over the steps that logged it, as _train_epoch does.

    The batches, the ε/λ ramp and the learning rate are the PyTorch engine's; the model holds the
    new weights afterwards. A non-finite loss raises TrainingDiverged with the model unchanged.
    """
    runner.begin(epoch)
    steps = math.ceil(len(train) / cfg.data.batch_size)
    task = bar.start_batches(epoch, steps)
    means = EpochMeans()
    for i, (x, y) in enumerate(batches(train, cfg.data.batch_size, True, gen, cfg.data.augment)):
        ctx = step_context(cfg, ramp_at(epoch * steps + i, steps, cfg.train))
        logs = runner.step(x, y, ctx, sched.get_last_lr()[0])
        if not math.isfinite(logs["loss"]):
            raise _diverged(logs["loss"], epoch, i + 1, run_dir)
        with warnings.catch_warnings():  # the optimiser steps in Julia, so torch sees no opt.step()
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            sched.step()
        means.add(logs)
        bar.advance(task)
    runner.end()
    out = means.means()
    out["ramp"] = ramp_at((epoch + 1) * steps - 1, steps, cfg.train)
    return out


def _optimiser_step(step: _Step, x, y, ctx: StepContext, check: bool):
    """Returns (None, logs) after one step on batch x (B, 3, 32, 32), or (bad loss, {}) if it diverged.

    Under DDP this rank trains on its shard; the loss is rescaled so that the averaged
    gradient is exactly the whole batch's. logs["grad_norm"] is the gradient's global
    L2 norm before clipping (optim.grad_clip clips it; the averaged gradient under DDP).
    With train.precision "bf16" the loss (forward, bounds, attacks) runs under bf16
    autocast; backward and the update stay outside it, on the fp32 parameters.
    """
    n_batch = len(y)
    x, y = ddp.shard(x, step.dist), ddp.shard(y, step.dist)
    if step.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with training_autocast(step.cfg.train.precision, x.device):
        loss, logs = step.step_fn(x, y, ctx)
    if check and not ddp.all_finite(loss, step.dist):
        return loss.item(), {}
    step.opt.zero_grad(set_to_none=True)
    (loss * ddp.shard_scale(len(y), n_batch, step.dist)).backward()
    grad_norm = gradient_norm(step.model, step.cfg.optim.grad_clip)
    step.opt.step()
    step.sched.step()
    step.strategy.after_step(step.model)
    if step.cfg.radius.clamp is not None:
        clamp_parameters(step.model, step.cfg.radius.clamp)
    return None, {"loss": loss.detach(), **logs, "grad_norm": grad_norm.detach()}


def _epoch_row(cfg, model, monitor: Split, epoch, logs, seconds, sched) -> dict[str, Any]:
    """Returns the epoch's metrics line; accuracies are on the validation split where one is held out."""
    bs = cfg.data.eval_batch_size
    return {
        "epoch": epoch,
        **logs,
        "lr": sched.get_last_lr()[0],
        "eval_split": "val" if cfg.data.val_split else "test",
        "clean_acc": clean_accuracy(model, monitor, bs),
        "verified_acc": verified_accuracy(model, monitor, cfg.train.eps, cfg.radius, batch_size=bs),
        "train_seconds": seconds,
    }
