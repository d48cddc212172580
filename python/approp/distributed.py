"""Data-parallel training helpers: process group from torchrun's environment, batch shards, rank-0 I/O.

Under `torchrun --nproc_per_node N approp train ...` every rank builds the same
model from the same seed and draws the same shuffled, augmented batch from the
same generator; each rank then keeps a disjoint shard of it (rows
rank, rank + N, ...). Bounds and losses are per-sample means, so scaling each
rank's shard mean by n_rank·N/B before DistributedDataParallel averages the
gradients gives exactly the gradient of the whole batch's mean. BatchNorm is
the one layer that mixes samples: `sync_batchnorm` makes every BatchNorm in
training mode normalise by the whole batch's statistics, gathered across the
ranks with a differentiable all-reduce (torch's SyncBatchNorm refuses CPU
tensors), so networks with BatchNorm keep the single-process result too. Only
rank 0 writes the run directory.
"""

from __future__ import annotations

import os
import types
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

_BatchNorm = nn.modules.batchnorm._BatchNorm
SYNCED = "_approp_synced"  # attribute set on a BatchNorm layer whose batch statistics span all ranks


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the group: rank, world size and local rank (GPU index on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Returns True when more than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Returns True on the rank that writes files and prints progress."""
        return self.rank == 0


def from_env() -> DistInfo:
    """Returns the DistInfo torchrun's RANK / WORLD_SIZE / LOCAL_RANK describe (single process if unset)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Returns (DistInfo, the device this rank uses) after joining the process group if launched under torchrun.

    CUDA ranks use NCCL and GPU `local_rank`; CPU ranks use gloo.
    """
    info = from_env()
    if not info.enabled:
        return info, device
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device


def teardown(info: DistInfo) -> None:
    """Leaves the process group if this process joined one."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Waits for every rank (no-op in a single process)."""
    if info.enabled:
        dist.barrier()


def shard(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Returns this rank's rows x[rank::world] of a batch (B, ...) → (≈B/world, ...)."""
    return x if not info.enabled else x[info.rank :: info.world_size]


def shard_scale(n_local: int, n_batch: int, info: DistInfo) -> float:
    """Returns the factor that turns a shard-mean loss into one whose DDP-averaged gradient is the batch mean's."""
    return 1.0 if not info.enabled else n_local * info.world_size / n_batch


def all_finite(loss: torch.Tensor, info: DistInfo) -> bool:
    """Returns whether the loss is finite on every rank (one host sync)."""
    ok = torch.isfinite(loss.detach()).to(torch.float32)
    if info.enabled:
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item())


def wrap(module: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """Returns the module wrapped in DistributedDataParallel when several ranks train, else unchanged."""
    if not info.enabled:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)


def sync_batchnorm(model: nn.Module, info: DistInfo) -> nn.Module:
    """Returns `model` with every BatchNorm layer normalising by statistics over all ranks' shards in
    training mode (in place; no-op in one process). Eval mode and the state dict are unchanged."""
    if info.enabled:
        for layer in model.modules():
            if isinstance(layer, _BatchNorm):
                setattr(layer, SYNCED, True)
                layer.forward = types.MethodType(_synced_forward, layer)
    return model


def batch_var_mean(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (biased variance, mean), each (C,), of x (B, C) or (B, C, H, W) per channel: over the whole
    batch, every rank's shard, where `layer` was synced (differentiable), else over x alone."""
    dims = [0, *range(2, x.dim())]
    if not getattr(layer, SYNCED, False):
        return torch.var_mean(x, dim=dims, correction=0)
    return _global_var_mean(x, dims)[:2]


class _AllReduceSum(torch.autograd.Function):
    """Sum of a tensor over all ranks; its gradient is the sum of every rank's upstream gradient, since
    each rank's loss depends on the sum (torch.distributed.nn.functional.all_reduce, deprecated)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


def _global_var_mean(x: torch.Tensor, dims: list[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Returns (biased variance (C,), mean (C,), element count per channel) over all ranks' x, in fp32.

    Two passes (the mean, then squared deviations from it) rather than E[x²] − E[x]², which cancels.
    """
    xf = x.float()
    n = torch.tensor([xf.numel() // xf.shape[1]], dtype=torch.float32, device=x.device)
    count = int(_AllReduceSum.apply(n).item())
    mean = _AllReduceSum.apply(xf.sum(dims)) / count  # (C,)
    shape = [1, -1] + [1] * (x.dim() - 2)
    var = _AllReduceSum.apply((xf - mean.view(shape)).square().sum(dims)) / count
    return var, mean, count


def _synced_forward(self: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Returns BatchNorm of x (B, C, ...) with the whole batch's statistics in training mode, updating the
    running statistics as torch does (unbiased variance, momentum or cumulative average)."""
    if not self.training:
        return type(self).forward(self, x)
    var, mean, count = _global_var_mean(x, [0, *range(2, x.dim())])
    if self.track_running_stats:
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
            unbiased = var * count / max(count - 1, 1)
            self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
    shape = [1, -1] + [1] * (x.dim() - 2)
    out = (x.float() - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
    if self.affine:
        out = out * self.weight.view(shape) + self.bias.view(shape)
    return out.to(x.dtype) if x.dtype in (torch.bfloat16, torch.float16) else out
