"""Schedules: the smoothed ε/λ ramp at known steps, κ schedules, and gradient clipping in the loop."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from approp.config import RunConfig, TrainConfig
from approp.models import build_model
from approp.train import fit
from approp.train.schedule import gradient_norm, ramp, ramp_at, smoothed_ramp
from approp.train.strategies import kappa_at, step_context


class TestSmoothedRamp:
    # 10 steps per epoch, 1 warm-up epoch, a 4-epoch ramp: s0 = 10, s1 = 50,
    # sm = 10 + ⌊40/4⌋ = 20, t = (20 − 10)³ = 1000, α = 1/(30·4·1000 + 10·1000) = 1/130000,
    # value at sm = α·10⁴ = 1/13, then linear from 1/13 at step 20 to 1 at step 50.
    @pytest.mark.parametrize(
        "step, expected",
        [
            (0, 0.0),
            (9, 0.0),
            (10, 0.0),  # the ramp's first step is still 0 (as auto_LiRPA)
            (11, 1 / 130000),
            (15, 625 / 130000),
            (20, 1 / 13),
            (35, 7 / 13),  # 1/13 + (12/13)·(15/30)
            (49, 1 / 13 + (12 / 13) * (29 / 30)),
            (50, 1.0),
            (120, 1.0),
        ],
    )
    def test_values_at_known_steps(self, step, expected):
        assert smoothed_ramp(step, 10, 4, 1) == pytest.approx(expected, rel=1e-12, abs=1e-15)

    def test_slope_is_continuous_at_the_joint(self):
        # Left derivative of α·u⁴ at u = 10 is 4α·10³ = 4/130;
        # the linear part's slope is (12/13)/30 = 4/130.
        alpha = 1 / 130000
        assert 4 * alpha * 10**3 == pytest.approx((12 / 13) / 30, rel=1e-12)
        values = [smoothed_ramp(s, 10, 4, 1) for s in range(0, 60)]
        assert values == sorted(values)  # nondecreasing
        assert smoothed_ramp(21, 10, 4, 1) - smoothed_ramp(20, 10, 4, 1) == pytest.approx(4 / 130)

    def test_below_linear_during_the_ramp(self):
        # It keeps ε smaller than the linear ramp everywhere inside the ramp.
        for s in range(10, 50):
            assert smoothed_ramp(s, 10, 4, 1) < ramp(s, 10, 4, 1)

    def test_no_ramp_and_short_ramp(self):
        assert [smoothed_ramp(s, 5, 0, 1) for s in (3, 4, 5, 6)] == [0.0, 0.0, 1.0, 1.0]
        # 3 ramp steps: no polynomial part, linear from 0 at s0 to 1 at s1.
        assert [smoothed_ramp(s, 3, 1, 0) for s in (0, 1, 2, 3)] == pytest.approx([0, 1 / 3, 2 / 3, 1])

    def test_dispatch_by_config(self):
        lin = TrainConfig(warmup_epochs=1, ramp_epochs=4)
        smooth = TrainConfig(warmup_epochs=1, ramp_epochs=4, ramp="smoothed")
        for s in (0, 10, 15, 20, 35, 60):
            assert ramp_at(s, 10, lin) == ramp(s, 10, 4, 1)
            assert ramp_at(s, 10, smooth) == smoothed_ramp(s, 10, 4, 1)


class TestKappaSchedules:
    @pytest.mark.parametrize(
        "schedule, expected",
        [("gowal", [1.0, 0.6, 0.2]), ("constant", [1.0, 0.2, 0.2]), ("none", [1.0, 0.0, 0.0])],
    )
    def test_values(self, schedule, expected):
        t = TrainConfig(kappa=0.2, kappa_schedule=schedule)
        assert [kappa_at(t, r) for r in (0.0, 0.5, 1.0)] == pytest.approx(expected)

    def test_default_is_the_old_formula(self):
        cfg = RunConfig().replace(train={"kappa": 0.3, "eps": 0.01}, radius={"lam": 0.02})
        for r in (0.0, 0.1, 0.5, 1.0):
            ctx = step_context(cfg, r)
            assert ctx.kappa == pytest.approx(1 - r * (1 - 0.3))
            assert (ctx.eps, ctx.lam) == pytest.approx((0.01 * r, 0.02 * r))
            assert ctx.reg_weight == 0.0

    def test_regulariser_weight_fades_with_the_ramp(self):
        cfg = RunConfig().replace(train={"reg_weight": 0.5})
        assert [step_context(cfg, r).reg_weight for r in (0.0, 0.25, 1.0)] == pytest.approx([0.5, 0.375, 0.0])


class TestGradientClipping:
    def test_norm_is_reported_and_clipped(self):
        layer = nn.Linear(3, 2)
        layer.weight.grad = torch.full((2, 3), 2.0)  # norm √(6·4)
        layer.bias.grad = torch.tensor([3.0, 4.0])  # norm 5
        norm = gradient_norm(layer, max_norm=None)
        assert norm.item() == pytest.approx((24 + 25) ** 0.5)
        assert layer.bias.grad.tolist() == [3.0, 4.0]  # untouched without max_norm
        assert gradient_norm(layer, max_norm=1.0).item() == pytest.approx(7.0)
        clipped = torch.cat([layer.weight.grad.flatten(), layer.bias.grad])
        assert clipped.norm().item() == pytest.approx(1.0, rel=1e-5)
        assert layer.bias.grad.tolist() == pytest.approx([3 / 7, 4 / 7], rel=1e-5)

    def test_applied_in_the_training_loop(self, cifar_dir, tmp_path):
        # Plain SGD (no momentum, no decay, constant lr) moves the weights by lr·‖clipped g‖ ≤ lr·clip
        # per step, so 2 steps move them by at most 2·lr·clip; unclipped they move far more.
        clip, lr = 1e-3, 0.5
        cfg = RunConfig().replace(
            data={"data_dir": str(cifar_dir), "subset": 128, "test_subset": 64, "batch_size": 64, "augment": False},
            optim={
                "name": "sgd",
                "lr": lr,
                "momentum": 0.0,
                "weight_decay": 0.0,
                "schedule": "constant",
                "grad_clip": clip,
            },
            train={"algo": "standard", "epochs": 1, "seed": 3},
        )
        torch.manual_seed(cfg.train.seed)  # fit draws the initial weights right after this seed
        start = build_model(cfg.model).state_dict()
        result = fit(cfg, tmp_path / "clip", progress=False)
        moved = torch.cat([(v - start[k]).flatten() for k, v in result.model.state_dict().items()]).norm()
        assert 0 < moved.item() <= 2 * lr * clip * (1 + 1e-4)
        row = json.loads((tmp_path / "clip" / "metrics.jsonl").read_text().splitlines()[0])
        assert row["grad_norm"] > 100 * clip  # the raw gradient was far larger: clipping bound

        free = fit(cfg.replace(optim={"grad_clip": None}), tmp_path / "free", progress=False)
        moved_free = torch.cat([(v - start[k]).flatten() for k, v in free.model.state_dict().items()]).norm()
        assert moved_free.item() > 50 * moved.item()
