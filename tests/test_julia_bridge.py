"""The Python half of the Julia bridge, checked without Julia: finding Julia, import order, divergence.

A fake `juliacall` package (tmp folder on PYTHONPATH) and a fake `julia`
script that answers `--version` stand in for the runtime; the fake records
whether torch was already imported when it was.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from approp import julia
from approp.checkpoint import load_model
from approp.config import RunConfig
from approp.julia import _runtime
from approp.train import TrainingDiverged, fit

REPO = Path(__file__).resolve().parents[1]
JULIA_VARS = ("PYTHON_JULIACALL_EXE", "JULIA", "PYTHON_JULIAPKG_EXE")

FAKE_JULIACALL = """
import os, sys
with open(os.environ["FAKE_JULIACALL_RECORD"], "w") as fh:
    fh.write("torch-first" if "torch" in sys.modules else "juliacall-first")

class _Main:
    def seval(self, code):
        raise RuntimeError("fake juliacall: no Julia here")

Main = _Main()
"""


def _fake_julia(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho 'julia version 1.10.4'\n")
    path.chmod(0o755)
    return path


class TestFindJulia:
    @pytest.fixture(autouse=True)
    def _clean_env(self, tmp_path, monkeypatch):
        for var in JULIA_VARS:
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
        monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def test_a_set_but_invalid_variable_is_skipped(self, tmp_path, monkeypatch):
        good = _fake_julia(tmp_path / "bin" / "julia-1.10")
        monkeypatch.setenv("PYTHON_JULIACALL_EXE", str(tmp_path / "missing" / "julia"))
        monkeypatch.setenv("JULIA", str(good))
        assert _runtime.find_julia() == str(good)

    def test_all_variables_invalid_falls_through_to_path(self, tmp_path, monkeypatch):
        on_path = _fake_julia(tmp_path / "path" / "julia")
        for var in JULIA_VARS:
            monkeypatch.setenv(var, str(tmp_path / "missing" / var))
        monkeypatch.setenv("PATH", str(on_path.parent))
        assert _runtime.find_julia() == str(on_path)

    def test_variables_keep_their_order(self, tmp_path, monkeypatch):
        first = _fake_julia(tmp_path / "a" / "julia")
        monkeypatch.setenv("PYTHON_JULIAPKG_EXE", str(_fake_julia(tmp_path / "c" / "julia")))
        monkeypatch.setenv("PYTHON_JULIACALL_EXE", str(first))
        assert _runtime.find_julia() == str(first)

    def test_none_when_nothing_is_found(self, tmp_path, monkeypatch):
        monkeypatch.setenv("JULIA", str(tmp_path / "missing" / "julia"))
        assert _runtime.find_julia() is None


class TestEngineRequested:
    @pytest.mark.parametrize(
        ("argv", "expected"),
        [
            (["train", "--engine", "julia", "--out", "r"], True),
            (["bounds", "r", "--engine=julia"], True),
            (["train", "--engine", "torch"], False),
            (["train", "--engine", "julia", "--engine", "torch"], False),
            (["train", "--out", "julia"], False),
            (["train", "--engine"], False),
            ([], False),
            # --set wins over --engine, as the CLI resolves them; the last --set of the key wins.
            (["train", "--set", "train.engine=julia"], True),
            (["train", "--set=train.engine=julia", "--engine", "torch"], True),
            (["train", "--engine", "julia", "--set", "train.engine=torch"], False),
            (["train", "--set", "train.engine=julia", "--set", "train.engine=torch"], False),
            (["train", "--set", "train.epochs=2", "--engine", "julia"], True),
        ],
    )
    def test_command_line(self, argv, expected):
        assert _runtime.engine_requested(argv) is expected

    def test_config_file(self, tmp_path):
        cfg = tmp_path / "cfg.toml"
        cfg.write_text('[train]\nengine = "julia"\n')
        assert _runtime.engine_requested(["train", "--config", str(cfg)])
        assert _runtime.engine_requested([f"--config={cfg}"])
        assert not _runtime.engine_requested(["--config", str(cfg), "--engine", "torch"])
        cfg.write_text("[train]\nepochs = 2\n")
        assert not _runtime.engine_requested(["--config", str(cfg)])
        assert not _runtime.engine_requested(["--config", str(tmp_path / "missing.toml")])


def _fake_runtime_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Returns (environment, record file) in which the Julia engine looks available, juliacall being fake."""
    pkg = tmp_path / "site" / "juliacall"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE_JULIACALL)
    exe = _fake_julia(tmp_path / "bin" / "julia")
    cache = tmp_path / "cache"
    stamp = cache / "approp" / "julia-setup.json"
    stamp.parent.mkdir(parents=True)
    project = _runtime.project_dir()
    digest = _runtime._manifest_digest(project)
    stamp.write_text(json.dumps({"project": str(project), "manifest_sha256": digest}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON_JULIA", "JULIA"))}
    record = tmp_path / "record.txt"
    env.update(
        PYTHONPATH=os.pathsep.join([str(pkg.parent), env.get("PYTHONPATH", "")]),
        JULIA=str(exe),
        XDG_CACHE_HOME=str(cache),
        FAKE_JULIACALL_RECORD=str(record),
    )
    return env, record


def _run(code: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=False,
    )


CLI = "from approp.cli import app; app()"


class TestImportOrder:
    def test_cli_with_julia_engine_imports_juliacall_before_torch(self, tmp_path):
        env, record = _fake_runtime_env(tmp_path)
        proc = _run(CLI, ["train", "--engine", "julia", "--help"], env)
        assert proc.returncode == 0, proc.stderr
        assert record.read_text() == "juliacall-first"

    def test_config_selecting_julia_imports_juliacall_before_torch(self, tmp_path):
        env, record = _fake_runtime_env(tmp_path)
        cfg = tmp_path / "cfg.toml"
        cfg.write_text('[train]\nengine = "julia"\n')
        proc = _run(CLI, ["train", "--config", str(cfg), "--help"], env)
        assert proc.returncode == 0, proc.stderr
        assert record.read_text() == "juliacall-first"

    def test_default_engine_never_imports_juliacall(self, tmp_path):
        env, record = _fake_runtime_env(tmp_path)
        code = "import sys\nimport approp.cli\nassert 'juliacall' not in sys.modules, 'imported'"
        proc = _run(code, ["train", "--out", "r"], env)
        assert proc.returncode == 0, proc.stderr
        assert not record.exists()

    def test_test_suite_imports_juliacall_before_torch(self, tmp_path):
        env, record = _fake_runtime_env(tmp_path)
        proc = _run(f"import runpy; runpy.run_path({str(REPO / 'tests' / 'conftest.py')!r})", [], env)
        assert proc.returncode == 0, proc.stderr
        assert record.read_text() == "juliacall-first"

    def test_late_start_warns_with_the_fix(self, tmp_path):
        env, record = _fake_runtime_env(tmp_path)
        proc = _run("import torch\nfrom approp import julia\nassert julia.preload()", [], env)
        assert proc.returncode == 0, proc.stderr
        assert record.read_text() == "torch-first"
        assert "approp.julia.preload() before importing torch" in proc.stderr


class FakeTrainer:
    """Returns losses like JuliaTrainer.step: finite until step `nan_at` (1-based), then NaN."""

    def __init__(self, params: dict[str, np.ndarray], nan_at: int, slots=("momentum_buffer",)) -> None:
        self.start = {k: v.copy() for k, v in params.items()}
        self.steps, self.nan_at, self.applied = 0, nan_at, 0
        self.slots, self.loaded = slots, None

    def step(self, x, y, eps, lam=None, lr=None, kappa=None) -> float:
        assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape[1:] == (3, 32, 32)
        assert y.shape == (x.shape[0],) and 0 <= y.min() and y.max() < 10
        assert all(isinstance(v, numbers.Real) for v in (eps, lam, lr, kappa))
        self.steps += 1
        if self.steps == self.nan_at:
            return math.nan
        self.applied += 1
        return 1.0

    def step_logs(self, x, y, eps, lam=None, lr=None, kappa=None) -> dict[str, float]:
        loss = self.step(x, y, eps, lam=lam, lr=lr, kappa=kappa)
        return {"loss": loss, "worst_loss": loss + 0.5, "clean_loss": loss - 0.5}

    def params(self) -> dict[str, np.ndarray]:
        return {k: v + 0.01 * self.applied for k, v in self.start.items()}

    def optimizer_state(self):  # as JuliaTrainer's: every buffer holds the steps applied
        return self.applied, {s: {k: np.full_like(v, self.applied) for k, v in self.start.items()} for s in self.slots}

    def load_optimizer_state(self, step, state):
        self.loaded = (step, state)


class FakeEngine:
    def __init__(self, nan_at: int) -> None:
        self.nan_at, self.trainers = nan_at, []

    def trainer(self, params, radius, **kw):
        from approp.julia.engine import optimizer_slots

        slots = optimizer_slots(kw["optimizer"], kw["momentum"])
        self.trainers.append(FakeTrainer(params, self.nan_at, slots))
        return self.trainers[-1]


def test_nan_from_julia_stops_the_run_and_keeps_the_last_good_checkpoint(cifar_dir, tmp_path, monkeypatch):
    cfg = RunConfig().replace(
        data={"data_dir": str(cifar_dir), "subset": 128, "test_subset": 64, "batch_size": 32},
        train={"epochs": 3, "engine": "julia", "algo": "app", "warmup_epochs": 0, "ramp_epochs": 1},
    )
    steps = 128 // 32
    engine = FakeEngine(nan_at=steps + 2)
    monkeypatch.setattr(julia, "get_engine", lambda device: engine)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, batch 2.*checkpoint after epoch 1 is kept"):
        fit(cfg, tmp_path, progress=False)
    model, meta = load_model(tmp_path)
    assert meta["epoch"] == 0 and meta["engine"] == "julia"
    good = engine.trainers[0].start
    for name, value in model.state_dict().items():
        expected = torch.from_numpy(good[name] + 0.01 * steps)
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-6, msg=name)
    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1
    # The same columns as a PyTorch APP epoch: the two loss terms and the ramp.
    row = json.loads(rows[0])
    assert (row["loss"], row["worst_loss"], row["clean_loss"]) == (1.0, 1.5, 0.5)
    assert row["ramp"] == 1.0  # ramp_epochs = 1: full at the end of the first epoch


@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_resumed_julia_run_gets_its_optimiser_state_back(cifar_dir, tmp_path, monkeypatch, optim):
    from approp.checkpoint import STATE
    from approp.config import ConfigError

    cfg = RunConfig().replace(
        data={"data_dir": str(cifar_dir), "subset": 64, "test_subset": 32, "batch_size": 32},
        train={"epochs": 2, "engine": "julia", "algo": "app", "warmup_epochs": 0, "ramp_epochs": 1},
        optim={"name": optim},
    )
    first = FakeEngine(nan_at=3)  # two steps per epoch: NaN in epoch 2 leaves epoch 1's checkpoint
    monkeypatch.setattr(julia, "get_engine", lambda device: first)
    with pytest.raises(TrainingDiverged):
        fit(cfg, tmp_path, progress=False)
    saved = torch.load(tmp_path / STATE, weights_only=False)["optimizer"]["state"]
    assert len(saved) == 12 and all(
        float(v["exp_avg" if optim == "adam" else "momentum_buffer"].max()) == 2.0 for v in saved.values()
    )
    second = FakeEngine(nan_at=0)
    monkeypatch.setattr(julia, "get_engine", lambda device: second)
    fit(cfg, tmp_path, progress=False)
    step, state = second.trainers[0].loaded
    slots = ("exp_avg", "exp_avg_sq") if optim == "adam" else ("momentum_buffer",)
    assert step == (2 if optim == "adam" else 0) and tuple(state) == slots
    assert all(np.all(a == 2.0) for slot in state.values() for a in slot.values())
    # A train state without it (written before the Julia engine saved it) is refused.
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    meta["epoch"] = 0
    (tmp_path / "checkpoint.json").write_text(json.dumps(meta))
    state_file = torch.load(tmp_path / STATE, weights_only=False)
    state_file["optimizer"]["state"] = {}
    torch.save(state_file, tmp_path / STATE)
    with pytest.raises(ConfigError, match="holds no optimiser state"):
        fit(cfg, tmp_path, progress=False)


SHAPES = {  # CNN4 width 1, PyTorch layout
    "layers.1.weight": (32, 3, 3, 3),
    "layers.1.bias": (32,),
    "layers.3.weight": (32, 32, 3, 3),
    "layers.3.bias": (32,),
    "layers.6.weight": (64, 32, 3, 3),
    "layers.6.bias": (64,),
    "layers.8.weight": (64, 64, 3, 3),
    "layers.8.bias": (64,),
    "layers.12.weight": (256, 4096),
    "layers.12.bias": (256,),
    "layers.14.weight": (10, 256),
    "layers.14.bias": (10,),
}


class FakeAPProp:
    """Returns what APProp's api_* entry points would, checking the arrays Python hands over."""

    def api_model(self, *ps, backend):
        assert backend == "cpu" and [p.shape[-1] for p in ps[:8:2]] == [32, 32, 64, 64]
        assert ps[0].shape == (3, 3, 3, 32) and ps[8].shape == (256, 4096)  # Flux layout
        return ps

    def api_bounds(self, model, x, eps, spec, *, lam, backend):
        assert x.shape == (32, 32, 3, 2) and x.dtype == model[0].dtype  # WHCN, params' dtype
        lo = np.arange(20.0).reshape(10, 2)  # (K, B): lo[k, b] = 2k + b
        return lo, lo + 1

    def api_margin_lower_bounds(self, model, x, y, eps, spec, *, lam, backend):
        assert y.dtype == np.int64 and list(y) == [1, 10]  # 1-based labels
        return np.arange(20.0).reshape(10, 2)

    def api_verified(self, model, x, y, eps, spec, *, lam, backend):
        return np.array([True, False])

    def api_loss_and_gradients(self, model, x, y, eps, spec, *, lam, backend, kappa, margin):
        return 0.5, tuple(p * 2 for p in model)

    def api_step_b(self, handle, x, y, eps, *, lam, lr, backend, **kw):
        assert x.shape == (32, 32, 3, 2) and list(y) == [1, 10]
        return (0.75, 1.0, None) if kw.get("kappa") == 0.0 else (0.75, 1.0, 0.5)

    def RadiusSpec(self, kind, **kw):
        return (kind, kw)


def test_engine_passes_flux_layouts_and_returns_pytorch_layouts(monkeypatch):
    from approp.config import RadiusConfig
    from approp.julia.engine import JuliaEngine

    monkeypatch.setattr(_runtime, "to_julia_array", lambda a: np.asarray(a))
    engine = JuliaEngine.__new__(JuliaEngine)
    engine.backend, engine.ap = "cpu", FakeAPProp()
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    x, y, radius = rng.random((2, 3, 32, 32)), np.array([0, 9]), RadiusConfig("abs", lam=0.01)
    lo, hi = engine.bounds(params, x, 0.01, radius)
    assert lo.shape == (2, 10) and lo[1, 3] == 2 * 3 + 1 and np.array_equal(hi, lo + 1)
    assert engine.margin_lower_bounds(params, x, y, 0.01, radius)[0, 9] == 18.0
    loss, grads = engine.loss_and_gradients(params, x, y, 0.01, radius, kappa=0.5)
    assert loss == 0.5 and set(grads) == set(SHAPES)
    assert all(np.array_equal(grads[k], 2 * params[k]) for k in SHAPES)  # back in PyTorch layout


def test_trainer_step_logs_have_pytorchs_keys(monkeypatch):
    from approp.config import RadiusConfig
    from approp.julia.engine import JuliaEngine, JuliaTrainer

    monkeypatch.setattr(_runtime, "to_julia_array", lambda a: np.asarray(a))
    engine = JuliaEngine.__new__(JuliaEngine)
    engine.backend, engine.ap = "cpu", FakeAPProp()
    trainer = JuliaTrainer(engine, "handle", RadiusConfig("abs", lam=0.01), np.dtype(np.float32))
    x, y = np.random.default_rng(0).random((2, 3, 32, 32)), np.array([0, 9])
    assert trainer.step_logs(x, y, 0.01) == {"loss": 0.75, "worst_loss": 1.0, "clean_loss": 0.5}
    assert trainer.step_logs(x, y, 0.01, kappa=0.0) == {"loss": 0.75, "worst_loss": 1.0}
    assert trainer.step(x, y, 0.01) == 0.75


def test_to_julia_array_starts_julia_before_importing_juliacall(monkeypatch):
    order = []

    class FakeMain:
        def seval(self, code):
            return f"type {code}"

    def fake_main():
        order.append("julia_main")  # where configure() sets PYTHON_JULIACALL_EXE/PROJECT
        fake = type(sys)("juliacall")
        fake.convert = lambda t, a: (t, a.shape)
        monkeypatch.setitem(sys.modules, "juliacall", fake)
        return FakeMain()

    monkeypatch.delitem(sys.modules, "juliacall", raising=False)
    monkeypatch.setattr(_runtime, "julia_main", fake_main)
    monkeypatch.setattr(_runtime, "_ARRAY_TYPES", {})
    assert _runtime.to_julia_array(np.zeros((2, 3))) == ("type Array{Float64,2}", (2, 3))
    assert order == ["julia_main"]
    with pytest.raises(TypeError, match="int32"):
        _runtime.to_julia_array(np.zeros(2, np.int32))


def test_engine_builds_the_julia_model_once_per_weights(monkeypatch):
    from approp.config import RadiusConfig
    from approp.julia.engine import JuliaEngine

    built = []

    class Counting(FakeAPProp):
        def api_model(self, *ps, backend):
            built.append(ps)
            return super().api_model(*ps, backend=backend)

    monkeypatch.setattr(_runtime, "to_julia_array", lambda a: np.array(a))
    engine = JuliaEngine.__new__(JuliaEngine)
    engine.backend, engine.ap = "cpu", Counting()
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    x, y, radius = rng.random((2, 3, 32, 32)), np.array([0, 9]), RadiusConfig("abs", lam=0.01)
    for _ in range(2):  # what approp.julia.bound_stats does per batch
        engine.bounds(params, x, 0.01, radius)
        engine.verified(params, x, y, 0.01, radius)
    assert len(built) == 1
    engine.bounds({k: v.copy() for k, v in params.items()}, x, 0.01, radius)  # equal weights
    assert len(built) == 1
    params["layers.14.bias"][3] += 1.0  # changed in place: a new model
    engine.bounds(params, x, 0.01, radius)
    assert len(built) == 2 and built[1][11][3] == params["layers.14.bias"][3]
    engine.bounds({k: v.astype(np.float64) for k, v in params.items()}, x, 0.01, radius)
    assert len(built) == 3 and built[2][0].dtype == np.float64


def test_julia_engine_refuses_data_parallel_runs(monkeypatch):
    from approp.config import ConfigError
    from approp.julia.runner import JuliaEpochs
    from approp.models import CNN4

    monkeypatch.setattr(julia, "get_engine", lambda device: FakeEngine(nan_at=0))
    cfg = RunConfig().replace(train={"engine": "julia", "algo": "app"})
    with pytest.raises(ConfigError, match=r"'julia' runs in one process; got a torchrun world size of 2"):
        JuliaEpochs(cfg, CNN4(), world_size=2)
    assert JuliaEpochs(cfg, CNN4(), world_size=1).trainer is None


def test_data_parallel_julia_run_is_refused_before_the_run_dir_is_written(monkeypatch, tmp_path):
    from approp.config import ConfigError
    from approp.distributed import DistInfo
    from approp.train import loop

    monkeypatch.setattr(loop.ddp, "setup", lambda device: (DistInfo(rank=0, world_size=2), device))
    cfg = RunConfig().replace(train={"engine": "julia", "algo": "app"}, data={"data_dir": str(tmp_path / "none")})
    with pytest.raises(ConfigError, match="torchrun world size of 2"):
        loop.fit(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # a rerun with engine 'torch' and the same --out still works


@pytest.mark.parametrize("device, expected", [("cpu", ("cpu", 0)), ("cuda", ("cuda", 0)), ("cuda:3", ("cuda", 3))])
def test_device_index_is_kept_for_cuda_jl(device, expected):
    assert julia.parse_device(device) == expected


@pytest.mark.parametrize("device", ["cuda:x", "mps", "cpu:1", "cuda:-1"])
def test_devices_the_julia_engine_cannot_honour_are_refused_by_name(device):
    with pytest.raises(ValueError, match=re.escape(repr(device))):
        julia.parse_device(device)
