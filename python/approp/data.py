"""CIFAR-10: read the standard `cifar-10-batches-py` layout, hold whole splits on the device.

The batches are read directly (pickled numpy arrays), not through
torchvision's md5 integrity check, so re-encoded copies with the same layout
work too. torchvision is used only to download the official archive when the
user asks for it.

Batching and augmentation run on whole tensors on the training device: no
per-image Python loop in the hot path.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import DataConfig

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]
NUM_CLASSES = 10
# md5 of the official archive's test_batch (torchvision's CIFAR10.test_list): a copy whose
# test_batch differs is a re-encoding (e.g. the JPEG quality-75 copy in ../shared), and every
# result computed from it must say so.
OFFICIAL_TEST_MD5 = "40351d587109b95175f43aff81a1287e"
JPEG75_TEST_MD5 = "b452585c37f80371a9d81bbd1e0b66c8"  # ../shared/tools/cifar10_from_jpeg.py's output


class DataError(RuntimeError):
    """Missing or malformed data; the message says how to get it."""


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """Returns the data root: the argument, else $APPROP_DATA, else ./data."""
    if data_dir is not None:
        return Path(data_dir)
    return Path(os.environ.get("APPROP_DATA", "data"))


def describe_copy(data_dir: str | os.PathLike | None) -> str:
    """Returns one line naming the CIFAR-10 copy under data_dir: official archive or a re-encoded one.

    Identified by the md5 of test_batch, so a report made from the JPEG quality-75 copy in
    ../shared can never pass for one made from the official data.
    """
    path = resolve_data_dir(data_dir) / FOLDER / "test_batch"
    try:
        digest = hashlib.md5(path.read_bytes()).hexdigest()
    except OSError:
        return f"CIFAR-10 copy unknown ({path} not readable)"
    if digest == OFFICIAL_TEST_MD5:
        return "CIFAR-10, the official archive"
    if digest == JPEG75_TEST_MD5:
        return "CIFAR-10, NOT the official archive: its JPEG quality-75 re-encoding (../shared/data/cifar10-jpeg75)"
    return f"CIFAR-10, NOT the official archive: an unknown copy (test_batch md5 {digest[:12]}…)"


def _how_to_get(root: Path) -> str:
    return (
        f"CIFAR-10 was not found under {root} (expected {root / FOLDER}/data_batch_1..5 and "
        "test_batch). Point --data-dir or APPROP_DATA at a folder holding "
        f"'{FOLDER}', or pass --download to fetch the official archive with torchvision."
    )


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
    except FileNotFoundError:
        raise
    except Exception as err:  # any unpickling failure means a corrupt file
        raise DataError(f"{path} is not a readable CIFAR-10 batch ({type(err).__name__}: {err})") from None
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{path} is malformed: it lacks the 'data' or 'labels' entry")
    x = np.asarray(batch["data"], dtype=np.uint8)
    y = np.asarray(batch["labels"], dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(y) != len(x):
        raise DataError(f"{path} is malformed: data {x.shape}, labels {y.shape}; want (N, 3072), (N,)")
    if y.size and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise DataError(f"{path} is malformed: labels outside 0..9")
    return x.reshape(-1, 3, 32, 32), y


def _download(root: Path) -> None:
    from torchvision.datasets import CIFAR10  # imported only when a download is asked for

    root.mkdir(parents=True, exist_ok=True)
    try:
        CIFAR10(str(root), train=True, download=True)
    except Exception as err:  # network errors come in many types
        raise DataError(f"downloading CIFAR-10 into {root} failed: {err}") from None


def load_cifar10(
    data_dir: str | os.PathLike | None, train: bool, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (images uint8 (N, 3, 32, 32), labels int64 (N,)) of one split, on the CPU."""
    root = resolve_data_dir(data_dir)
    folder = root / FOLDER
    if not folder.is_dir() and download:
        _download(root)
    if not folder.is_dir():
        raise DataError(_how_to_get(root))
    parts = []
    for name in TRAIN_FILES if train else TEST_FILES:
        try:
            parts.append(_read_batch(folder / name))
        except FileNotFoundError:
            raise DataError(f"{folder / name} is missing. " + _how_to_get(root)) from None
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(x), torch.from_numpy(y)


@dataclass
class Split:
    """A whole split resident on one device: x uint8 (N, 3, 32, 32), y int64 (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))

    def take(self, n: int | None) -> Split:
        """Returns the first n examples (all if n is None)."""
        return self if n is None else Split(self.x[:n], self.y[:n])


def load_splits(cfg: DataConfig, device: torch.device | str = "cpu") -> tuple[Split, Split]:
    """Returns (train, monitor) per `cfg`, resident on `device`.

    train: the training images less the last `cfg.val_split` (then its first `subset`);
    monitor: the split per-epoch metrics use — those held-out images when val_split > 0,
    else the test split (its first `test_subset`).
    """
    full = Split(*load_cifar10(cfg.data_dir, train=True, download=cfg.download))
    if cfg.val_split:
        train, val = split_validation(full, cfg.val_split)
        return train.take(cfg.subset).to(device), val.to(device)
    test = Split(*load_cifar10(cfg.data_dir, train=False, download=cfg.download)).take(cfg.test_subset)
    return full.take(cfg.subset).to(device), test.to(device)


def split_validation(full: Split, n_val: int) -> tuple[Split, Split]:
    """Returns (train, val): the split without its last n_val examples, and those examples."""
    if not 0 < n_val < len(full):
        raise DataError(
            f"data.val_split must be between 1 and {len(full) - 1} for a training split "
            f"of {len(full)} images; got {n_val}"
        )
    cut = len(full) - n_val
    return Split(full.x[:cut], full.y[:cut]), Split(full.x[cut:], full.y[cut:])


def load_validation(cfg: DataConfig, device: torch.device | str = "cpu") -> Split:
    """Returns the held-out validation split of `cfg` (DataError if val_split is 0)."""
    if not cfg.val_split:
        raise DataError("this run holds out no validation split (data.val_split = 0)")
    full = Split(*load_cifar10(cfg.data_dir, train=True, download=cfg.download))
    return split_validation(full, cfg.val_split)[1].to(device)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """Returns uint8 images as float32 in [0, 1]."""
    return x.float().div_(255.0)


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Returns x (B, C, H, W) randomly cropped (zero padding `pad`) and horizontally flipped."""
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))  # (B, C, H+2p, W+2p)
    dev = x.device
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]  # (B, 1, H, 1)
    cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b, device=dev)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=dev)[None, :, None, None]
    out = padded[batch, chans, rows, cols]  # (B, C, H, W)
    flip = torch.rand(b, generator=generator, device=dev) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def batches(
    split: Split,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    augment_images: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yields (x float (B, 3, 32, 32) in [0, 1], y (B,)) over the split; the last batch may be short."""
    n = len(split)
    order = (
        torch.randperm(n, generator=generator, device=split.y.device)
        if shuffle
        else torch.arange(n, device=split.y.device)
    )
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        x = to_float(split.x[idx])
        if augment_images:
            x = augment(x, generator)
        yield x, split.y[idx]
