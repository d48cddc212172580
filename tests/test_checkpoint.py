import json

import pytest
import torch

from approp.checkpoint import META, WEIGHTS, CheckpointError, load_model, save_checkpoint
from approp.config import ModelConfig
from approp.models import CNN4


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = CNN4()
    save_checkpoint(tmp_path, model, ModelConfig(), {"algo": "app", "epoch": 0})
    return tmp_path, model


def test_roundtrip_gives_identical_outputs(saved):
    run_dir, model = saved
    loaded, meta = load_model(run_dir)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded(x), model(x))
    assert meta["algo"] == "app" and meta["model"] == {"arch": "cnn4", "width": 1, "init": "default"}


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_model(tmp_path)


def test_corrupt_weights_detected(saved):
    run_dir, _ = saved
    data = bytearray((run_dir / WEIGHTS).read_bytes())
    data[-100] ^= 0xFF
    (run_dir / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(run_dir)


def test_truncated_weights_detected(saved):
    run_dir, _ = saved
    (run_dir / WEIGHTS).write_bytes((run_dir / WEIGHTS).read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(run_dir)


def test_unreadable_metadata(saved):
    run_dir, _ = saved
    (run_dir / META).write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(run_dir)


def test_other_architecture_rejected(saved):
    run_dir, _ = saved
    with pytest.raises(CheckpointError, match="width 2"):
        load_model(run_dir, expect=ModelConfig(width=2))
    meta = json.loads((run_dir / META).read_text())
    meta["model"]["width"] = 2  # metadata that lies about the weights
    (run_dir / META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(run_dir)
