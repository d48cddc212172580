"""APP training steps run by the Julia engine, driven by the training loop (approp.train.loop).

The model and optimiser state live in Julia between steps; batches, the ε/λ
ramp and the learning-rate schedule come from the loop, so both engines see
the same data order and schedule. After each epoch the parameters are copied
back into the PyTorch model, which the loop evaluates and checkpoints in the
shared format, and the Julia optimiser state (momentum buffer, or Adam's
moments and step) into the PyTorch optimiser's state under PyTorch's own
names, so train_state.pt carries it as it does for the PyTorch engine. On
resume it goes back into Julia; a checkpoint without it (written before the
state was carried) is refused rather than resumed with a fresh optimiser.

Import order: torch is already imported here, so juliacall has to have been
imported earlier, by `approp.julia.preload()` (the approp command calls it
for --engine julia); otherwise juliacall warns that the process may segfault.
A non-finite batch loss comes back from Julia with the model unchanged; the
loop then ends the epoch early and raises TrainingDiverged, so the last good
checkpoint stays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import ConfigError, RunConfig
from .convert import RADIUS_KINDS

RESIDUAL = ("resnet20", "preact_resnet18")  # architectures with additions: the torch engine only


def check_julia_run(cfg: RunConfig, world_size: int = 1) -> None:
    """Raises ConfigError where the Julia engine cannot train this run (called before anything is written)."""
    if cfg.train.algo != "app":
        raise ConfigError(f"the Julia engine trains only algo 'app'; got {cfg.train.algo!r}")
    if cfg.model.arch in RESIDUAL:  # APProp has no addition node, nor BatchNorm
        raise ConfigError(f"the Julia engine has no residual networks: it trains only model.arch 'cnn4'; "
                          f"got {cfg.model.arch!r} (use engine 'torch')")
    if cfg.model.arch != "cnn4":  # APProp holds CNN4 without BatchNorm only
        raise ConfigError(f"the Julia engine trains only model.arch 'cnn4'; got {cfg.model.arch!r}")
    if cfg.radius.kind not in RADIUS_KINDS:  # APProp.RadiusSpec would throw inside Julia
        raise ConfigError(f"the Julia engine has radius kinds {', '.join(RADIUS_KINDS)}; got "
                          f"{cfg.radius.kind!r}: use engine 'torch'")
    if cfg.train.reg_weight > 0:
        raise ConfigError("the Julia engine has no warm-up regularisers; "
                          "set train.reg_weight = 0 or use engine 'torch'")
    if cfg.optim.grad_clip is not None:
        raise ConfigError("the Julia engine does not clip gradients; "
                          "unset optim.grad_clip or use engine 'torch'")
    if world_size > 1:  # every rank would train the whole batch, the same steps
        raise ConfigError(
            "train.engine 'julia' runs in one process; got a torchrun world size of "
            f"{world_size}: use engine 'torch' for data-parallel training"
        )


class JuliaEpochs:
    """APP training in Julia, one epoch at a time: `begin(epoch)`, `step(...)` per batch, `end()`."""

    def __init__(
        self, cfg: RunConfig, model: nn.Module, world_size: int = 1, opt: torch.optim.Optimizer | None = None
    ) -> None:
        """`opt`: the loop's PyTorch optimiser, never stepped here: it carries the Julia state to disk."""
        check_julia_run(cfg, world_size)
        from .. import julia  # the package, late: its get_engine is looked up (and replaceable) per call

        self.cfg, self.model, self.opt = cfg, model, opt
        try:
            self.engine = julia.get_engine(cfg.train.device)
        except julia.JuliaUnavailableError as err:
            raise ConfigError(f"--engine julia is unavailable: {err}") from None
        self.trainer = None

    def _params(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}

    def begin(self, epoch: int) -> None:
        """Starts the Julia trainer from the model's weights at the first epoch run (resumed: with its optimiser state)."""
        if self.trainer is not None:
            return
        o = self.cfg.optim
        self.trainer = self.engine.trainer(
            self._params(), self.cfg.radius, optimizer=o.name, lr=o.lr, momentum=o.momentum,
            weight_decay=o.weight_decay, kappa=self.cfg.train.kappa, margin=self.cfg.train.margin_loss,
        )
        if epoch > 0:  # resumed: continue with the saved optimiser state
            self._restore_optimizer_state(epoch)

    def step(self, x: torch.Tensor, y: torch.Tensor, ctx: Any, lr: float) -> dict[str, float]:
        """Returns the logs of one optimiser step in Julia on the batch x (B, C, H, W), y (B,).

        ctx: the loop's StepContext (its eps, lam and kappa for this step); lr: this step's rate.
        """
        return self.trainer.step_logs(x.cpu().numpy(), y.cpu().numpy(), ctx.eps, lam=ctx.lam, lr=lr, kappa=ctx.kappa)

    def end(self) -> None:
        """Copies the Julia weights into the PyTorch model and the optimiser state into the PyTorch optimiser."""
        state = {k: torch.from_numpy(v) for k, v in self.trainer.params().items()}
        self.model.load_state_dict(state)
        self._save_optimizer_state()

    def _named_params(self) -> dict[str, nn.Parameter]:
        return dict(self.model.named_parameters())

    def _save_optimizer_state(self) -> None:
        """Copies the Julia optimiser state into self.opt.state, keyed as torch.optim keeps it."""
        if self.opt is None or not self.trainer.slots:
            return
        step, slots = self.trainer.optimizer_state()
        for name, p in self._named_params().items():
            entry = {s: torch.from_numpy(slots[s][name]).to(p.device, p.dtype) for s in slots}
            if self.cfg.optim.name == "adam":
                entry["step"] = torch.tensor(float(step))  # torch.optim.Adam's scalar step
            self.opt.state[p] = entry

    def _restore_optimizer_state(self, epoch: int) -> None:
        """Hands the optimiser state loaded from train_state.pt to Julia; refuses where it is absent."""
        if self.opt is None or not self.trainer.slots:
            return
        named = self._named_params()
        if not all(set(self.trainer.slots) <= set(self.opt.state.get(p, {})) for p in named.values()):
            raise ConfigError(
                f"cannot resume this Julia run at epoch {epoch + 1}: its train_state.pt holds no "
                f"optimiser state ({', '.join(self.trainer.slots)}), so it was written before the "
                "Julia engine saved it, and a fresh optimiser would take different steps than the "
                "uninterrupted run; train again into a new --out directory"
            )
        slots = {s: {n: self.opt.state[p][s].detach().cpu().numpy() for n, p in named.items()}
                 for s in self.trainer.slots}
        step = self.opt.state[next(iter(named.values()))].get("step", 0)
        self.trainer.load_optimizer_state(int(step), slots)
