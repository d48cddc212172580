"""tools/gpu_check.sh: its inputs are checked and its plan printed (--dry-run), its CPU fallback runs
the steps at a tiny budget and packs what a device call can bring back, and the tiny preset copy
keeps the fronts preset's cells."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from approp.experiments.preset import load_preset
from conftest import REPO

SCRIPT = REPO / "tools" / "gpu_check.sh"
_SPEC = importlib.util.spec_from_file_location("gpu_check_preset", REPO / "tools" / "gpu_check_preset.py")
gpu_check_preset = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(gpu_check_preset)


def run_script(tmp_path: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Returns the finished script run with this Python, its output folder and work folder under tmp_path."""
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "OUT": str(tmp_path / "out"),
        "GPU_CHECK_WORK": str(tmp_path / "work"),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=tmp_path,
    )


def test_dry_run_checks_the_inputs_and_prints_the_plan(cifar_dir, tmp_path):
    done = run_script(tmp_path, "--dry-run", "--cells-seconds", "300", str(cifar_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    if torch.cuda.is_available():
        assert "# GPU check — GPU:" in out and "pytest -q -m gpu" in out and "--device cuda --only 'eps*-KEY'" in out
    else:
        assert "CPU FALLBACK: no CUDA device" in out and "skipped: pytest -m gpu (its tests need a CUDA device)" in out
        assert "throughput.py --device cpu" in out and "fronts_tiny.toml --device cpu --only 'eps*-KEY'" in out
    assert "cells (window ≤ 300 s, at most 99): app_k095 awp_g010 standard app_k080" in out
    assert "dry run: inputs checked, nothing run" in out
    assert not (tmp_path / "work" / "fronts_tiny.toml").exists()  # nothing run
    assert (tmp_path / "out" / "gpu_check_summary.md").read_text().startswith("# GPU check")
    cells_only = run_script(tmp_path, "--dry-run", "--cells-only", str(cifar_dir))
    assert cells_only.returncode == 0 and "skipped (--cells-only): the tests and the benchmarks" in cells_only.stdout
    assert "throughput" not in cells_only.stdout and "- cells (window ≤ 480 s" in cells_only.stdout
    usage = run_script(tmp_path, "--help")
    assert usage.returncode == 0 and usage.stdout.startswith("tools/gpu_check.sh") and "set -uo" not in usage.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "give DIR"),
        (("missing_folder",), "no folder missing_folder"),
        (("--budget", "ten", "."), "take whole numbers"),
        (("--frobnicate", "."), "unknown option --frobnicate"),
        ((".",), "cifar-10-batches-py/data_batch_1 is missing"),
    ],
)
def test_bad_inputs_stop_with_one_line(tmp_path, args, message):
    done = run_script(tmp_path, *args)
    assert done.returncode == 2 and message in done.stdout + done.stderr


def test_tiny_preset_keeps_the_fronts_cells_and_shrinks_the_budget(tmp_path):
    dest = tmp_path / "tiny.toml"
    assert gpu_check_preset.main([str(REPO / "configs" / "presets" / "fronts.toml"), str(dest)]) == 0
    tiny, full = load_preset(dest), load_preset("fronts")
    assert [c.name for c in tiny.cells()] == [c.name for c in full.cells()]
    for small, big in zip(tiny.cells(), full.cells()):
        assert (small.config.train.algo, small.config.train.kappa, small.config.train.awp_gamma) == (
            big.config.train.algo,
            big.config.train.kappa,
            big.config.train.awp_gamma,
        )
        assert small.config.train.epochs == 2 and small.config.data.subset == 64 and small.config.train.ramp_epochs == 1
        assert small.config.model.arch == "cnn4_bn" and small.config.train.device == "cpu"
    assert (tiny.eval.n, tiny.eval.autoattack_n, tiny.eval.param_attack) == (16, 4, (0.02,))
    assert tiny.reference is not None and tiny.reference.is_file()


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU fallback")
def test_cpu_fallback_runs_the_steps_and_packs_one_cell(cifar_dir, tmp_path):
    done = run_script(
        tmp_path, "--max-cells", "1", "--budget", "560", "--cells-seconds", "420", str(cifar_dir), timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "out"
    summary = (out / "gpu_check_summary.md").read_text()
    assert summary.startswith("# GPU check — CPU FALLBACK") and "### throughput: ok" in summary
    assert "- app_k095: finished" in summary and "- awp_g010: not run" in summary
    assert (
        "**some APP point matches or beats an AWP point" in summary
        and "eps2over255-awp_g010 (AWP γ=0.01): not started" in summary
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "fronts_cpu_fallback.tar.gz",
        "fronts_cpu_fallback_weights.tar.gz",
        "gpu_check.log",
        "gpu_check_summary.md",
    ]
    with tarfile.open(out / "fronts_cpu_fallback.tar.gz") as tar:
        names = tar.getnames()
        device = tar.extractfile("fronts_cpu_fallback/DEVICE").read().decode()
    run = "fronts_cpu_fallback/cells/eps2over255-app_k095/run/"
    assert run + "eval.json" in names and "fronts_cpu_fallback/fronts_verdicts.md" in names
    assert not any(n.endswith(("train_state.pt", "model.safetensors")) for n in names)
    assert device.startswith("cpu_fallback")
    with tarfile.open(out / "fronts_cpu_fallback_weights.tar.gz") as tar:
        assert tar.getnames() == [run + "model.safetensors"]
