"""The validation sweep: variants train, are scored on held-out training images, and resume."""

import csv
import json
from pathlib import Path

import pytest

from approp.config import ConfigError
from approp.experiments.sweep import load_sweep, run_sweep

SWEEP = """
[sweep]
name = "tiny"
description = "tiny sweep"
eval_eps = "2/255"
eval_lam = 0.01
val_n = 64
pgd_steps = 2
pairs = [["base", "small_eps"]]

[run.data]
data_dir = "{data}"
val_split = {val_split}
subset = 256
batch_size = 64
augment = false

[run.train]
algo = "app"
epochs = 2
warmup_epochs = 1
ramp_epochs = 1

[variants.base]
label = "base"

[variants.small_eps]
label = "ε = 0.5/255"
note = "a note"
train = {{ eps = 0.00196 }}
"""


def write_sweep(path: Path, data: Path, val_split: int = 5000) -> Path:
    path.write_text(SWEEP.format(data=data, val_split=val_split))
    return path


def test_variants_are_scored_on_validation_images_and_resume(cifar_dir, tmp_path):
    sweep = load_sweep(write_sweep(tmp_path / "s.toml", cifar_dir))
    assert [v.config.train.eps for v in sweep.variants] == [pytest.approx(2 / 255), 0.00196]
    out = tmp_path / "out"
    rows = run_sweep(sweep, out, progress=False)
    for key in ("base", "small_eps"):
        scores = json.loads((out / key / "val.json").read_text())
        assert scores["n"] == 64 and scores["eps"] == pytest.approx(2 / 255)
        assert 0 <= scores["verified_acc"] <= scores["clean_acc"] and scores["pgd_acc"] <= scores["clean_acc"]
        assert "verified_target_acc" in scores
        # Every epoch's metrics came from the validation split, not the test split.
        epochs = [json.loads(line) for line in (out / key / "metrics.jsonl").read_text().splitlines()]
        assert [e["eval_split"] for e in epochs] == ["val", "val"]
    assert len(rows) == 2
    table = list(csv.DictReader(open(out / "sweep.csv")))
    assert [r["variant"] for r in table] == ["base", "small_eps"]
    assert float(table[0]["val clean low"]) <= float(table[0]["val clean"]) <= float(table[0]["val clean high"])
    assert "validation images" in (out / "sweep.md").read_text()
    # The pair's differences, each with its interval around it, on the same validation points.
    pairs = list(csv.DictReader(open(out / "pairs.csv")))
    assert [p["measure"] for p in pairs] == [
        "val clean",
        "val PGD",
        "val verified (own box)",
        "val verified (target box)",
    ]
    base, small = (json.loads((out / k / "val.json").read_text()) for k in ("base", "small_eps"))
    clean = {k: float(clean_v) for k, clean_v in pairs[0].items() if k.startswith("A − B")}
    assert clean["A − B (pp)"] == pytest.approx(100 * (base["clean_acc"] - small["clean_acc"]), abs=1e-4)
    assert clean["A − B (pp) low"] <= clean["A − B (pp)"] <= clean["A − B (pp) high"]
    assert (pairs[0]["verdict"] == "undecided") == (clean["A − B (pp) low"] <= 0 <= clean["A − B (pp) high"])
    stamp = (out / "base" / "model.safetensors").stat().st_mtime_ns
    run_sweep(sweep, out, progress=False)  # finished variants are not trained again
    assert (out / "base" / "model.safetensors").stat().st_mtime_ns == stamp
    # ... nor are variants scored before a field existed, if it holds the value they ran with.
    val = out / "base" / "val.json"
    old = json.loads(val.read_text())
    del old["config"]["train"]["precision"]
    val.write_text(json.dumps(old))
    run_sweep(sweep, out, progress=False)
    assert "precision" not in json.loads(val.read_text())["config"]["train"]  # not scored again


@pytest.mark.parametrize("pairs", ['[["base", "nowhere"]]', '[["base"]]', '"base"'])
def test_pairs_must_name_two_variants(tmp_path, pairs):
    text = SWEEP.format(data=tmp_path, val_split=5000).replace('pairs = [["base", "small_eps"]]', f"pairs = {pairs}")
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(ConfigError, match="pairs"):
        load_sweep(tmp_path / "s.toml")


def test_a_sweep_without_held_out_data_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="val_split"):
        load_sweep(write_sweep(tmp_path / "s.toml", tmp_path, val_split=0))
