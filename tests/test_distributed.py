"""Data-parallel training: 2 gloo processes on the CPU give the single-process result."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from approp import distributed as ddp
from approp.checkpoint import load_model
from approp.config import RunConfig
from approp.train import fit


def tiny_cfg(cifar_dir, algo: str, **optim) -> RunConfig:
    # Adam magnifies float summation-order differences; 5e-5 is rounding, not a bug.
    # batch 25 over 2 ranks: shards of 13 and 12, and a short last batch (64 = 25 + 25 + 14)
    return RunConfig().replace(
        data={"data_dir": str(cifar_dir), "subset": 64, "test_subset": 32, "batch_size": 25, "augment": True},
        optim={"name": "adam", "lr": 1e-3, **optim},
        train={"algo": algo, "epochs": 1, "eps": 0.004, "warmup_epochs": 0, "ramp_epochs": 1},
        radius={"kind": "tanh", "lam": 0.01},
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg: RunConfig, run_dir: str) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    fit(cfg, run_dir, progress=False)


class TestHelpers:
    def test_shards_are_disjoint_and_cover_the_batch(self):
        x = torch.arange(25)
        parts = [ddp.shard(x, ddp.DistInfo(r, 2, r)) for r in range(2)]
        assert sorted(torch.cat(parts).tolist()) == list(range(25))
        assert [len(p) for p in parts] == [13, 12]
        # the DDP average of the rescaled shard means is the batch mean
        scales = [ddp.shard_scale(len(p), 25, ddp.DistInfo(r, 2, r)) for r, p in enumerate(parts)]
        mean = sum(s * p.float().mean() for s, p in zip(scales, parts)) / 2
        assert mean.item() == pytest.approx(x.float().mean().item())

    def test_single_process_without_torchrun(self, monkeypatch):
        monkeypatch.delenv("WORLD_SIZE", raising=False)
        info, device = ddp.setup(torch.device("cpu"))
        assert not info.enabled and info.is_main and device == torch.device("cpu")


@pytest.mark.parametrize("algo, optim", [("app", {}), ("app", {"grad_clip": 0.05})], ids=["app", "app-clipped"])
def test_two_gloo_ranks_match_one_process(cifar_dir, tmp_path, algo, optim):
    # Clipping acts on the averaged gradient, so both ranks clip alike and match one process.
    cfg = tiny_cfg(cifar_dir, algo, **optim)
    single = fit(cfg, tmp_path / "single", progress=False).model.state_dict()
    mp.spawn(_worker, args=(2, _free_port(), cfg, str(tmp_path / "ddp")), nprocs=2, join=True)
    model, meta = load_model(tmp_path / "ddp")
    assert meta["epoch"] == 0
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, single[name], rtol=1e-3, atol=5e-5, msg=lambda m, n=name: f"{n}: {m}")
    # only rank 0 wrote: one metrics line per epoch, no duplicates
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    if "grad_clip" in optim:  # the gradients were larger than the clip: it really acted
        assert json.loads(lines[0])["grad_norm"] > 2 * optim["grad_clip"]


# One SGD step on a batch of 25 (shards of 13 and 12), gradients clipped where APP's worst case at init
# is huge: one step, because in a 20-layer network fp32 rounding alone (a ReLU flipping at zero) moves the
# gradient by up to 1e-3 (measured against fp64 at batch 24), which further steps amplify. Measured: the
# weights and running statistics differ from one process's by at most 3.5e-5; with each rank normalising
# by its own shard's BatchNorm statistics, by 1.6e-2.
RESNET_STEP = {"model": {"arch": "resnet20", "init": "ibp"}, "data": {"subset": 25}, "train": {"pgd_steps": 2}}


# Not PGD or AWP: each rank draws the random start of its own shard's attack, so those match one process
# in distribution only, on any network.
@pytest.mark.parametrize("algo", ["standard", "app"])
def test_two_gloo_ranks_train_resnet20_as_one_process(cifar_dir, tmp_path, algo):
    """BatchNorm mixes the samples of a batch: the ranks share its statistics, so the step, the running
    statistics and APP's bounds (with the clean batch's statistics) are the single process's."""
    cfg = tiny_cfg(cifar_dir, algo, name="sgd", lr=0.1, momentum=0.0, grad_clip=1.0).replace(**RESNET_STEP)
    single = fit(cfg, tmp_path / "single", progress=False).model.state_dict()
    mp.spawn(_worker, args=(2, _free_port(), cfg, str(tmp_path / "ddp")), nprocs=2, join=True)
    model, meta = load_model(tmp_path / "ddp")
    assert meta["epoch"] == 0 and model.stem[1].num_batches_tracked.item() > 0
    for name, value in model.state_dict().items():  # weights and BatchNorm running statistics
        torch.testing.assert_close(value, single[name], rtol=1e-3, atol=5e-5, msg=lambda m, n=name: f"{n}: {m}")
    assert len((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()) == 1
