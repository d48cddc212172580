"""Shared fixtures. Paths are resolved from this file, never from the working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from approp.julia import preload

# Where the Julia engine can start, juliacall must be imported before torch
# (juliacall warns that the other order may segfault); elsewhere a no-op.
preload()

import torch  # noqa: E402

from approp.data import FOLDER  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
JPEG_ARCHIVE = SHARED / "data" / "cifar10-jpeg75"
CONVERTER = SHARED / "tools" / "cifar10_from_jpeg.py"


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory) -> Path:
    """Returns a folder holding `cifar-10-batches-py` (APPROP_DATA, or built from ../shared); skips if none."""
    env = os.environ.get("APPROP_DATA")
    if env and (Path(env) / FOLDER / "test_batch").is_file():
        return Path(env)
    if not (JPEG_ARCHIVE.is_dir() and CONVERTER.is_file()):
        pytest.skip("no CIFAR-10 copy: set APPROP_DATA or place ../shared/data/cifar10-jpeg75")
    dest = tmp_path_factory.mktemp("cifar")
    subprocess.run([sys.executable, str(CONVERTER), str(dest)], check=True, capture_output=True)
    return dest


@pytest.fixture(autouse=True)
def _torch_threads():
    """Keeps tests deterministic and within two cores (APPROP_TEST_THREADS=1 leaves one to a background job)."""
    torch.set_num_threads(int(os.environ.get("APPROP_TEST_THREADS", min(2, os.cpu_count() or 1))))
    yield
