"""The fronts view: synthetic finished cells with known numbers give known verdicts, and cells
without eval.json are listed as pending instead of breaking the view."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from approp.checkpoint import FORMAT_VERSION
from approp.cli import app
from approp.config import ConfigError
from approp.experiments.fronts import FrontView, fronts
from approp.experiments.preset import load_preset
from approp.experiments.runner import cell_dir
from approp.outcomes import OutcomesError, encode

Z = 1.959963984540054


def wilson(k: int, n: int) -> tuple[float, float]:
    """An independent Wilson score interval (closed form, Wilson 1927)."""
    p = k / n
    centre = (2 * k + Z * Z) / (2 * (n + Z * Z))
    half = Z * math.sqrt(n * p * (1 - p) + Z * Z / 4) / (n + Z * Z)
    return centre - half, centre + half


def newcombe(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float, float]:
    """An independent Newcombe hybrid score interval of p1 − p2 (Newcombe 1998, method 10)."""
    (l1, u1), (l2, u2) = wilson(k1, n1), wilson(k2, n2)
    p1, p2 = k1 / n1, k2 / n2
    return p1 - p2, p1 - p2 - math.hypot(p1 - l1, u2 - p2), p1 - p2 + math.hypot(u1 - p1, p2 - l2)


def pp(d: tuple[float, float, float]) -> str:
    return f"{100 * d[0]:+.1f} [{100 * d[1]:+.1f}, {100 * d[2]:+.1f}] pp"


# (clean, AutoAttack, verified, verified best, flipped at λ = 0.02 and 0.1) on 1,000 points, AutoAttack on 500.
MATCHES = {
    "app_k095": (0.60, 0.46, 0.10, 0.15, (0.05, 0.30)),
    "app_k050": (0.50, 0.42, 0.20, 0.25, (0.04, 0.20)),
    "awp_g010": (0.62, 0.44, 0.0, 0.0, (0.15, 0.60)),
    "awp_g020": (0.57, 0.48, 0.0, 0.0, (0.12, 0.55)),
    "standard": (0.75, 0.20, 0.0, 0.0, (0.40, 0.90)),
}
BEATS = {**MATCHES, "app_k095": (0.70, 0.60, 0.10, 0.15, (0.05, 0.30))}
WORSE = {
    **MATCHES,
    "app_k095": (0.50, 0.35, 0.10, 0.15, (0.05, 0.30)),
    "app_k050": (0.45, 0.30, 0.20, 0.25, (0.04, 0.20)),
}
LAMS = (0.02, 0.1)


def eval_json(clean: float, aa: float, verified: float, best: float, flipped: tuple[float, ...]) -> dict:
    """Returns an eval.json as `approp evaluate` writes it, with the given shares."""
    return {
        "n": 1000,
        "clean_acc": clean,
        "pgd_acc": aa + 0.01,
        "verified_acc": verified,
        "verified_acc_best": best,
        "autoattack": {"robust_acc": aa, "n": 500, "cascade": {"clean": clean}},
        "param_attack": [
            {"lam": lam, "acc_before": clean, "acc_after": clean * (1 - f), "flipped": f}
            for lam, f in zip(LAMS, flipped)
        ],
    }


def write_cells(out: Path, numbers: dict, training: str = "awp_g005", evaluating: str = "app_k080") -> Path:
    """Writes the fronts preset's cells into OUT as the runner leaves them: `numbers` finished (with
    eval.json), `training` holding a config and an unfinished run, `evaluating` a final checkpoint but no
    eval.json; the rest not started. Returns OUT."""
    cells = {c.algo.key: c for c in load_preset("fronts").cells()}
    for key in (*numbers, training, evaluating):
        folder = cell_dir(out, cells[key])
        (folder / "run").mkdir(parents=True)
        cells[key].config.save(folder / "config.toml")
        if key in numbers:
            (folder / "run" / "eval.json").write_text(json.dumps(eval_json(*numbers[key])))
        elif key == evaluating:
            meta = {"format": FORMAT_VERSION, "model": {}, "epoch": cells[key].config.train.epochs - 1, "sha256": "a"}
            (folder / "run" / "checkpoint.json").write_text(json.dumps(meta))
    return out


def verdict(view: FrontView, claim: str) -> tuple[bool, str]:
    found = [v for v in view.verdicts if v.claim.endswith(claim)]
    assert len(found) == 1, claim
    return found[0].decided, found[0].text


def test_matching_fronts_leave_the_headline_undecided_and_list_pending_cells(tmp_path):
    out = write_cells(tmp_path / "fronts", MATCHES)
    view = fronts(out, tmp_path / "view", preset="fronts")
    decided, text = verdict(view, "in both clean and AutoAttack accuracy")
    clean, aa = newcombe(600, 1000, 620, 1000), newcombe(230, 500, 220, 500)
    # κ = 0.95 matches both AWP points; against γ = 0.01 its lowest interval end is highest (−6.3 vs −8.2).
    assert not decided and text.startswith("undecided: APP(tanh) κ=0.95 matches AWP γ=0.01")
    assert f"clean {pp(clean)}, AutoAttack {pp(aa)}" in text and "(0 of 4 pairs beat, 2 match, 2 worse)" in text
    # Nearest in clean accuracy: κ = 0.95 against γ = 0.01 (−2 points; γ = 0.02 is +3).
    decided, text = verdict(view, "at equal clean accuracy: AutoAttack accuracy")
    assert not decided and f"APP − AWP {pp(aa)}" in text and "vs AWP γ=0.01" in text
    decided, text = verdict(view, "at equal clean accuracy: verified accuracy")  # the best bound's 15 % vs 0 %
    assert decided and text.startswith("decided: APP more robust") and pp(newcombe(150, 1000, 0, 1000)) in text
    # Flipped shares count the points correct before the attack: 5 % of 600 against 15 % of 620.
    decided, text = verdict(view, "parameter attack λ=0.02 (flipped share)")
    assert decided and "APP more robust" in text and pp(newcombe(30, 600, 93, 620)) in text
    # The accuracy left counts all 1,000 points: 60 % × 0.95 = 57.0 % against 62 % × 0.85 = 52.7 %,
    # undecided at λ = 0.02 though the flipped share is decided; 42.0 % against 24.8 % at λ = 0.1.
    decided, text = verdict(view, "parameter attack λ=0.02 (accuracy after)")
    assert not decided and pp(newcombe(570, 1000, 527, 1000)) in text
    decided, text = verdict(view, "parameter attack λ=0.1 (accuracy after)")
    assert decided and "APP more robust" in text and pp(newcombe(420, 1000, 248, 1000)) in text

    pending = {p.name: p.pending for p in view.pending}
    assert pending == {
        "eps2over255-awp_g005": "training",
        "eps2over255-app_k080": "evaluating",
        "eps2over255-app_none": "not started",
    }
    page = view.files["fronts_verdicts.md"].read_text()
    assert "eps2over255-app_none (APP(tanh) κ none): not started" in page and "**some APP point" in page
    saved = json.loads(view.files["fronts_verdicts.json"].read_text())
    assert {p["cell"]: p["status"] for p in saved["pending"]} == pending
    assert saved["verdicts"][0]["numbers"]["counts"] == {"beats": 0, "matches": 2, "worse": 2}


def add_outcomes(out: Path, first: int = 0) -> None:
    """Gives every finished cell per-point outcomes as `approp evaluate` keeps them: each measure right
    on the first k of its points (k from its share), so any two cells agree on every point the one with
    fewer right has right. first: the index the correct points start at (another point set)."""
    for path in out.rglob("eval.json"):
        r = json.loads(path.read_text())

        def mask(share: float, n: int) -> dict:
            k = round(share * n)
            return encode(torch.arange(n).sub(first).remainder(n) < k)

        r["outcomes"] = {"clean": mask(r["clean_acc"], 1000), "autoattack": mask(r["autoattack"]["robust_acc"], 500)}
        path.write_text(json.dumps(r))


def test_outcomes_on_the_same_points_decide_what_independent_intervals_cannot(tmp_path):
    out = write_cells(tmp_path / "fronts", MATCHES)
    add_outcomes(out)
    view = fronts(out, tmp_path / "view", preset="fronts")
    # Paired, κ = 0.95 is decidedly below γ = 0.01 in clean accuracy (−2.0, 20 points only AWP has right)
    # and below γ = 0.02 in AutoAttack (−2.0): every pair is now worse, where the independent intervals
    # left two matching.
    decided, text = verdict(view, "in both clean and AutoAttack accuracy")
    assert decided and text.startswith("decided, no") and "(0 of 4 pairs beat, 0 match, 4 worse)" in text
    assert "pp (paired)" in text
    with open(view.files["fronts_pairs.csv"], newline="") as fh:
        rows = {(r["APP"], r["AWP"]): r for r in csv.DictReader(fh)}
    row = rows[("APP(tanh) κ=0.95", "AWP γ=0.01")]
    assert row["clean APP − AWP"].startswith("-2.0 [") and row["clean APP − AWP"].endswith("] pp (paired)")
    decided, text = verdict(view, "at equal clean accuracy: AutoAttack accuracy")
    assert decided and text.startswith("decided: APP more robust")
    # Measures without outcomes keep the independent interval.
    decided, text = verdict(view, "parameter attack λ=0.1 (accuracy after)")
    assert pp(newcombe(420, 1000, 248, 1000)) + ";" in text
    saved = json.loads(view.files["fronts_verdicts.json"].read_text())
    assert saved["verdicts"][0]["numbers"]["best"]["clean"]["interval"] == "paired"


def test_outcomes_that_disagree_with_their_share_are_refused(tmp_path):
    out = write_cells(tmp_path / "fronts", MATCHES)
    add_outcomes(out)
    path = next(out.rglob("*app_k095/run/eval.json"))
    r = json.loads(path.read_text())
    r["clean_acc"] = 0.61  # the outcomes still mark 600 points
    path.write_text(json.dumps(r))
    with pytest.raises(OutcomesError, match="count 600 of 1000 points"):
        fronts(out, tmp_path / "view", preset="fronts")


def test_table_rows_carry_every_measure_with_wilson_intervals(tmp_path):
    out = write_cells(tmp_path / "fronts", MATCHES)
    run = cell_dir(out, next(c for c in load_preset("fronts").cells() if c.algo.key == "app_k095")) / "run"
    results = json.loads((run / "eval.json").read_text())
    results["certify"] = {
        "n": 1000,
        "curve": [],
        "radius": {"lam_star": [0.0] * 400 + [0.01] * 250 + [0.04] * 350},
        "quant": [
            {
                "spec": "int8:tensor",
                "bits": 8,
                "per_channel": False,
                "n": 1000,
                "certified_unchanged": 1,
                "certified_correct": 1,
            },
            {
                "spec": "int8:channel",
                "bits": 8,
                "per_channel": True,
                "n": 1000,
                "certified_unchanged": 120,
                "certified_correct": 100,
            },
        ],
    }
    (run / "eval.json").write_text(json.dumps(results))
    view = fronts(out, tmp_path / "view", preset="fronts")
    with open(view.files["fronts_table.csv"], newline="") as fh:
        rows = {r["point"]: r for r in csv.DictReader(fh)}
    assert list(rows) == ["APP(tanh) κ=0.95", "AWP γ=0.01", "standard", "APP(tanh) κ=0.5", "AWP γ=0.02"]  # preset order
    app_row = rows["APP(tanh) κ=0.95"]
    lo, hi = wilson(230, 500)  # AutoAttack on its 500 points
    assert app_row["front"] == "APP" and app_row["AutoAttack"] == "46.00"
    assert float(app_row["AutoAttack low"]) == pytest.approx(100 * lo, abs=0.006)
    assert float(app_row["AutoAttack high"]) == pytest.approx(100 * hi, abs=0.006)
    assert app_row["verified (interval)"] == "10.00" and app_row["verified (best)"] == "15.00"
    assert app_row["param. attack flipped λ=0.1"] == "30.00"
    assert app_row["param. attack accuracy after λ=0.1"] == "42.00"  # of all 1,000 points: 60 % × (1 − 0.3)
    assert app_row["certified λ* > 0"] == "60.00" and app_row["certified λ* median"] == "0.04"
    assert app_row["int8 certified unchanged"] == "12.00" and app_row["int8 certified correct"] == "10.00"
    assert rows["standard"]["front"] == "reference" and rows["standard"]["int8 certified correct"] == ""
    for name in ("fronts_clean_vs_autoattack.png", "fronts_clean_vs_verified.png"):
        assert view.files[name].stat().st_size > 10_000


@pytest.mark.parametrize(
    "numbers, decided, start",
    [
        (BEATS, True, "decided, yes: APP(tanh) κ=0.95 beats AWP γ=0.02 in both"),
        (WORSE, True, "decided, no: every APP point is below every AWP point"),
    ],
)
def test_beating_and_losing_fronts_are_decided(tmp_path, numbers, decided, start):
    view = fronts(write_cells(tmp_path / "fronts", numbers), tmp_path / "view")  # cells found in the folder
    got, text = verdict(view, "in both clean and AutoAttack accuracy")
    assert got == decided and text.startswith(start)
    if (
        numbers is BEATS
    ):  # both pairs beat; γ = 0.02 (+13, +12 points) by the wider lower margin than γ = 0.01 (+8, +16)
        assert pp(newcombe(700, 1000, 570, 1000)) in text and pp(newcombe(300, 500, 240, 500)) in text
        assert "(2 of 4 pairs beat, 0 match, 2 worse)" in text
    else:  # every pair loses clean accuracy by a decided margin
        with open(view.files["fronts_pairs.csv"], newline="") as fh:
            pairs = list(csv.DictReader(fh))
        assert len(pairs) == 4 and {p["APP against AWP"] for p in pairs} == {"worse"}
    # Without a preset only cells with a config are listed: the one never started is not.
    assert {p.name for p in view.pending} == {"eps2over255-awp_g005", "eps2over255-app_k080"}


def test_a_training_cell_reports_its_last_epoch_and_validation_accuracy(tmp_path):
    """A pending cell that has finished epochs says how far it is and its last validation accuracy, with the
    Wilson interval over the preset's 5,000 validation images."""
    out = write_cells(tmp_path / "fronts", {})
    run = out / "cells" / "eps2over255-awp_g005" / "run"
    rows = [{"epoch": e, "loss": 1.0, "eval_split": "val", "clean_acc": acc} for e, acc in ((0, 0.6), (1, 0.6894))]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    status = {p.name: p.pending for p in fronts(out, tmp_path / "view", preset="fronts").pending}
    lo, hi = wilson(3447, 5000)
    assert status["eps2over255-awp_g005"] == (
        f"training: epoch 2 of 20, validation clean 68.9 [{100 * lo:.1f}, {100 * hi:.1f}] on 5,000 images"
    )
    assert status["eps2over255-app_k080"] == "evaluating"


def test_no_finished_cells_give_undecided_verdicts_and_bad_folders_a_clear_error(tmp_path):
    out = write_cells(tmp_path / "fronts", {})
    view = fronts(out, preset="fronts")
    assert all(not v.decided and "undecided" in v.text for v in view.verdicts)
    assert len(view.pending) == 8 and (out / "fronts_table.md").is_file()
    with pytest.raises(ConfigError, match="no results folder"):
        fronts(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no cells"):
        fronts(tmp_path / "empty")


def test_cli_writes_the_view_and_reports_pending_cells(tmp_path):
    out = write_cells(tmp_path / "fronts", MATCHES)
    result = CliRunner().invoke(app, ["fronts", str(out), "--out", str(tmp_path / "view"), "--preset", "fronts"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert sorted(summary["pending"]) == ["eps2over255-app_k080", "eps2over255-app_none", "eps2over255-awp_g005"]
    assert summary["verdicts"][0]["decided"] is False and (tmp_path / "view" / "fronts_pairs.md").is_file()
    bad = CliRunner().invoke(app, ["fronts", str(tmp_path / "missing")])
    assert bad.exit_code == 1 and "no results folder" in bad.output


def test_validate_scores_held_out_training_images_into_val_json(cifar_dir, tmp_path):
    """`approp validate` on a tiny trained run: its clean accuracy agrees with a plain forward pass over
    the first n of the last val_split training images, every share carries its Wilson interval, PGD at
    ε = 0 is clean accuracy, and a run without held-out images is refused with one line."""
    import shutil

    import torch

    from approp.checkpoint import load_model
    from approp.config import RunConfig
    from approp.data import load_cifar10, to_float
    from approp.experiments.front_choice import read_scores
    from approp.experiments.validate import validate_run
    from approp.train import fit

    cfg = RunConfig().replace(
        data={"data_dir": str(cifar_dir), "subset": 256, "val_split": 500, "batch_size": 64, "augment": False},
        optim={"name": "adam", "lr": 0.002},
        radius={"kind": "abs", "lam": 0.001},
        train={"algo": "standard", "epochs": 1, "warmup_epochs": 0, "ramp_epochs": 0, "eps": 2 / 255},
    )
    run = tmp_path / "run"
    fit(cfg, run, progress=False)
    result = validate_run(run, n=96, pgd_steps=3)
    assert json.loads((run / "val.json").read_text()) == json.loads(json.dumps(result))
    assert not (run / "val.json.tmp").exists()

    x, y = load_cifar10(cifar_dir, train=True)
    model, _ = load_model(run)
    with torch.no_grad():
        correct = int(
            (model(to_float(torch.as_tensor(x[-500:][:96]))).argmax(1) == torch.as_tensor(y[-500:][:96])).sum()
        )
    clean = result["intervals"]["clean_acc"]
    assert result["n"] == 96 and clean["k"] == correct and clean["n"] == 96
    assert (clean["lower"], clean["upper"]) == pytest.approx(wilson(correct, 96), abs=1e-12)
    assert result["verified_acc"] <= result["pgd_acc"] <= result["clean_acc"]
    assert result["config"]["data"]["val_split"] == 500 and result["eps"] == pytest.approx(2 / 255)
    scores = read_scores(run)  # what the fronts view reads to choose the main job
    assert scores is not None and not scores.stale and (scores.clean.k, scores.clean.n) == (correct, 96)
    assert scores.pgd.value == pytest.approx(result["pgd_acc"]) and scores.setting == (96, round(2 / 255, 9), 3)
    at_zero = validate_run(run, n=32, eps=0.0, pgd_steps=2)  # no ball: PGD cannot move a point
    assert at_zero["pgd_acc"] == pytest.approx(at_zero["clean_acc"]) and at_zero["n"] == 32

    cli = CliRunner().invoke(app, ["validate", str(run), "--n", "32", "--pgd-steps", "2", "--lam", "0.002"])
    assert cli.exit_code == 0, cli.output
    summary = json.loads(cli.output)
    assert summary["n"] == 32 and summary["clean_acc"].count("[") == 1 and "verified_target_acc" in summary

    none = tmp_path / "no_val"
    shutil.copytree(run, none)
    RunConfig.load(run / "config.toml").replace(data={"val_split": 0}).save(none / "config.toml")
    bad = CliRunner().invoke(app, ["validate", str(none)])
    assert bad.exit_code == 1 and "held out no validation images" in " ".join(bad.output.split())


def write_val(run: Path, clean: int, pgd: int, n: int = 5000, sha: str = "final", steps: int = 20) -> None:
    """Writes RUN/checkpoint.json (sha256 'final') and a val.json as `approp validate` writes it, scoring
    checkpoint `sha`: clean and PGD counts of n, verified 0."""
    run.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT_VERSION, "model": {}, "epoch": 19, "sha256": "final"}
    (run / "checkpoint.json").write_text(json.dumps(meta))
    counts = {"clean_acc": clean, "pgd_acc": pgd, "verified_acc": 0}
    intervals = {key: {"k": k, "n": n, "value": k / n} for key, k in counts.items()}
    val = {"n": n, "eps": 2 / 255, **{key: k / n for key, k in counts.items()}, "pgd_steps": steps}
    val.update({"intervals": intervals, "checkpoint": {"epoch": 19, "sha256": sha}})
    (run / "val.json").write_text(json.dumps(val))


def test_validation_scores_choose_the_main_job_by_the_mean_of_clean_and_pgd(tmp_path):
    """The main job's APP point is the one with the highest mean of validation clean and PGD accuracy; its
    lead over each other APP point carries Newcombe's interval; AWP points are listed but never chosen;
    stale scores, unlike settings and corrupt files stop the choice with a reason."""
    out = write_cells(tmp_path / "fronts", MATCHES)
    runs = {c.algo.key: cell_dir(out, c) / "run" for c in load_preset("fronts").cells()}
    write_val(runs["app_k095"], clean=3300, pgd=2300)  # mean 56.0 %
    write_val(runs["app_k050"], clean=2900, pgd=2500)  # mean 54.0 %
    write_val(runs["awp_g010"], clean=3600, pgd=2600)  # mean 62.0 %: AWP, not a candidate
    view = fronts(out, tmp_path / "view", preset="fronts")
    chosen = view.choice.chosen
    assert chosen is not None and chosen.cell == "eps2over255-app_k095"
    assert not view.choice.final and view.choice.pending == ("APP(tanh) κ=0.8", "APP(tanh) κ none")
    ((other, d_clean, d_pgd),) = view.choice.leads
    assert other.label == "APP(tanh) κ=0.5"
    assert (d_clean.value, d_clean.lower, d_clean.upper) == pytest.approx(newcombe(3300, 5000, 2900, 5000))
    assert (d_pgd.value, d_pgd.lower, d_pgd.upper) == pytest.approx(newcombe(2300, 5000, 2500, 5000))
    page = view.files["fronts_validation.md"].read_text()
    line = f"- against APP(tanh) κ=0.5: clean {pp(newcombe(3300, 5000, 2900, 5000))}, PGD "
    assert "**Main job so far (provisional): APP(tanh) κ=0.95** (cell eps2over255-app_k095)" in page and line in page
    assert "Not scored yet: APP(tanh) κ=0.8, APP(tanh) κ none." in page
    assert "(decided in clean and PGD)" in page  # +8 and −4 points on 5,000 images each
    with open(view.files["fronts_validation.csv"], newline="") as fh:
        rows = {r["point"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"APP(tanh) κ=0.95", "AWP γ=0.01", "APP(tanh) κ=0.5"}
    assert rows["AWP γ=0.01"]["front"] == "AWP" and rows["APP(tanh) κ=0.95"]["mean of clean and PGD"] == "56.00"
    lo, hi = wilson(3300, 5000)
    assert float(rows["APP(tanh) κ=0.95"]["clean low"]) == pytest.approx(100 * lo, abs=0.006)
    assert float(rows["APP(tanh) κ=0.95"]["clean high"]) == pytest.approx(100 * hi, abs=0.006)
    saved = json.loads(view.files["fronts_verdicts.json"].read_text())
    assert saved["main_choice"]["chosen"]["cell"] == "eps2over255-app_k095"

    write_val(runs["app_k080"], clean=3100, pgd=2450)  # mean 55.5 %
    write_val(runs["app_none"], clean=1500, pgd=1400)  # mean 29.0 %
    view = fronts(out, tmp_path / "view", preset="fronts")
    assert view.choice.final and view.choice.chosen.cell == "eps2over255-app_k095" and len(view.choice.leads) == 3
    page = view.files["fronts_validation.md"].read_text()
    assert "**Main job: APP(tanh) κ=0.95**" in page and "Not scored yet" not in page
    assert f"- against APP(tanh) κ=0.8: clean {pp(newcombe(3300, 5000, 3100, 5000))}" in page

    write_val(runs["app_k050"], clean=2900, pgd=2500, sha="epoch 10")  # the run's checkpoint moved on since
    view = fronts(out, tmp_path / "view", preset="fronts")
    assert view.choice.chosen is None and "stale validation scores" in view.choice.why
    assert "**No choice yet:** stale validation scores" in view.files["fronts_validation.md"].read_text()
    write_val(runs["app_k050"], clean=1160, pgd=1000, n=2000)  # fresh, but on 2,000 images
    view = fronts(out, tmp_path / "view", preset="fronts")
    assert view.choice.chosen is None and "scored on different settings" in view.choice.why
    assert "2000 images" in view.choice.why and "5000 images" in view.choice.why

    (runs["app_k050"] / "val.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a val.json as `approp validate` writes it"):
        fronts(out, tmp_path / "view", preset="fronts")


def test_without_validation_scores_the_page_says_no_choice_yet(tmp_path):
    view = fronts(write_cells(tmp_path / "fronts", MATCHES), tmp_path / "view", preset="fronts")
    page = view.files["fronts_validation.md"].read_text()
    assert view.choice.chosen is None and "No point has validation scores yet." in page
    assert "**No choice yet:** no APP point has validation scores yet." in page
