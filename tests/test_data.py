import hashlib
import pickle

import numpy as np
import pytest
import torch

from approp.config import ConfigError, DataConfig
from approp.data import (
    FOLDER,
    DataError,
    Split,
    augment,
    batches,
    describe_copy,
    load_cifar10,
    load_splits,
    load_validation,
)


def write_fake_layout(root, n=20, corrupt=None):
    """Writes a tiny dataset in the cifar-10-batches-py layout (for error paths only)."""
    folder = root / FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        (folder / name).write_bytes(pickle.dumps(batch))
    if corrupt:
        (folder / corrupt).write_bytes(b"\x80\x04garbage")
    return root


class TestLoading:
    def test_missing_folder_says_how_to_get_data(self, tmp_path):
        with pytest.raises(DataError) as err:
            load_cifar10(tmp_path / "nowhere", train=True)
        msg = str(err.value)
        assert "--data-dir" in msg and "APPROP_DATA" in msg and "--download" in msg

    def test_env_var_is_used(self, tmp_path, monkeypatch):
        write_fake_layout(tmp_path)
        monkeypatch.setenv("APPROP_DATA", str(tmp_path))
        x, y = load_cifar10(None, train=False)
        assert x.shape == (20, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64

    def test_corrupt_batch_is_named(self, tmp_path):
        write_fake_layout(tmp_path, corrupt="data_batch_3")
        with pytest.raises(DataError, match="data_batch_3"):
            load_cifar10(tmp_path, train=True)

    def test_missing_batch_is_named(self, tmp_path):
        write_fake_layout(tmp_path)
        (tmp_path / FOLDER / "test_batch").unlink()
        with pytest.raises(DataError, match="test_batch is missing"):
            load_cifar10(tmp_path, train=False)

    def test_wrong_shape_is_malformed(self, tmp_path):
        write_fake_layout(tmp_path)
        bad = {b"data": np.zeros((4, 100), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        (tmp_path / FOLDER / "test_batch").write_bytes(pickle.dumps(bad))
        with pytest.raises(DataError, match="malformed"):
            load_cifar10(tmp_path, train=False)

    def test_real_copy(self, cifar_dir):
        train, test = load_splits(DataConfig(data_dir=str(cifar_dir), subset=1000))
        assert len(train) == 1000 and len(test) == 10000
        # Real images: every class present, pixel statistics near CIFAR-10's.
        assert set(test.y.tolist()) == set(range(10))
        mean = test.x.float().div(255).mean(dim=(0, 2, 3))
        torch.testing.assert_close(mean, torch.tensor([0.4914, 0.4822, 0.4465]), atol=0.02, rtol=0)

    def test_validation_split_is_held_out(self, cifar_dir):
        full_x, full_y = load_cifar10(cifar_dir, train=True)
        cfg = DataConfig(data_dir=str(cifar_dir), val_split=5000, subset=1000)
        train, val = load_splits(cfg)
        # The validation images are the last 5,000 training images, never the test split,
        # and `subset` cuts the remaining 45,000, so training cannot see them.
        assert len(train) == 1000 and len(val) == 5000
        assert torch.equal(val.x, full_x[-5000:]) and torch.equal(val.y, full_y[-5000:])
        assert torch.equal(train.x, full_x[:1000])
        assert torch.equal(load_validation(cfg).y, val.y)
        whole, _ = load_splits(DataConfig(data_dir=str(cifar_dir), val_split=5000))
        assert len(whole) == 45000

    def test_validation_split_errors(self, cifar_dir):
        with pytest.raises(DataError, match="val_split"):
            load_splits(DataConfig(data_dir=str(cifar_dir), val_split=50000))
        with pytest.raises(DataError, match="no validation split"):
            load_validation(DataConfig(data_dir=str(cifar_dir)))
        with pytest.raises(ConfigError, match="val_split"):
            DataConfig(val_split=-1)


class TestBatching:
    def test_batches_cover_split_once(self):
        split = Split(
            torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 32, 32).clone(), torch.arange(10)
        )
        seen = torch.cat([y for _, y in batches(split, 3, shuffle=True, generator=torch.Generator().manual_seed(0))])
        assert sorted(seen.tolist()) == list(range(10))
        x, y = next(batches(split, 4))
        assert x.dtype == torch.float32 and x.max() <= 1.0
        torch.testing.assert_close(x[:, 0, 0, 0] * 255, y.float())

    def test_augment_is_crop_and_flip(self):
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(64, 3, 32, 32)
        out = augment(x, gen)
        assert out.shape == x.shape
        # Each output is a shifted (and maybe mirrored) copy: its center crop occurs in the input.
        for i in range(8):
            center = out[i, :, 8:24, 8:24]
            candidates = [x[i], x[i].flip(2)]
            found = any(
                torch.equal(c[:, 8 + dy : 24 + dy, 8 + dx : 24 + dx], center)
                for c in candidates
                for dy in range(-4, 5)
                for dx in range(-4, 5)
            )
            assert found
        again = augment(x, torch.Generator().manual_seed(0))
        assert torch.equal(out, again)


class TestProvenance:
    """Every report names the CIFAR-10 copy it came from: official archive or a re-encoding."""

    def test_reencoded_copy_is_never_called_official(self, cifar_dir):
        line = describe_copy(cifar_dir)
        assert "NOT the official archive" in line and "JPEG quality-75" in line

    def test_official_digest_is_recognised(self, tmp_path, monkeypatch):
        root = write_fake_layout(tmp_path)
        monkeypatch.setattr(
            "approp.data.OFFICIAL_TEST_MD5", hashlib.md5((root / FOLDER / "test_batch").read_bytes()).hexdigest()
        )
        assert describe_copy(root) == "CIFAR-10, the official archive"

    def test_other_copies_are_named_by_digest(self, tmp_path):
        line = describe_copy(write_fake_layout(tmp_path))
        assert "NOT the official archive" in line and "unknown copy" in line and "md5" in line

    def test_missing_folder_is_unknown(self, tmp_path):
        assert "unknown" in describe_copy(tmp_path / "nowhere")
