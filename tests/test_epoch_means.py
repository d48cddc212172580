"""Per-epoch logs average each value over the steps that computed it (issue 23, item 7)."""

import math

import pytest
import torch

from approp.config import RunConfig
from approp.train import fit
from approp.train.epoch_means import EpochMeans


def test_a_value_some_steps_skip_is_averaged_over_the_others():
    means = EpochMeans()
    means.add({"loss": torch.tensor(2.0), "clean_loss": torch.tensor(2.2)})
    for _ in range(9):
        means.add({"loss": torch.tensor(1.0)})
    out = means.means()
    assert out["loss"] == pytest.approx(1.1)
    assert out["clean_loss"] == pytest.approx(2.2)  # not 0.22: one step computed it
    assert all(isinstance(v, float) for v in out.values())


def test_floats_and_no_steps():
    means = EpochMeans()
    assert means.means() == {}
    means.add({"a": 1.0})
    means.add({"a": 3.0, "b": 5.0})
    assert means.means() == {"a": 2.0, "b": 5.0}


def test_ramp_epoch_logs_the_clean_loss_of_the_steps_that_computed_it(cifar_dir, tmp_path):
    # κ "none" on CNN4 computes the clean loss only while ε = λ = 0: in the smoothed ramp's epoch
    # that is its first step alone (ε ∝ step⁴ is exactly 0 there). Averaged over all 8 steps it
    # would read about 2.3 / 8 (the main job logged 0.006 over 352 steps at 19.9 % clean accuracy).
    cfg = RunConfig().replace(
        data={"data_dir": str(cifar_dir), "subset": 512, "test_subset": 64, "batch_size": 64},
        optim={"name": "adam", "lr": 1e-3},
        train={
            "algo": "app",
            "epochs": 2,
            "eps": 2 / 255,
            "warmup_epochs": 1,
            "ramp_epochs": 1,
            "ramp": "smoothed",
            "kappa_schedule": "none",
        },
        radius={"kind": "tanh", "lam": 0.01},
    )
    history = fit(cfg, tmp_path / "run", progress=False).history
    ramp_epoch = history[1]
    assert 0 < ramp_epoch["ramp"] <= 1
    assert "clean_loss" in ramp_epoch
    # A cross-entropy of a network one epoch from random on 10 classes: near ln 10, never ≈ 0.3.
    assert 1.0 < ramp_epoch["clean_loss"] < 3.0, ramp_epoch
    assert math.isfinite(ramp_epoch["worst_loss"])
