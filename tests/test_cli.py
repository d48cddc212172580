"""The command line parses, dispatches and turns user errors into one clear line."""

import json

import pytest
from typer.testing import CliRunner

from approp.cli import app
from approp.config import RunConfig
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


def test_main_config_is_valid():
    cfg = RunConfig.load(REPO / "configs" / "main.toml")
    assert cfg.train.algo == "app" and cfg.radius.kind == "tanh" and cfg.train.precision == "auto"
    # The recipe the validation sweep chose (docs/ibp_recipe_sweep.md), not the κ = 0.5 one that collapsed.
    assert cfg.model.init == "ibp" and cfg.train.kappa_schedule == "none" and cfg.train.ramp == "smoothed"
    assert cfg.train.reg_weight == 0.5 and cfg.optim.grad_clip == 10.0
    assert 2 * cfg.train.ramp_epochs == cfg.train.epochs  # the ramp is half the run, as the references


def test_train_then_bounds(cifar_dir, tmp_path):
    run = tmp_path / "run"
    result = invoke(
        "train", "--out", run, "--data-dir", cifar_dir, "--subset", 256, "--test-subset", 128,
        "--epochs", 1, "--eps", 0.001, "--radius", "abs", "--lam", 0.01, "--quiet",
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
