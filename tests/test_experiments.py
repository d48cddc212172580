"""The thesis grid: presets, tables beside the thesis numbers, and a reproduce run killed and resumed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from approp.checkpoint import FORMAT_VERSION
from approp.config import ConfigError, RunConfig
from approp.experiments import load_preset, read_ledger, reproduce
from approp.experiments.preset import PRESET_DIR
from approp.experiments.runner import cell_dir, is_trained
from approp.experiments.tables import CellResult, read_eval, result_from_eval, write_tables
from approp.stats.intervals import crossed_bootstrap
from conftest import REPO

REFERENCE = PRESET_DIR / "thesis_reference.toml"


def write_preset(path: Path, cifar_dir: Path | None = None, eps=("0.001", "2/255"), algos=("app_tanh", "awp")) -> Path:
    """Writes a tiny preset (1 epoch on 64 images, no AutoAttack) and returns its path."""
    data = f'data_dir = "{cifar_dir}"\n' if cifar_dir else ""
    path.write_text(f"""
[preset]
name = "tiny"
eps = {json.dumps(list(eps))}
algorithms = {json.dumps(list(algos))}
reference = "{REFERENCE}"
device = "cpu"
[algorithms.app_tanh]
label = "APP(tanh)"
train = {{ algo = "app" }}
radius = {{ kind = "tanh", lam = 0.01 }}
[algorithms.awp]
label = "AWP"
train = {{ algo = "awp", pgd_steps = 2 }}
[run.data]
{data}subset = 64
test_subset = 32
batch_size = 32
[run.train]
epochs = 1
warmup_epochs = 0
ramp_epochs = 1
[eval]
n = 16
autoattack = false
param_attack = [0.02, 0.1]
[landscape]
n = 16
points = 3
grid = 2
span = 0.2
step = 0.1
""")
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


class TestPresets:
    @pytest.mark.parametrize("name", ["quick", "thesis"])
    def test_shipped_presets_define_the_whole_grid(self, name):
        preset = load_preset(name)
        cells = preset.cells()
        assert len(cells) == 12
        assert {c.eps_label for c in cells} == {"0.001", "0.005", "2/255", "0.01"}
        assert [a.label for a in preset.algos] == ["APP(tanh)", "APP(abs)", "AWP"]
        assert cells[8].eps == pytest.approx(2 / 255) and cells[8].config.train.eps == pytest.approx(2 / 255)
        assert {c.config.radius.kind for c in cells if c.algo.key != "awp"} == {"tanh", "abs"}
        assert preset.reference.is_file()
        assert [c.name for c in preset.cells(only="eps0.01-*")] == [
            "eps0.01-app_tanh",
            "eps0.01-app_abs",
            "eps0.01-awp",
        ]

    def test_compare_preset_reuses_the_quick_cells(self):
        """compare.toml differs from quick.toml only in ε and one extra algorithm, so a quick
        run's cells at 2/255 count as done for it and only the standard cell is new."""
        quick, compare = load_preset("quick"), load_preset(REPO / "configs" / "presets" / "compare.toml")
        done = {c.name: c.fingerprint(quick.eval) for c in quick.cells()}
        mine = {c.name: c.fingerprint(compare.eval) for c in compare.cells()}
        assert [k for k in mine if done.get(k) != mine[k]] == ["eps2over255-standard"]

    def test_fronts_preset_spans_each_methods_knob_on_one_network(self):
        """The fronts differ within a method only in its knob (APP's κ, AWP's γ), every cell trains
        cnn4_bn on all 45,000 images for 20 epochs (bf16 where native), and no landscape is drawn."""
        preset = load_preset("fronts")
        cells = {c.algo.key: c.config for c in preset.cells("data")}
        assert len(cells) == 8 and preset.landscape is None
        assert {
            (c.model.arch, c.train.epochs, c.train.precision, c.data.subset, c.data.val_split) for c in cells.values()
        } == {("cnn4_bn", 20, "auto", None, 5000)}
        app = {k: c for k, c in cells.items() if c.train.algo == "app"}
        awp = {k: c for k, c in cells.items() if c.train.algo == "awp"}
        assert sorted(c.train.kappa for c in app.values() if c.train.kappa_schedule == "gowal") == [0.5, 0.8, 0.95]
        assert [c.train.kappa_schedule for c in app.values()].count("none") == 1
        assert sorted(c.train.awp_gamma for c in awp.values()) == [0.005, 0.01, 0.02]
        # Within a method, nothing but the knob differs.
        for group, knob in ((app, ("kappa", "kappa_schedule")), (awp, ("awp_gamma",))):
            neutral = {c.replace(train={k: getattr(RunConfig().train, k) for k in knob}) for c in group.values()}
            assert len(neutral) == 1
        assert all(c.model.init == "ibp" and c.radius.lam == 0.01 for c in app.values())
        assert preset.eval.certify == preset.eval.param_attack and preset.eval.quant == ("int8",)

    def test_landscape_switch_must_be_a_boolean(self, tmp_path):
        path = write_preset(tmp_path / "p.toml")
        path.write_text(path.read_text().replace('device = "cpu"', 'device = "cpu"\nlandscape = "no"'))
        with pytest.raises(ConfigError, match="landscape must be true or false"):
            load_preset(path)


class TestTables:
    def test_thesis_numbers_sit_beside_ours_in_the_right_cells(self, tmp_path):
        preset = load_preset(write_preset(tmp_path / "tiny.toml"))
        results = [
            CellResult(
                "0.001",
                "app_tanh",
                "APP(tanh)",
                clean=0.5,
                autoattack=0.25,
                verified=0.125,
                flipped={0.02: 0.1, 0.1: 0.3},
                n=1000,
            ),
            CellResult("0.001", "awp", "AWP", clean=0.4, autoattack=0.2, flipped={0.02: 0.2, 0.1: 0.5}, n=1000),
            CellResult("2/255", "app_tanh", "APP(tanh)", clean=0.3, n=1000),
            CellResult(
                "2/255", "awp", "AWP", clean=0.6, autoattack=0.35, autoattack_clean=0.5, n=1000, autoattack_n=200
            ),
        ]
        files = write_tables(preset, results, tmp_path)
        t1 = {(r["ε"], r["algorithm"]): r for r in read_csv(files["table1.csv"])}
        assert t1[("0.001", "APP(tanh)")]["clean"] == "50.00"
        assert t1[("0.001", "APP(tanh)")]["clean (thesis)"] == "68.15"
        assert t1[("0.001", "APP(tanh)")]["AutoAttack (thesis)"] == "42.75"
        assert t1[("0.001", "AWP")]["clean (thesis)"] == "59.88"
        assert t1[("2/255", "AWP")]["AutoAttack"] == "35.00"
        assert t1[("2/255", "AWP")]["clean on AA points"] == "50.00"
        assert t1[("2/255", "AWP")]["AutoAttack (thesis)"] == "44.16"
        assert t1[("2/255", "APP(tanh)")]["clean (thesis)"] == "63.8"
        assert t1[("2/255", "APP(tanh)")]["AutoAttack"] == ""
        t2 = {(r["ε"], r["algorithm"]): r for r in read_csv(files["table2.csv"])}
        assert t2[("0.001", "APP(tanh)")]["λ=0.02"] == "10.00"
        assert t2[("0.001", "APP(tanh)")]["λ=0.02 (thesis)"] == "27"
        assert t2[("0.001", "APP(tanh)")]["λ=0.1 (thesis)"] == "41"
        assert t2[("0.001", "AWP")]["λ=0.1"] == "50.00"
        assert t2[("0.001", "AWP")]["λ=0.1 (thesis)"] == "45"
        assert t2[("2/255", "AWP")]["λ=0.02 (thesis)"] == "6"  # DESIGN.md lists all four ε rows

    def test_views_table_is_written_only_for_cells_with_statistical_results(self, tmp_path):
        preset = load_preset(write_preset(tmp_path / "tiny.toml"))
        views = {
            "bound": -3.5,
            "bound_interval": -4.0,
            "bound_linear": -3.5,
            "attack": 0.25,
            "estimate": 1.0,
            "sampled_min": 1.5,
            "clean": 2.0,
        }
        plain = CellResult("0.001", "awp", "AWP", clean=0.4, n=1000)
        assert "views.md" not in write_tables(preset, [plain], tmp_path)
        with_views = CellResult(
            "0.001", "app_tanh", "APP(tanh)", clean=0.5, n=1000, statistical=0.25, refuted=0.5, views=views
        )
        files = write_tables(preset, [with_views, plain], tmp_path)
        rows = read_csv(files["views.csv"])
        assert [r["algorithm"] for r in rows] == ["APP(tanh)"]
        assert rows[0]["bound (best)"] == "-3.500" and rows[0]["joint attack"] == "0.250"
        # 250/1000 certified: Wilson 95 % [22.415, 27.776].
        assert (rows[0]["certified p ≤ p₀ low"], rows[0]["certified p ≤ p₀ high"]) == ("22.42", "27.78")
        assert "| 0.001 | APP(tanh) | 25.0 [22.4, 27.8] | 50.0 [46.9, 53.1] | -3.500 |" in files["views.md"].read_text()

    def test_an_evaluation_in_progress_fills_the_stages_it_finished(self, tmp_path):
        run = tmp_path / "run"
        run.mkdir()
        (run / "checkpoint.json").write_text(
            json.dumps({"format": FORMAT_VERSION, "model": {}, "epoch": 9, "sha256": "abc"})
        )
        state = {
            "key": {"sha256": "abc", "n": 1000},
            "partial": {"neighbourhood": []},
            "stages": {"clean": {"clean_acc": 0.6, "seconds": 1.0}, "pgd": {"pgd_acc": 0.4, "seconds": 9.0}},
        }
        (run / "eval_state.json").write_text(json.dumps(state))
        cell = SimpleNamespace(eps_label="2/255", algo=SimpleNamespace(key="awp", label="AWP"))
        result = result_from_eval(cell, read_eval(run))
        assert (result.clean, result.pgd, result.autoattack, result.n) == (0.6, 0.4, None, 1000)
        assert result.label == "AWP (evaluation in progress)"
        state["key"]["sha256"] = "older checkpoint"
        (run / "eval_state.json").write_text(json.dumps(state))
        assert read_eval(run) is None
        (run / "eval.json").write_text(json.dumps({"clean_acc": 0.7, "n": 1000}))
        assert not result_from_eval(cell, read_eval(run)).in_progress

    def test_a_cell_is_trained_once_its_last_epoch_is_checkpointed(self, tmp_path):
        cell = load_preset("quick").cells()[0]
        assert not is_trained(tmp_path, cell)
        run = cell_dir(tmp_path, cell) / "run"
        run.mkdir(parents=True)
        meta = {"format": FORMAT_VERSION, "model": {}, "epoch": cell.config.train.epochs - 2}
        (run / "checkpoint.json").write_text(json.dumps(meta))
        assert not is_trained(tmp_path, cell)
        (run / "checkpoint.json").write_text(json.dumps({**meta, "epoch": cell.config.train.epochs - 1}))
        assert is_trained(tmp_path, cell)

    def test_every_share_carries_its_wilson_interval(self, tmp_path):
        preset = load_preset(write_preset(tmp_path / "tiny.toml"))
        results = [
            CellResult(
                "0.001",
                "app_tanh",
                "APP(tanh)",
                clean=0.5,
                autoattack=0.25,
                verified=0.125,
                flipped={0.02: 0.1, 0.1: 0.3},
                n=1000,
                autoattack_n=500,
                correct_before={0.02: 0.5, 0.1: 0.5},
                after={0.02: 0.45, 0.1: 0.35},
            ),
            CellResult(
                "0.001",
                "awp",
                "AWP",
                clean=0.4,
                autoattack=0.22,
                flipped={0.02: 0.2, 0.1: 0.5},
                n=1000,
                correct_before={0.02: 0.4, 0.1: 0.4},
                after={0.02: 0.32, 0.1: 0.2},
            ),
        ]
        files = write_tables(preset, results, tmp_path)
        t1 = {r["algorithm"]: r for r in read_csv(files["table1.csv"])}
        # Wilson 95 % for 500/1000: [46.91, 53.09]; AutoAttack 125/500: [21.41, 28.97];
        # verified 125/1000: [10.59, 14.70].
        assert (t1["APP(tanh)"]["clean low"], t1["APP(tanh)"]["clean high"]) == ("46.91", "53.09")
        assert (t1["APP(tanh)"]["AutoAttack low"], t1["APP(tanh)"]["AutoAttack high"]) == ("21.40", "28.98")
        assert (t1["APP(tanh)"]["verified low"], t1["APP(tanh)"]["verified high"]) == ("10.59", "14.69")
        md = files["table1.md"].read_text()
        assert "| 0.001 | APP(tanh) | 50.0 [46.9, 53.1] | 68.15 | 25.0 [21.4, 29.0] | 42.75 | 12.5 [10.6, 14.7] |" in md
        # The flipped share's denominator is the points correct before the attack (500 and 400).
        t2 = {r["algorithm"]: r for r in read_csv(files["table2.csv"])}
        assert (t2["APP(tanh)"]["λ=0.02 low"], t2["APP(tanh)"]["λ=0.02 high"]) == ("7.67", "12.94")
        assert (t2["AWP"]["λ=0.02 low"], t2["AWP"]["λ=0.02 high"]) == ("16.37", "24.20")
        verdicts = {(r["measure"], r["A"], r["B"]): r["verdict"] for r in read_csv(files["comparisons.csv"])}
        # 50 % vs 40 % of 1000 is decided; the parameter attack at λ = 0.02 flips fewer for APP (lower is better).
        assert verdicts[("clean", "APP(tanh)", "AWP")] == "APP(tanh) better"
        assert verdicts[("param. attack λ=0.02", "APP(tanh)", "AWP")] == "APP(tanh) better"
        assert verdicts[("AutoAttack", "APP(tanh)", "AWP")] == "undecided"  # 25 % of 500 vs 22 % of 1000
        # The accuracy the attack leaves counts all 1,000 points (higher is better): 45 % vs 32 % is
        # decided; so is 35 % vs 20 % at λ = 0.1.
        assert verdicts[("param. attack accuracy after λ=0.02", "APP(tanh)", "AWP")] == "APP(tanh) better"
        assert verdicts[("param. attack accuracy after λ=0.1", "APP(tanh)", "AWP")] == "APP(tanh) better"

    def test_flatness_carries_its_interval_and_is_compared_pairwise(self, tmp_path):
        preset = load_preset(write_preset(tmp_path / "tiny.toml"))
        gen = torch.Generator().manual_seed(0)
        shared = torch.randn(6, 300, generator=gen, dtype=torch.float64) * 0.02  # what both models share

        def result(key, label, shift):
            terms = shared + shift + 0.002 * torch.randn(6, 300, generator=gen, dtype=torch.float64)
            lo, hi = crossed_bootstrap(terms)
            return CellResult(
                "0.001",
                key,
                label,
                clean=0.5,
                n=1000,
                flatness=terms.mean().item(),
                flatness_interval=(lo, hi),
                flatness_terms=terms.tolist(),
            )

        # 0.001 apart: far inside either model's own interval (the shared spread is 0.02), yet
        # decided when paired over the same directions and points.
        a, b, c = (
            result("app_tanh", "APP(tanh)", 0.010),
            result("awp", "AWP", 0.011),
            result("standard", "standard", 0.010),
        )
        assert a.flatness_interval[1] > b.flatness
        files = write_tables(preset, [a, b, c], tmp_path)
        t1 = {r["algorithm"]: r for r in read_csv(files["table1.csv"])}
        assert (
            float(t1["APP(tanh)"]["flatness low"])
            < float(t1["APP(tanh)"]["flatness"])
            < float(t1["APP(tanh)"]["flatness high"])
        )
        assert (
            f"{a.flatness:.4f} [{a.flatness_interval[0]:.4f}, {a.flatness_interval[1]:.4f}]"
            in files["table1.md"].read_text()
        )
        verdicts = {(r["measure"], r["A"], r["B"]): r["verdict"] for r in read_csv(files["comparisons.csv"])}
        assert verdicts[("flatness", "APP(tanh)", "AWP")] == "APP(tanh) flatter"
        assert verdicts[("flatness", "AWP", "standard")] == "standard flatter"
        assert verdicts[("flatness", "APP(tanh)", "standard")] == "undecided"


def _reproduce_cmd(preset: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from approp.cli import main; main()",
        "reproduce",
        "--preset",
        str(preset),
        "--out",
        str(out),
        "--quiet",
    ]


def test_killed_reproduce_finishes_without_redoing_finished_cells(cifar_dir, tmp_path):
    preset = write_preset(tmp_path / "tiny.toml", cifar_dir, eps=("0.001", "0.01"), algos=("app_tanh",))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _reproduce_cmd(preset, out), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    first = "eps0.001-app_tanh"
    deadline = time.time() + 240
    try:
        while not any(e["cell"] != first for e in read_ledger(out)):  # wait until the second cell has started
            assert proc.poll() is None and time.time() < deadline, "reproduce ended before the second cell"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner and its train/evaluate children
        proc.wait()
    weights = out / "cells" / first / "run" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    before = len(read_ledger(out))
    summary = reproduce(preset, out, progress=False)
    assert {o.name: o.status for o in summary.outcomes} == {first: "skipped", "eps0.01-app_tanh": "ran"}
    assert all(e["cell"] != first for e in read_ledger(out)[before:])  # nothing of the finished cell ran again
    assert weights.stat().st_mtime_ns == stamp
    rows = read_csv(out / "table1.csv")
    assert [r["ε"] for r in rows] == ["0.001", "0.01"]
    assert all(r["clean"] != "" and r["clean low"] != "" and r["verified"] != "" and r["flatness"] != "–" for r in rows)
    assert all(r["λ=0.1"] != "" for r in read_csv(out / "table2.csv"))
    report = (out / "report.md").read_text()
    assert "![accuracy vs ε](accuracy_vs_eps.png)" in report and (out / "landscape_eps0.001.png").is_file()


@pytest.mark.slow
def test_quick_preset_runs_the_whole_grid(cifar_dir, tmp_path):
    summary = reproduce("quick", tmp_path / "quick", data_dir=str(cifar_dir), progress=False)
    assert len(summary.outcomes) == 12
    rows = read_csv(tmp_path / "quick" / "table1.csv")
    assert len(rows) == 12
    assert all(r[c] not in ("", "–") for r in rows for c in ("clean", "AutoAttack", "verified", "flatness"))
    assert all(r["λ=0.1"] != "" for r in read_csv(tmp_path / "quick" / "table2.csv"))


def test_committed_cpu_cells_stay_done_as_options_are_added():
    """A new config field at the value the cpu preset ran with must not make its finished cells look unfinished
    (reproduce would re-run hours of evaluation on the committed results)."""
    from approp.experiments.runner import is_done

    results = Path(__file__).resolve().parents[1] / "docs" / "results" / "cpu"
    preset = load_preset("cpu")
    cells = preset.cells("data")  # as committed: `approp reproduce --preset cpu --data-dir data`
    assert len(cells) == 4
    assert all(is_done(results, cell, preset.eval) for cell in cells)


def test_cpu_recipe_shares_the_cpu_presets_awp_and_standard_cells():
    """cpu_recipe changes only the APP cells: AWP and standard must hash exactly as the cpu preset's
    finished cells (their results are reused, not retrained), and the APP cells must differ."""
    from approp.experiments.runner import is_done

    results = Path(__file__).resolve().parents[1] / "docs" / "results" / "cpu"
    cpu, recipe = load_preset("cpu"), load_preset("cpu_recipe")
    old = {c.algo.key: c for c in cpu.cells("data")}
    new = {c.algo.key: c for c in recipe.cells("data")}
    assert old.keys() == new.keys()
    for key in ("awp", "standard"):
        assert new[key].fingerprint(recipe.eval) == old[key].fingerprint(cpu.eval)
        assert is_done(results, new[key], recipe.eval)
    for key in ("app_tanh", "app_abs"):
        assert new[key].fingerprint(recipe.eval) != old[key].fingerprint(cpu.eval)
        cfg = new[key].config
        assert cfg.model.init == "ibp" and cfg.train.kappa_schedule == "none" and cfg.train.reg_weight == 0.5
        assert cfg.model.arch == old["awp"].config.model.arch  # the comparison is on the same network
    committed = results.parent / "cpu_recipe"  # every cell finished: reproduce on it only re-tabulates
    assert all(is_done(committed, cell, recipe.eval) for cell in new.values())


def test_compare_presets_pairs_every_model_and_refuses_other_test_points(tmp_path):
    """`approp compare` on the committed cpu results: a preset given twice collapses to its four
    models (shared cells appear once) and its pairs equal the preset's own comparisons table;
    presets evaluated on other test points are refused, as is a missing folder."""
    from approp.experiments.compare import collect_presets, compare

    results = Path(__file__).resolve().parents[1] / "docs" / "results" / "cpu"
    cells = collect_presets({"cpu": results, str(PRESET_DIR / "cpu.toml"): results})
    assert [c.algo_label for c in cells] == ["APP(tanh) [cpu]", "APP(abs) [cpu]", "AWP [cpu]", "standard [cpu]"]
    files = compare({"cpu": results, str(PRESET_DIR / "cpu.toml"): results}, tmp_path / "cmp")
    assert (tmp_path / "cmp" / "tradeoff.png").stat().st_size > 0 and files["models.csv"].is_file()
    ours = {(r["A"], r["B"], r["measure"]): r["A − B"] for r in read_csv(files["comparisons.csv"])}
    theirs = {
        (r["A"] + " [cpu]", r["B"] + " [cpu]", r["measure"]): r["A − B"]
        for r in read_csv(results / "comparisons.csv")
        if r["measure"] != "flatness"
    }
    # The committed table predates the accuracy-after measures (5 λ): every row it has is reproduced.
    assert {k: v for k, v in ours.items() if "accuracy after" not in k[2]} == theirs and len(theirs) == 6 * 9
    assert len(ours) == 6 * (9 + 5)
    rows = {r["model"]: r for r in read_csv(files["models.csv"])}
    assert rows["AWP [cpu]"]["clean"] == "65.20" and float(rows["AWP [cpu]"]["clean low"]) < 65.2

    other = tmp_path / "other.toml"
    other.write_text((PRESET_DIR / "cpu.toml").read_text().replace("n = 1000", "n = 500"))
    with pytest.raises(ConfigError, match="other test points"):
        collect_presets({"cpu": results, str(other): results})
    with pytest.raises(ConfigError, match="no results folder"):
        collect_presets({"cpu": results, "quick": tmp_path / "missing"})
