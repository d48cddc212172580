"""Run-directory I/O: atomic writes keep the old file on failure, fingerprints leave neutral values out."""

from __future__ import annotations

import json

import pytest

from approp import rundir
from approp.config import RunConfig
from approp.experiments.preset import EvalSpec


def test_atomic_write_replaces_text_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text("old")
    assert rundir.atomic_json(path, {"a": [1, 2]}) == path
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    assert path.read_text() == json.dumps({"a": [1, 2]}, indent=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]


def test_an_interrupted_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"previous")

    def half_written(tmp):
        tmp.write_bytes(b"trunc")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        rundir.atomic_write(path, half_written)
    assert path.read_bytes() == b"previous"


def test_neutral_fields_hash_as_if_absent():
    cfg = RunConfig()
    raw = cfg.to_dict()
    assert raw["train"]["ramp"] == rundir.NEUTRAL_FIELDS["train", "ramp"]
    without = {s: dict(v) for s, v in raw.items()}
    del without["train"]["ramp"]
    ev, defaults = EvalSpec().__dict__, EvalSpec().__dict__
    assert rundir.fingerprint(raw, ev, defaults) == rundir.fingerprint(without, ev, defaults)
    changed = cfg.replace(train={"ramp": "smoothed"}).to_dict()
    assert rundir.fingerprint(changed, ev, defaults) != rundir.fingerprint(raw, ev, defaults)
    assert len(rundir.fingerprint(raw, ev, defaults)) == 16


def test_evaluation_settings_at_their_defaults_leave_the_fingerprint_alone():
    raw, defaults = RunConfig().to_dict(), EvalSpec().__dict__
    base = rundir.fingerprint(raw, defaults, defaults)
    assert rundir.fingerprint(raw, {**defaults, "statistical": 0}, defaults) == base
    assert rundir.fingerprint(raw, {**defaults, "statistical": 4}, defaults) != base


def test_results_key_drops_the_settings_of_stages_that_are_off():
    key = rundir.results_key({"sha256": "ab"}, {"n": 5, "delta": 0.1, "p0": 0.01}, off=("delta", "p0"), eps=0.5)
    assert key == {"sha256": "ab", "eps": 0.5, "config": {"n": 5}}
    assert list(key) == ["sha256", "eps", "config"]
