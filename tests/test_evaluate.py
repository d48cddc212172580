"""The evaluation suite end to end: results, report section, resuming, and refusing bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from approp.checkpoint import CheckpointError
from approp.cli import app
from approp.config import ConfigError
from approp.evaluate import OUTCOME_STAGES, RESULTS, STATE, EvalConfig, Evaluator, parse_lams
from approp.neighbourhood import NeighbourSample
from approp.outcomes import OutcomesError, decode

EPS = 4 / 255  # the input radius these tests attack at

pytest_plugins = ["trained"]  # the session's trained model and its fixtures

SMALL = EvalConfig(n=16, pgd_steps=3, autoattack=False, neighbourhood=1, param_attack=(0.02, 0.1), param_attack_steps=2)


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """Returns a private copy of the trained run directory."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def test_full_evaluation_writes_results_and_report(run_copy, cifar_dir):
    cfg = EvalConfig(eps=2 * EPS, n=16, pgd_steps=10, neighbourhood=1, param_attack=(0.02, 0.1), param_attack_steps=3)
    res = Evaluator(run_copy, cfg, data_dir=cifar_dir, progress=False).run()
    saved = json.loads((run_copy / RESULTS).read_text())
    assert saved["clean_acc"] == res["clean_acc"] and saved["eps"] == pytest.approx(2 * EPS)
    assert 0.2 < res["clean_acc"] <= 1
    # Stronger attacks never leave more points standing; verified ≤ any attack (soundness).
    aa = res["autoattack"]
    assert aa["robust_acc"] <= res["pgd_acc"] < res["clean_acc"]
    assert aa["cascade"]["clean"] == pytest.approx(res["clean_acc"])
    assert res["verified_acc"] <= aa["robust_acc"]
    assert [r["lam"] for r in res["param_attack"]] == [0.02, 0.1]
    assert res["param_attack"][-1]["acc_after"] < res["clean_acc"]
    assert set(res["neighbourhood"]["summary"]) == {"uniform", "corner"}
    assert set(res["seconds"]) == {"clean", "pgd", "autoattack", "verified", "neighbourhood", "param_attack"}
    report = (run_copy / "report.md").read_text()
    assert report.startswith("# Training run") and report.count("## Evaluation") == 1
    assert "apgd-t" in report and "| 0.1 |" in report
    # Every share has its per-point outcomes beside it, counting exactly its points.
    shares = {
        "clean": (res["clean_acc"], 16),
        "pgd": (res["pgd_acc"], 16),
        "autoattack": (aa["robust_acc"], 16),
        **{f"verified{s}": (res[f"verified_acc{s}"], 16) for s in ("", "_crown", "_best")},
        **{f"after:{r['lam']:g}": (r["acc_after"], 16) for r in res["param_attack"]},
    }
    assert set(saved["outcomes"]) == set(shares)
    for name, (share, n) in shares.items():
        mask = decode(saved["outcomes"][name])
        assert len(mask) == n and int(mask.sum()) == round(share * n), name
    clean, robust = decode(saved["outcomes"]["clean"]), decode(saved["outcomes"]["autoattack"])
    assert not (robust & ~clean).any()  # AutoAttack leaves only correctly classified points robust


def test_report_section_is_replaced_not_repeated(run_copy, cifar_dir):
    cfg = EvalConfig(n=16, pgd_steps=2, autoattack=False, verified=False, param_attack=())
    Evaluator(run_copy, cfg, data_dir=cifar_dir, progress=False).run()
    Evaluator(
        run_copy,
        EvalConfig(n=24, pgd_steps=2, autoattack=False, verified=False, param_attack=()),
        data_dir=cifar_dir,
        progress=False,
    ).run()
    report = (run_copy / "report.md").read_text()
    assert report.count("## Evaluation") == 1 and "first 24 test images" in report
    assert "# Training run" in report


class _Interrupt(Exception):
    pass


def test_interrupted_evaluation_resumes_where_it_stopped(run_copy, cifar_dir, monkeypatch):
    import approp.neighbourhood as nb

    fresh = Evaluator(run_copy, SMALL, data_dir=cifar_dir, progress=False)
    real = nb.clean_accuracy
    calls = {"n": 0}

    def flaky(*args, **kwargs):  # the second sampled network fails
        calls["n"] += 1
        if calls["n"] == 2:
            raise _Interrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(nb, "clean_accuracy", flaky)
    with pytest.raises(_Interrupt):
        fresh.run()
    state = json.loads((run_copy / STATE).read_text())
    assert set(state["stages"]) == {"clean", "pgd", "verified"}
    assert len(state["partial"]["neighbourhood"]) == 1
    assert not (run_copy / RESULTS).exists()
    monkeypatch.setattr(nb, "clean_accuracy", real)
    resumed = Evaluator(run_copy, SMALL, data_dir=cifar_dir, progress=False)
    monkeypatch.setattr(Evaluator, "_stage_pgd", lambda *a: pytest.fail("pgd stage re-run"))
    res = resumed.run()
    assert res["seconds"]["pgd"] == state["stages"]["pgd"]["seconds"]
    samples = res["neighbourhood"]["samples"]
    assert len(samples) == 2 and samples[0] == state["partial"]["neighbourhood"][0]
    # Same numbers as an uninterrupted run (every sample has its own seed).
    monkeypatch.undo()
    (run_copy / STATE).unlink()
    again = Evaluator(run_copy, SMALL, data_dir=cifar_dir, progress=False).run()
    assert again["neighbourhood"]["samples"] == samples
    assert again["param_attack"] == res["param_attack"]


def _strip_outcomes(run_dir: Path) -> None:
    """Leaves the run's evaluation as one made before outcomes were kept."""
    state = json.loads((run_dir / STATE).read_text())
    for stage in state["stages"].values():
        stage.pop("outcomes", None)
    (run_dir / STATE).write_text(json.dumps(state))
    results = json.loads((run_dir / RESULTS).read_text())
    results.pop("outcomes")
    (run_dir / RESULTS).write_text(json.dumps(results))


def test_outcomes_are_added_to_an_older_evaluation_where_it_reproduces(run_copy, cifar_dir):
    cfg = EvalConfig(n=16, pgd_steps=3, autoattack_n=8, param_attack=(0.02, 0.1), param_attack_steps=2)
    first = Evaluator(run_copy, cfg, data_dir=cifar_dir, progress=False).run()
    _strip_outcomes(run_copy)
    some = Evaluator(run_copy, cfg, data_dir=cifar_dir, progress=False, add_outcomes=["clean"]).run()
    assert set(some["outcomes"]) == {"clean"}  # only the stage asked for ran again
    added = Evaluator(run_copy, cfg, data_dir=cifar_dir, progress=False, add_outcomes=OUTCOME_STAGES).run()
    assert added == first  # the same numbers, seconds and outcomes as the evaluation that kept them
    assert json.loads((run_copy / RESULTS).read_text())["outcomes"] == first["outcomes"]
    assert json.loads((run_copy / STATE).read_text())["partial"] == {}

    # A stored number the stage does not reproduce: its outcomes are refused, eval.json untouched.
    _strip_outcomes(run_copy)
    state = json.loads((run_copy / STATE).read_text())
    state["stages"]["pgd"]["pgd_acc"] += 1 / 16
    (run_copy / STATE).write_text(json.dumps(state))
    before = (run_copy / RESULTS).read_bytes()
    with pytest.raises(OutcomesError, match="stage pgd run again gave"):
        Evaluator(run_copy, cfg, data_dir=cifar_dir, progress=False, add_outcomes=OUTCOME_STAGES).run()
    assert (run_copy / RESULTS).read_bytes() == before
    kept = json.loads((run_copy / STATE).read_text())["stages"]
    assert "outcomes" in kept["clean"] and "outcomes" not in kept["pgd"]  # stages before it keep theirs


def test_adding_outcomes_needs_the_evaluation_they_belong_to(run_copy, cifar_dir):
    before = _snapshot(run_copy)
    with pytest.raises(ConfigError, match="no evaluation with these options"):
        Evaluator(run_copy, SMALL, data_dir=cifar_dir, progress=False, add_outcomes=["pgd"]).run()
    with pytest.raises(ConfigError, match="no stage faults keeps outcomes"):
        Evaluator(run_copy, SMALL, data_dir=cifar_dir, progress=False, add_outcomes=["faults"])
    runner = CliRunner()
    out = runner.invoke(app, ["evaluate", str(run_copy), "--add-outcomes", "all", "--data-dir", str(cifar_dir)])
    assert out.exit_code == 1 and "no evaluation with these options" in out.output and "Traceback" not in out.output
    assert _snapshot(run_copy) == before


def test_state_of_other_options_is_ignored(run_copy, cifar_dir):
    ev = Evaluator(run_copy, SMALL, data_dir=cifar_dir, progress=False)
    ev.save_state({"key": {"other": 1}, "stages": {"clean": {"clean_acc": 0.123, "seconds": 0}}, "partial": {}})
    assert ev.load_state()["stages"] == {}
    (run_copy / STATE).write_text("{not json")
    assert ev.load_state()["stages"] == {}


def test_no_checkpoint_is_a_clear_error_and_writes_nothing(tmp_path, cifar_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Evaluator(empty, SMALL, data_dir=cifar_dir)
    assert list(empty.iterdir()) == []
    with pytest.raises(CheckpointError, match="not a directory"):
        Evaluator(tmp_path / "missing", SMALL, data_dir=cifar_dir)


@pytest.mark.parametrize("eps", [-0.1, 1.5, float("nan")])
def test_eps_outside_unit_interval_is_rejected(eps):
    with pytest.raises(ConfigError, match="eps"):
        EvalConfig(eps=eps)


@pytest.mark.parametrize(
    "field,value",
    [("n", 0), ("autoattack_n", 0), ("neighbourhood", -1), ("param_attack", (0.02, 1.5)), ("pgd_steps", 2.5)],
)
def test_bad_options_are_rejected(field, value):
    with pytest.raises(ConfigError, match=field):
        EvalConfig(**{field: value})


def test_parse_lams():
    assert parse_lams("0.02, 0.1") == (0.02, 0.1) and parse_lams("") == ()
    with pytest.raises(ConfigError, match="comma-separated"):
        parse_lams("0.02,abc")
    with pytest.raises(ConfigError, match="--ber must be comma-separated"):  # names the option it parsed
        parse_lams("1e-4,x", "--ber")


def _write_meta(run_dir: Path, **model) -> None:
    meta = json.loads((run_dir / "checkpoint.json").read_text())
    meta["model"].update(model)
    (run_dir / "checkpoint.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("model", [{"width": 2}, {"arch": "resnet18"}])
def test_checkpoint_of_another_architecture_is_refused_untouched(run_copy, cifar_dir, model):
    Evaluator(
        run_copy, EvalConfig(n=8, pgd_steps=1, autoattack=False, param_attack=()), data_dir=cifar_dir, progress=False
    ).run()
    _write_meta(run_copy, **model)
    before = _snapshot(run_copy)
    with pytest.raises(CheckpointError):
        Evaluator(run_copy, SMALL, data_dir=cifar_dir).run()
    (run_copy / "config.toml").unlink()  # without the run's config the weights still do not fit
    before.pop("config.toml")
    if "width" in model:
        with pytest.raises(CheckpointError, match="does not fit"):
            Evaluator(run_copy, SMALL, data_dir=cifar_dir).run()
    assert _snapshot(run_copy) == before


def test_cli_evaluate_reports_bad_input_in_one_line(run_copy, cifar_dir, tmp_path):
    before = _snapshot(run_copy)
    runner = CliRunner()
    bad_eps = runner.invoke(app, ["evaluate", str(run_copy), "--eps", "2", "--data-dir", str(cifar_dir)])
    assert bad_eps.exit_code == 1 and "eps" in bad_eps.output and "Traceback" not in bad_eps.output
    empty = tmp_path / "nothing"
    empty.mkdir()
    missing = runner.invoke(app, ["evaluate", str(empty), "--data-dir", str(cifar_dir)])
    assert missing.exit_code == 1 and "no checkpoint" in missing.output
    assert _snapshot(run_copy) == before


def test_cli_evaluate_runs(run_copy, cifar_dir):
    out = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(run_copy),
            "--n",
            "8",
            "--no-autoattack",
            "--param-attack",
            "0",
            "--data-dir",
            str(cifar_dir),
            "--quiet",
        ],
    )
    assert out.exit_code == 0, out.output
    line = json.loads(out.output.strip().splitlines()[-1])
    assert 0 <= line["pgd_acc"] <= line["clean_acc"] and line["autoattack_acc"] is None
    row = json.loads((run_copy / RESULTS).read_text())["param_attack"][0]
    assert row["lam"] == 0 and row["acc_after"] == row["acc_before"] == line["clean_acc"]


def test_neighbour_sample_roundtrip():
    s = NeighbourSample("corner", 3, 0.5, 0.25)
    from approp.neighbourhood import samples_from_json, samples_to_json

    assert samples_from_json(samples_to_json([s])) == [s]
