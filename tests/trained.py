"""A small CNN4 trained once per session on a CIFAR-10 subset, shared by the attack and evaluation tests.

Imported as a fixture by several test modules; the training itself is cached
here, so the session trains it once whichever module asks first.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from approp.checkpoint import load_model
from approp.config import RunConfig
from approp.data import Split, load_cifar10
from approp.train import fit

EPS = 4 / 255


@functools.cache
def _train(cifar_dir: Path, out: Path) -> Path:
    """Returns a run dir holding a standard-trained CNN4 (about 40 % clean test accuracy)."""
    cfg = RunConfig().replace(
        data={"data_dir": str(cifar_dir), "subset": 4000, "test_subset": 100, "augment": False},
        optim={"name": "adam", "lr": 0.002, "weight_decay": 0.0},
        radius={"kind": "abs", "lam": 0.01},
        train={"algo": "standard", "epochs": 3, "warmup_epochs": 0, "ramp_epochs": 0, "eps": EPS, "seed": 0},
    )
    torch.set_num_threads(2)
    fit(cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def trained_run(cifar_dir, tmp_path_factory) -> Path:
    """Returns the run directory of the session's trained model (do not write into it)."""
    return _train(cifar_dir, tmp_path_factory.getbasetemp() / "trained_standard")


@pytest.fixture(scope="session")
def eval_points(cifar_dir) -> Split:
    """Returns the first 64 CIFAR-10 test images and labels."""
    return Split(*load_cifar10(cifar_dir, train=False)).take(64)


@pytest.fixture
def trained_model(trained_run):
    """Returns a fresh copy of the trained model (eval mode)."""
    model, _ = load_model(trained_run)
    return model.eval()
