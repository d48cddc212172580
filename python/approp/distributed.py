"""Data-parallel training helpers: process group from torchrun's environment, batch shards, rank-0 I/O.

Under `torchrun --nproc_per_node N approp train ...` every rank builds the same
model from the same seed and draws the same shuffled, augmented batch from the
same generator; each rank then keeps a disjoint shard of it (rows
rank, rank + N, ...). Bounds and losses are per-sample means, so scaling each
rank's shard mean by n_rank·N/B before DistributedDataParallel averages the
gradients gives exactly the gradient of the whole batch's mean. Only rank 0
writes the run directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


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
