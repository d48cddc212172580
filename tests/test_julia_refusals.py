"""What the Julia engine cannot do is refused with a one-line error before Julia starts or a run
directory is written: radius kind "quant", BatchNorm models, a missing Julia, a failed setup.
Checked without Julia."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from approp import julia
from approp.config import RunConfig
from approp.train import fit

REPO = Path(__file__).resolve().parents[1]
CLI = "from approp.cli import app; app()"


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False
    )


def _quant_radius():
    from approp.config import RadiusConfig

    return RadiusConfig("quant", lam=1.0, bits=4)


def test_quant_radius_is_refused_by_name_before_julia_starts():
    """APProp.RadiusSpec has abs, const and tanh only: "quant" would throw inside Julia (a JuliaError
    traceback, after the run directory was written), so every entry point refuses it first."""
    from approp.config import ConfigError
    from approp.data import Split
    from approp.julia.convert import UnsupportedByJuliaError, check_radius
    from approp.julia.runner import check_julia_run
    from approp.models import CNN4

    cfg = RunConfig().replace(train={"engine": "julia", "algo": "app"}, radius={"kind": "quant", "bits": 4})
    with pytest.raises(ConfigError, match=r"radius kinds abs, const, tanh; got 'quant'"):
        check_julia_run(cfg)
    with pytest.raises(UnsupportedByJuliaError, match="no radius kind 'quant'"):
        check_radius(_quant_radius())
    for kind in ("abs", "const", "tanh"):
        check_radius(RunConfig().replace(radius={"kind": kind}).radius)
    gen = torch.Generator().manual_seed(0)
    test = Split(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=gen), torch.arange(4))
    # Refused before get_engine: on a machine without Julia the message is still this one.
    with pytest.raises(ConfigError, match="no radius kind 'quant'"):
        julia.bound_stats(CNN4(), test, 0.01, _quant_radius(), 1.0, "cpu")


@pytest.mark.parametrize("arch", ["cnn4_bn", "cnn7", "resnet20", "preact_resnet18"])
def test_bounds_of_a_model_julia_cannot_hold_is_a_one_line_error(arch):
    """approp bounds --engine julia on a BatchNorm run: check_cnn4's TypeError reached the command
    line as a traceback (USER_ERRORS has ConfigError, not it), once Julia had started."""
    from approp.cli import USER_ERRORS
    from approp.config import ConfigError, ModelConfig
    from approp.data import Split
    from approp.models import build_model

    model = build_model(ModelConfig(arch=arch)).eval()
    gen = torch.Generator().manual_seed(0)
    test = Split(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=gen), torch.arange(4))
    radius = RunConfig().radius
    with pytest.raises(ConfigError, match=r"no BatchNorm rule: .*use the torch engine") as err:
        julia.bound_stats(model, test, 0.01, radius, radius.lam, "cpu")
    assert isinstance(err.value, USER_ERRORS)


@pytest.mark.parametrize("arch", ["resnet20", "preact_resnet18"])
def test_residual_network_training_is_refused_by_name_before_data_or_run_dir(tmp_path, arch):
    """fit and `approp train` with engine julia name the architecture, read no data (the folder does not
    exist) and write no run directory; the command line prints one line, no traceback."""
    from typer.testing import CliRunner

    from approp.cli import app
    from approp.config import ConfigError

    no_data, run = tmp_path / "no-data", tmp_path / "run"
    cfg = RunConfig().replace(model={"arch": arch}, data={"data_dir": str(no_data)}, train={"engine": "julia"})
    with pytest.raises(ConfigError, match=f"no residual networks: it trains only model.arch 'cnn4'; got '{arch}'"):
        fit(cfg, run, progress=False)
    args = ["train", "--out", str(run), "--data-dir", str(no_data), "--engine", "julia", "--set", f"model.arch={arch}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"no residual networks: it trains only model.arch 'cnn4'; got '{arch}'" in " ".join(result.output.split())
    assert not run.exists()


def test_missing_julia_is_refused_before_the_run_dir_is_written(cifar_dir, tmp_path, monkeypatch):
    """Julia started only after the run directory held config.toml (engine julia): a rerun of the same
    --out with engine 'torch' was then refused as 'a different configuration'."""
    from approp.config import ConfigError

    def no_julia(device):
        raise julia.JuliaUnavailableError("no Julia runtime was found (JULIA, PATH, juliaup).")

    monkeypatch.setattr(julia, "get_engine", no_julia)
    cfg = RunConfig().replace(
        data={"data_dir": str(cifar_dir), "subset": 64, "test_subset": 32, "batch_size": 32},
        train={"epochs": 1, "engine": "julia", "algo": "app"},
    )
    with pytest.raises(ConfigError, match="--engine julia is unavailable: no Julia runtime"):
        fit(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_failed_instantiate_is_a_one_line_error(tmp_path):
    """approp julia-setup where Pkg.instantiate() fails (offline, say): the CalledProcessError came
    out as a traceback under Julia's own messages."""
    exe = tmp_path / "bin" / "julia"
    exe.parent.mkdir(parents=True)
    exe.write_text(
        "#!/bin/sh\n"
        "if [ \"$1\" = --version ]; then echo 'julia version 1.10.4'; exit 0; fi\n"
        "echo 'ERROR: could not download https://pkg.julialang.org/registries' >&2; exit 1\n"
    )
    exe.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON_JULIA", "JULIA"))}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    proc = _run(["julia-setup", "--julia", str(exe), "--no-precompile"], env)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "could not download" in proc.stderr
    one_line = " ".join(proc.stderr.split()).replace("`", "'")  # the console wraps at its width
    assert "Pkg.instantiate()' failed with exit status 1" in one_line
    assert not (tmp_path / "cache" / "approp" / "julia-setup.json").exists()  # nothing recorded as set up
