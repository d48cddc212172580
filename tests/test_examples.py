"""Every example in --quick mode, run as a subprocess, with assertions on what it prints.

Paths come from this file, never the working directory; the child gets this
interpreter and environment (CI installs approp with `pip install -e`). 02 runs
AutoAttack and PGD on sampled networks (about a minute on a CPU): `slow`.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NUMBER = r"(-?(?:\d+\.\d+(?:e[+-]\d+)?|nan|inf))"
JULIA_MISSING = "Julia engine unavailable, skipping: "


def _run(script: str, cifar_dir: Path, *extra: str) -> str:
    """Returns the stdout of examples/<script> --quick, asserting exit status 0."""
    env = {**os.environ, "APPROP_DATA": str(cifar_dir), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--quick", "--data-dir", str(cifar_dir), *extra],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=EXAMPLES.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _numbers(line: str) -> list[float]:
    return [float(v) for v in re.findall(NUMBER, line)]


def _line(out: str, prefix: str) -> str:
    lines = [ln for ln in out.splitlines() if ln.startswith(prefix)]
    assert lines, f"no line starting with {prefix!r} in:\n{out}"
    return lines[0]


def _shares(out: str, label: str) -> list[float]:
    """Returns every number after `label` (a share), each checked to lie in [0, 1]."""
    vals = [float(v) for v in re.findall(re.escape(label) + r"\s*" + NUMBER, out)]
    assert vals and all(0.0 <= v <= 1.0 for v in vals), (label, vals, out)
    return vals


def test_example_01_trains_loads_and_bounds(cifar_dir, tmp_path):
    out = _run("01_train_and_bound.py", cifar_dir, "--out", str(tmp_path / "run"))
    assert all(math.isfinite(v) for v in _numbers(_line(out, "trained 1 epoch(s)").split(":", 1)[1]))
    assert (tmp_path / "run" / "checkpoint.json").exists()
    width = _numbers(_line(out, "interval bounds:"))[0]
    assert math.isfinite(width) and width > 0 and "clean logits inside: True" in out
    ibp, lin = _numbers(_line(out, "median smallest margin bound:"))
    assert math.isfinite(ibp) and math.isfinite(lin) and lin >= ibp - 1e-6  # linear is tighter
    ibp_share, best_share = (_numbers(_line(out, f"verified share ({m})"))[0] for m in ("ibp", "best"))
    assert 0 <= ibp_share <= best_share <= 1


@pytest.mark.slow
def test_example_02_evaluates_like_the_thesis(cifar_dir):
    out = _run("02_evaluate_like_the_thesis.py", cifar_dir)
    clean, pgd, ver = _numbers(_line(out, "clean acc"))[:3]
    assert all(0 <= v <= 1 for v in (clean, pgd, ver)) and pgd <= clean and ver <= clean
    _shares(out, "AutoAttack acc")
    rows = [_numbers(ln) for ln in out.splitlines() if ln.startswith("parameter attack")]
    assert len(rows) == 2 and all(0 <= v <= 1 for r in rows for v in r[1:])
    assert {m for m in ("uniform", "corner") if f"neighbourhood {m}:" in out} == {"uniform", "corner"}
    _shares(out, "clean acc mean")


@pytest.mark.parametrize("script", ["03_julia_core_from_python.py", "04_crosscheck_julia_vs_pytorch.py"])
def test_julia_examples(cifar_dir, script):
    from approp import julia

    out = _run(script, cifar_dir)
    ok, reason = julia.availability()
    if not ok:  # one line naming what is missing, exit 0
        assert out.strip() == JULIA_MISSING + reason.splitlines()[0]
        return
    if script.startswith("03"):
        assert all(math.isfinite(v) for v in _numbers(_line(out, "Julia worst-case loss")))
        assert "Adam step 3" in out
    else:
        assert "NO" not in out.split()  # every difference within its tolerance


def test_example_05_bounds_your_own_model(cifar_dir):
    out = _run("05_your_own_model.py", cifar_dir)
    widths = [_numbers(ln)[2] for ln in out.splitlines() if ln.startswith("eps 0")]
    assert len(widths) == 3 and all(math.isfinite(w) for w in widths)
    assert widths == sorted(widths) and widths[0] > 0  # widening with ε, λ > 0 at ε = 0
    _shares(out, "verified share")
    assert _numbers(_line(out, "eps = lam = 0:"))[-1] < 1e-4  # collapse to the forward pass
    assert "unsupported layer: no interval rule for layer 2 (Tanh)" in out
    # The residual network (BatchNorm, `out + h`): bounds widening with ε, then certified as a saved file.
    residual = [_numbers(ln)[2] for ln in out.splitlines() if ln.startswith("residual eps 0")]
    assert len(residual) == 3 and all(math.isfinite(w) for w in residual)
    assert residual == sorted(residual) and residual[0] > 0
    pattern = (
        r"residual certified of (\d+) correct: lam 0.0001: (\d+), lam 0.001: (\d+), lam 0.01: (\d+); "
        r"int8 unchanged (\d+)"
    )
    found = re.fullmatch(pattern, _line(out, "residual certified of"))
    assert found, out
    correct, *curve, unchanged = (int(v) for v in found.groups())
    assert 0 < correct <= 64 and curve == sorted(curve, reverse=True) and curve[0] <= correct
    assert 0 <= unchanged <= correct
