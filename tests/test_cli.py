"""The command line parses, dispatches and turns user errors into one clear line."""

import json

import pytest
from typer.testing import CliRunner

from approp.cli import app
from approp.config import RunConfig, parse_set
from approp.experiments.preset import load_preset
from approp.experiments.sweep import load_sweep
from approp.precision import native_bf16
from conftest import REPO

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--eps", "-0.1"], "train.eps"),
        (["--lam", "-1"], "radius.lam"),
        (["--radius", "relative"], "radius.kind"),
        (["--algo", "magic"], "train.algo"),
        (["--precision", "fp16"], "train.precision"),
        (["--precision", "bf16", "--engine", "julia"], "train.precision"),
    ],
)
def test_invalid_options_fail_before_any_work(tmp_path, args, message):
    result = invoke("train", "--out", tmp_path / "run", *args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_missing_data_folder(tmp_path):
    result = invoke("train", "--out", tmp_path / "run", "--data-dir", tmp_path / "nowhere")
    assert result.exit_code == 1
    assert "APPROP_DATA" in result.output and "--download" in result.output


def test_main_and_certified_configs_are_what_validation_chose():
    load = lambda name: RunConfig.load(REPO / "configs" / name)  # noqa: E731
    main, certified = load("main.toml"), load("certified.toml")
    for cfg in (main, certified):
        assert cfg.train.algo == "app" and cfg.radius.kind == "tanh" and cfg.train.precision == "auto"
        assert cfg.radius.lam == 0.01 and abs(cfg.train.eps - 2 / 255) < 1e-12 and cfg.data.val_split == 5000
    # The main job is the cpu preset's APP(tanh) cell: κ = 0.95, chosen on validation for clean and
    # PGD accuracy (docs/app_recipe_sweep.md), trained as the preset trained it.
    from approp.experiments import load_preset

    cell = {c.algo.key: c.config for c in load_preset("cpu").cells("data")}["app_tanh"]
    assert main.replace(train={"precision": "fp32"}) == cell
    # The certified job: the recipe the validation sweep chose (docs/ibp_recipe_sweep.md).
    assert certified.model.init == "ibp" and certified.train.kappa_schedule == "none"
    assert (
        certified.train.ramp == "smoothed" and certified.train.reg_weight == 0.5 and certified.optim.grad_clip == 10.0
    )
    assert 2 * certified.train.ramp_epochs == certified.train.epochs  # the ramp is half the run


def test_train_then_bounds(cifar_dir, tmp_path):
    run = tmp_path / "run"
    result = invoke(
        "train",
        "--out",
        run,
        "--data-dir",
        cifar_dir,
        "--subset",
        256,
        "--test-subset",
        128,
        "--epochs",
        1,
        "--eps",
        0.001,
        "--radius",
        "abs",
        "--lam",
        0.01,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert 0.0 <= summary["clean_acc"] <= 1.0
    cfg = RunConfig.load(run / "config.toml")
    assert cfg.radius.kind == "abs" and cfg.train.eps == 0.001 and cfg.data.subset == 256
    # No config file, no --precision: bf16 where the CPU has it natively, recorded as such.
    assert cfg.train.precision == ("bf16" if native_bf16("cpu") else "fp32")
    result = invoke("bounds", run, "--data-dir", cifar_dir, "--n", 64)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["n"] == 64 and out["eps"] == 0.001 and out["mean_bound_width"] > 0
    assert out["verified_acc"] <= out["clean_acc"]
    result = invoke("bounds", run, "--data-dir", cifar_dir, "--eps", 2.0)
    assert result.exit_code == 1 and "[0, 1]" in result.output


def test_bounds_without_checkpoint(tmp_path):
    result = invoke("bounds", tmp_path)
    assert result.exit_code == 1 and "no checkpoint" in result.output


@pytest.mark.parametrize(
    "item, message",
    [
        ("trian.eps=0.1", "unknown config section 'trian'"),
        ("train.epsilon=0.1", "unknown key 'epsilon' in [train]; known: algo, epochs, eps"),
        ("train.epochs=1.5", "train.epochs must be an integer"),
        ("train.eps", "SECTION.KEY=VALUE"),
        ("radius.kind=relative", "radius.kind"),
        ("train.eps=2", "train.eps"),
    ],
)
def test_bad_set_fails_before_any_work(tmp_path, item, message):
    result = invoke("train", "--out", tmp_path / "run", "--set", item)
    assert result.exit_code == 1
    output = " ".join(result.output.split())  # the console wraps long messages
    assert message in output and "Traceback" not in output
    assert not (tmp_path / "run").exists()


def test_set_wins_over_the_dedicated_option(tmp_path):
    # --eps 0.001 alone is valid; the --set value, applied last, is out of range and is the one refused.
    result = invoke("train", "--out", tmp_path / "run", "--eps", 0.001, "--set", "train.eps=2")
    output = " ".join(result.output.split())
    assert result.exit_code == 1 and "train.eps must be in [0, 1]" in output and "got 2.0" in output
    result = invoke(
        "train", "--out", tmp_path / "run", "--eps", 2, "--set", "train.eps=0.001", "--set", "train.epochs=0"
    )  # the flag's 2 is overridden: only epochs is wrong
    assert result.exit_code == 1 and "train.epochs" in result.output and "train.eps" not in result.output


def test_train_with_set_reaches_the_recipe_fields(cifar_dir, tmp_path):
    # defaults < config file < dedicated options < --set, checked in the resolved config.toml
    config = tmp_path / "c.toml"
    config.write_text("[train]\nepochs = 3\nkappa = 0.7\nseed = 5\n[optim]\nlr = 0.01\ngrad_clip = 5.0\n")
    run = tmp_path / "run"
    result = invoke(
        "train",
        "--config",
        config,
        "--out",
        run,
        "--data-dir",
        cifar_dir,
        "--epochs",
        2,
        "--lr",
        0.02,
        "--set",
        "train.epochs=1",
        "--set",
        "model.init=ibp",
        "--set",
        "train.ramp=smoothed",
        "--set",
        "optim.grad_clip=10",
        "--set",
        "train.reg_weight=0.5",
        "--set",
        "train.eps=2/255",
        "--set",
        "data.subset=64",
        "--set",
        "data.test_subset=32",
        "--set",
        "data.augment=false",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    cfg = RunConfig.load(run / "config.toml")
    assert cfg.train.epochs == 1 and cfg.optim.lr == 0.02  # --set over --epochs; --lr over the file
    assert cfg.train.kappa == 0.7 and cfg.train.seed == 5  # the file over the defaults
    assert (cfg.model.init, cfg.train.ramp, cfg.optim.grad_clip, cfg.train.reg_weight) == ("ibp", "smoothed", 10.0, 0.5)
    assert cfg.train.eps == 2 / 255 and (cfg.data.subset, cfg.data.test_subset, cfg.data.augment) == (64, 32, False)
    assert cfg.train.precision == "fp32"  # a config file names its precision (here the library default)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_set_applies_to_every_cell_and_changes_fingerprints():
    quick = load_preset("quick")
    sets = parse_set(["train.epochs=1", "optim.grad_clip=10"])
    plain = {c.name: c for c in quick.cells()}
    changed = {c.name: c for c in quick.cells(overrides=sets)}
    assert changed.keys() == plain.keys()
    for name, cell in changed.items():
        assert cell.config.train.epochs == 1 and cell.config.optim.grad_clip == 10.0
        assert cell.config.train.eps == plain[name].config.train.eps  # ε stays the grid's
        assert cell.config.train.algo == plain[name].config.train.algo
        assert cell.fingerprint(quick.eval) != plain[name].fingerprint(quick.eval)


def test_reproduce_refuses_set_of_the_grid_axis(tmp_path):
    result = invoke("reproduce", "--preset", "quick", "--out", tmp_path / "out", "--set", "train.eps=0.1")
    assert result.exit_code == 1 and "grid axis" in result.output
    assert not (tmp_path / "out").exists()


def test_set_applies_to_every_sweep_variant(tmp_path):
    path = REPO / "configs" / "sweeps" / "app_recipe.toml"
    plain = {v.key: v.config for v in load_sweep(path).variants}
    sets = parse_set(["train.eps=1/255", "train.epochs=1"])
    changed = {v.key: v.config for v in load_sweep(path, overrides=sets).variants}
    assert plain["eps_normalised"].train.eps != plain["base"].train.eps  # a variant that sets ε itself ...
    assert {c.train.eps for c in changed.values()} == {1 / 255}  # ... is overridden by --set, like the rest
    assert {c.train.epochs for c in changed.values()} == {1}
    assert {k: c.train.algo for k, c in changed.items()} == {k: c.train.algo for k, c in plain.items()}
    result = invoke("sweep", path, "--out", tmp_path / "out", "--set", "data.val_split=0")
    assert result.exit_code == 1 and "held-out data" in result.output
