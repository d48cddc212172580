"""bf16 mixed precision: the setting, autocast inside training, precise bounds in bf16, fp32 verification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from approp import distributed as ddp
from approp.bounds import RULES, worst_case_loss
from approp.bounds.interval import Interval, input_ball
from approp.bounds.propagate import layer_params
from approp.bounds.rules import rule_for
from approp.config import ConfigError, RadiusConfig, RunConfig, TrainConfig, load_run_config
from approp.evaluate import EvalConfig, Evaluator
from approp.experiments.sweep import load_sweep
from approp.models import CNN4
from approp.precision import full_precision, native_bf16, resolve_precision, training_autocast
from approp.train import fit, make_strategy
from approp.train.loop import LossModule, _optimiser_step, _Step, prepare_model
from approp.train.schedule import make_optimizer, make_scheduler
from approp.train.strategies import step_context

pytest_plugins = ["trained"]  # the session's trained model and its fixtures

EPS = 2 / 255
REPO = Path(__file__).resolve().parents[1]


# -- the setting ------------------------------------------------------------------------------


def test_precision_is_validated():
    assert TrainConfig().precision == "fp32"
    assert TrainConfig(precision="bf16").precision == "bf16"
    with pytest.raises(ConfigError, match="train.precision"):
        TrainConfig(precision="fp16")
    with pytest.raises(ConfigError, match="Julia engine"):
        TrainConfig(precision="bf16", engine="julia")
    cfg = RunConfig().replace(train={"precision": "bf16"})
    assert RunConfig.from_dict(cfg.to_dict()) == cfg  # survives the TOML round trip


def test_bf16_check_sweep_varies_only_the_precision():
    sweep = load_sweep(REPO / "configs" / "sweeps" / "bf16_check.toml")
    by_key = {v.key: v.config for v in sweep.variants}
    assert len(by_key) == 6 and sweep.val_n == 2000 and sweep.eval_eps == pytest.approx(2 / 255)
    for algo in ("standard", "awp", "app_tanh"):
        fp32, bf16 = by_key[f"{algo}_fp32"], by_key[f"{algo}_bf16"]
        assert (fp32.train.precision, bf16.train.precision) == ("fp32", "bf16")
        assert bf16 == fp32.replace(train={"precision": "bf16"})  # nothing else differs
        assert fp32.data.subset == 8000 and fp32.train.epochs == 6 and fp32.data.val_split > 0
    assert by_key["app_tanh_fp32"].train.kappa == 0.95 and by_key["app_tanh_fp32"].radius.lam == 0.01


# -- autocast inside training -----------------------------------------------------------------


class ConvSpy:
    """Wraps the real Conv2d interval rule and records the dtypes of the intervals it returns."""

    def __init__(self) -> None:
        self.dtypes: list[tuple[torch.dtype, torch.dtype]] = []
        self.rule = RULES[nn.Conv2d]

    def __call__(self, layer, x, params):
        out = self.rule(layer, x, params)
        self.dtypes.append((out.center.dtype, out.radius.dtype))
        return out


@pytest.fixture
def conv_spy(monkeypatch) -> ConvSpy:
    spy = ConvSpy()
    monkeypatch.setitem(RULES, nn.Conv2d, spy)
    return spy


def make_step(algo: str, precision: str, kind: str = "tanh", arch: str = "cnn4", init: str = "default", **train):
    """Returns the training loop's own _Step for a fresh model (seed 0) at full ε and λ (train overrides them)."""
    cfg = RunConfig().replace(
        model={"arch": arch, "init": init},
        optim={"name": "adam", "lr": 1e-3},
        radius={"kind": kind, "lam": 0.01},
        train={"algo": algo, "precision": precision, "eps": EPS, "kappa": 0.5, "pgd_steps": 2, **train},
    )
    torch.manual_seed(0)
    model, channels_last = prepare_model(cfg, torch.device("cpu"))
    strategy = make_strategy(cfg)
    opt = make_optimizer(model, cfg.optim)
    return _Step(
        cfg,
        model,
        LossModule(model, strategy),
        strategy,
        opt,
        make_scheduler(opt, cfg.optim, 100),
        ddp.DistInfo(),
        channels_last,
    )


def synthetic_batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)


@pytest.mark.parametrize("arch", ["cnn4", "resnet20"])
def test_app_step_runs_its_bounds_in_bf16_only_when_asked(conv_spy, arch):
    x, y = synthetic_batch()
    for precision, want in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        conv_spy.dtypes.clear()
        step = make_step("app", precision, arch=arch)
        _optimiser_step(step, x, y, step_context(step.cfg, 1.0), check=True)
        # every convolution once (CNN4: 4; resnet20: 19 and its 2 projection shortcuts)
        assert len(conv_spy.dtypes) == sum(isinstance(m, nn.Conv2d) for m in step.model.modules())
        assert set(conv_spy.dtypes) == {(want, want)}
        for p in step.model.parameters():  # master weights and their gradients stay fp32
            assert p.dtype == torch.float32 and p.grad.dtype == torch.float32
        state = step.opt.state_dict()["state"]
        assert all(v.dtype == torch.float32 for s in state.values() for v in s.values() if v.is_floating_point())


@pytest.mark.parametrize(
    "algo, kind, extra",
    [
        ("standard", "tanh", {}),
        ("pgd", "tanh", {}),
        ("awp", "tanh", {}),
        ("app", "tanh", {}),
        ("app", "abs", {}),
        ("app", "tanh", {"margin_loss": True}),
    ],
)
def test_bf16_steps_give_finite_fp32_losses_close_to_fp32(algo, kind, extra):
    x, y = synthetic_batch()
    losses = {}
    for precision in ("fp32", "bf16"):
        step = make_step(algo, precision, kind, **extra)
        ctx = step_context(step.cfg, 1.0)
        with training_autocast(precision, "cpu"):
            loss, _ = step.step_fn(x, y, ctx)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        step.strategy.after_step(step.model)  # AWP restores its weights
        for _ in range(3):  # a few real optimiser steps stay finite and move the weights
            assert _optimiser_step(step, x, y, ctx, check=True)[0] is None
        losses[precision] = loss.item()
    # Same weights, same batch: bf16 changes the loss only by rounding (PGD's start is random).
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)


# -- bounds that survive bf16 -----------------------------------------------------------------


def relu_through_bf16_ends(layer, x, params):
    """The end-based ReLU with the ends kept in bf16: the form the precision-keeping rule avoids."""
    if x.has_bounds:
        return x.map_monotone(F.relu)
    return Interval.from_bounds(F.relu(x.center - x.radius), F.relu(x.center + x.radius))


def maxpool_through_bf16_ends(layer, x, params):
    lower, upper = (x._lower, x._upper) if x.has_bounds else (x.center - x.radius, x.center + x.radius)
    return Interval.from_bounds(layer(lower), layer(upper))


NAIVE = {nn.ReLU: relu_through_bf16_ends, nn.MaxPool2d: maxpool_through_bf16_ends}


def layer_radii(model: nn.Module, x: torch.Tensor, eps: float, radius: RadiusConfig, bf16: bool, naive: bool = False):
    """Returns [(layer name, radius in fp32)] after every layer of the bound pass, in fp32 or under bf16 autocast."""
    iv, out = input_ball(x, eps), []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i, layer in enumerate(model.layers):
            rule = NAIVE.get(type(layer), rule_for(layer, i)) if naive else rule_for(layer, i)
            iv = rule(layer, iv, layer_params(layer, radius))
            out.append((f"{i}:{type(layer).__name__}", iv.radius.float()))
    return out


def radius_errors(model, x, eps, radius, naive=False) -> dict[str, float]:
    """Returns {layer: ‖r_bf16 − r_fp32‖₁ / ‖r_fp32‖₁}, the relative error of the radius per layer."""
    ref = layer_radii(model, x, eps, radius, bf16=False)
    low = layer_radii(model, x, eps, radius, bf16=True, naive=naive)
    return {
        name: ((r16 - r32).abs().sum() / r32.abs().sum()).item() for (name, r32), (_, r16) in zip(ref[1:], low[1:])
    }  # from the first conv on


# (ε, how many times the bf16-ends ReLU's radius error exceeds the kept one at least)
SETTINGS = [(EPS, 1.8), (0.001, 4.0)]


@pytest.mark.parametrize("kind", ["tanh", "abs"])
@pytest.mark.parametrize("eps, gain", SETTINGS)
def test_bf16_training_bounds_keep_the_radius_on_a_trained_cnn4(trained_model, eval_points, kind, eps, gain):
    x = eval_points.x[:32].float() / 255  # (32, 3, 32, 32)
    radius = RadiusConfig(kind, lam=0.01)
    kept = radius_errors(trained_model, x, eps, radius)
    naive = radius_errors(trained_model, x, eps, radius, naive=True)
    print(f"\nradius relative error per layer, {kind}, eps {eps:.4g}: layer, kept, through bf16 ends")
    for name in kept:
        print(f"  {name:12s} {kept[name]:.4f} {naive[name]:.4f}")
    # bf16 keeps 8 bits: one rounding is 2⁻⁹ ≈ 0.002 relative; across 15 layers the
    # radius stays within 1 % of the fp32 one everywhere (measured 0.14–0.36 %).
    assert max(kept.values()) < 0.01, kept
    # Through bf16 ends the first ReLU's radius is off several times more, the more so
    # the smaller the radius is against the center (smaller ε).
    assert naive["2:ReLU"] > gain * kept["2:ReLU"], (kept, naive)
    # The worst-case loss in bf16 is the fp32 one to about a percent.
    y = eval_points.y[:32]
    with torch.no_grad():
        ref = worst_case_loss(trained_model, x, y, eps, radius)
        with training_autocast("bf16", "cpu"):
            low = worst_case_loss(trained_model, x, y, eps, radius)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(ref.item(), rel=0.01)


def test_full_precision_turns_autocast_off_inside_an_autocast_region(conv_spy):
    model, x = CNN4().eval(), synthetic_batch(4)[0]
    with torch.no_grad(), training_autocast("bf16", "cpu"):
        with full_precision():
            worst_case_loss(model, x, torch.zeros(4, dtype=torch.long), EPS, RadiusConfig("tanh"))
        worst_case_loss(model, x, torch.zeros(4, dtype=torch.long), EPS, RadiusConfig("tanh"))
    assert [d for d, _ in conv_spy.dtypes] == [torch.float32] * 4 + [torch.bfloat16] * 4


# -- a real bf16 run: trains in bf16, verifies in fp32 ----------------------------------------


def test_bf16_run_trains_in_bf16_and_verifies_in_fp32(cifar_dir, tmp_path, conv_spy):
    cfg = RunConfig().replace(
        data={"data_dir": str(cifar_dir), "subset": 256, "test_subset": 64, "batch_size": 64, "augment": False},
        optim={"name": "adam", "lr": 1e-3},
        radius={"kind": "tanh", "lam": 0.01},
        train={"algo": "app", "epochs": 1, "eps": EPS, "warmup_epochs": 0, "ramp_epochs": 0, "precision": "bf16"},
    )
    result = fit(cfg, tmp_path / "run", progress=False)
    assert all(torch.isfinite(torch.tensor(result.history[0][k])) for k in ("loss", "worst_loss", "clean_loss"))
    # Training: 4 batches × 4 convolutions in bf16; the epoch's verified accuracy: 4 in fp32.
    dtypes = [d for d, _ in conv_spy.dtypes]
    assert dtypes == [torch.bfloat16] * 16 + [torch.float32] * 4
    # The checkpoint holds fp32 weights and records the precision it trained in.
    weights = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}
    assert json.loads((tmp_path / "run" / "checkpoint.json").read_text())["precision"] == "bf16"
    # evaluate, even when called inside a bf16 autocast region, bounds in fp32 only.
    conv_spy.dtypes.clear()
    ev = EvalConfig(
        n=16, pgd_steps=2, autoattack=False, param_attack=(0.02,), param_attack_steps=2, statistical=128, batch_size=16
    )
    with training_autocast("bf16", "cpu"):
        res = Evaluator(tmp_path / "run", ev, data_dir=cifar_dir, progress=False).run()
    assert conv_spy.dtypes and set(conv_spy.dtypes) == {(torch.float32, torch.float32)}
    assert 0.0 <= res["verified_acc"] <= res["clean_acc"] <= 1.0


# -- "auto": bf16 where the hardware has it, recorded concretely in the run ----------------------


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("fpu sse avx512f avx512bw avx512_bf16 amx_tile", True),  # x86 with AVX-512 BF16
        ("fpu sse avx512f avx512bw amx_bf16", True),  # x86 with AMX
        ("fpu sse avx2 avx512f avx512bw", False),  # AVX-512 without bf16: emulated only
    ],
)
def test_native_bf16_reads_the_cpu_flags(tmp_path, flags, native):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert native_bf16("cpu", info) is native
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n")
    assert native_bf16("cpu", arm) and not native_bf16("cpu", tmp_path / "missing")


def test_auto_resolves_to_the_resumed_run_then_the_hardware():
    native = "bf16" if native_bf16("cpu") else "fp32"
    assert resolve_precision("auto", "cpu") == native
    assert resolve_precision("auto", "cpu", resumed="fp32") == "fp32"  # a resumed run keeps its precision
    assert resolve_precision("auto", "cpu", resumed="bf16") == "bf16"
    assert resolve_precision("auto", "cpu", engine="julia") == "fp32"  # the Julia engine is fp32 only
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    TrainConfig(precision="auto", engine="julia")  # valid: it means fp32 there


def test_auto_run_records_its_precision_and_an_old_run_resumes_in_fp32(cifar_dir, tmp_path):
    cfg = RunConfig().replace(
        data={"data_dir": str(cifar_dir), "subset": 64, "test_subset": 32, "batch_size": 32, "augment": False},
        train={"algo": "standard", "epochs": 2, "warmup_epochs": 0, "ramp_epochs": 0, "precision": "auto"},
    )
    native = "bf16" if native_bf16("cpu") else "fp32"
    run = tmp_path / "new"
    fit(cfg.replace(train={"epochs": 1}), run, progress=False)
    assert load_run_config(run / "config.toml").train.precision == native
    # A run directory written before train.precision existed trained in fp32: "auto" resumes it so.
    old = tmp_path / "old"
    fit(cfg.replace(train={"epochs": 1, "precision": "fp32"}), old, progress=False)
    text = (old / "config.toml").read_text()
    (old / "config.toml").write_text(text.replace('precision = "fp32"\n', ""))
    assert "precision" not in (old / "config.toml").read_text()
    fit(cfg.replace(train={"epochs": 1}), old, progress=False)  # resumes (nothing left), no mismatch
    with pytest.raises(ConfigError, match="different configuration"):
        fit(cfg.replace(train={"epochs": 1, "precision": "bf16"}), old, progress=False)


def test_relu_keep_radius_is_exactly_relu_of_the_ends_in_float64():
    """The bf16 ReLU form equals [relu(c − r), relu(c + r)] for stable-active, dead and unstable units."""
    from approp.bounds.rules import relu_keep_radius

    gen = torch.Generator().manual_seed(0)
    c = torch.randn(4096, generator=gen, dtype=torch.float64)
    r = torch.rand(4096, generator=gen, dtype=torch.float64)
    c[:3], r[:3] = (
        torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64),
        torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64),
    )
    out = relu_keep_radius(c, r)
    assert torch.allclose(out.lower, (c - r).relu(), atol=1e-15, rtol=0)
    assert torch.allclose(out.upper, (c + r).relu(), atol=1e-15, rtol=0)
    active = c >= r  # stable-active units keep ⟨c, r⟩ bit for bit
    assert torch.equal(out.center[active], c[active]) and torch.equal(out.radius[active], r[active])
    assert (out.radius >= 0).all()
