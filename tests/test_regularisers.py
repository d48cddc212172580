"""Warm-up regularisers: values on a hand-computed case, the bound pass's record, APP's loss with them."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from approp.bounds import BoundsRecord, Interval, interval_bounds, worst_case_loss
from approp.config import RadiusConfig, RunConfig
from approp.models import CNN4
from approp.train import fit, make_strategy
from approp.train.regularisers import REG_MIN_EPS, relu_balance_term, tightness_term, warmup_regulariser
from approp.train.strategies import step_context


def _iv(center, radius) -> Interval:
    return Interval(torch.tensor([center], dtype=torch.float64), torch.tensor([radius], dtype=torch.float64))


class TestHandComputed:
    # The input box has mean radius τ₀ = 0.1.
    first = _iv([0.5, 0.5], [0.1, 0.1])
    # A: centers 6, −1, −1, 0 with radii 1, .5, .5, 2
    #    → active {6}, inactive {−1, −1}, one unstable.
    #    τ = 1 → tightness (0.5 − 0.1)/0.5 = 0.8.
    #    mean ratio: mean(c·act) = 6/4, −mean(c·inact) = 2/4 → 1/3 → (0.5 − 1/3)/0.5 = 1/3.
    #    var ratio: mean c = 1; Σ act (6−1)² = 25, Σ inact 2·(−2)² = 8 → 8/25 → (0.5 − 0.32)/0.5 = 0.36.
    a = _iv([6.0, -1.0, -1.0, 0.0], [1.0, 0.5, 0.5, 2.0])
    # B: every neuron unstable: τ = 0.2 → τ₀/τ = 0.5, tightness 0; balance 0/0 → dropped (0).
    b = _iv([0.0, 0.0], [0.2, 0.2])
    # C: one active, one inactive, mirror images: both ratios 1 → 0; τ = τ₀ → 0.
    c = _iv([1.0, -1.0], [0.1, 0.1])

    def test_tightness(self):
        got = [tightness_term(self.first, p, 0.5).item() for p in (self.a, self.b, self.c)]
        assert got == pytest.approx([0.8, 0.0, 0.0])

    def test_relu_balance(self):
        got = [relu_balance_term(p, 0.5).item() for p in (self.a, self.b, self.c)]
        assert got == pytest.approx([1 / 3 + 0.36, 0.0, 0.0])

    def test_total_is_the_mean_over_relu_layers(self):
        record = BoundsRecord(first=self.first, pre_relu=[self.a, self.b, self.c])
        total, logs = warmup_regulariser(record, tol=0.5)
        assert logs["reg_tightness"].item() == pytest.approx(0.8 / 3)
        assert logs["reg_relu"].item() == pytest.approx((1 / 3 + 0.36) / 3)
        assert total.item() == pytest.approx((0.8 + 1 / 3 + 0.36) / 3)

    def test_tol_scales_the_threshold(self):
        # tol = 1: A's tightness (1 − 0.1)/1 = 0.9; mean term 1 − 1/3, var term 1 − 0.32.
        assert tightness_term(self.first, self.a, 1.0).item() == pytest.approx(0.9)
        assert relu_balance_term(self.a, 1.0).item() == pytest.approx(2 / 3 + 0.68)

    def test_one_sided_layer_is_finite_with_finite_gradients(self):
        # All active: no inactive side, both ratios 0 (the reference's a/0 → min(∞, 0) = 0) → 1 + 1.
        c = torch.tensor([[1.0, 2.0]], dtype=torch.float64, requires_grad=True)
        r = torch.tensor([[0.1, 0.1]], dtype=torch.float64)  # enters only through the masks
        loss = relu_balance_term(Interval(c, r), 0.5)
        assert loss.item() == pytest.approx(2.0)
        loss.backward()
        assert torch.isfinite(c.grad).all()
        # A layer dropped as 0/0 passes no NaN back either.
        c0 = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
        relu_balance_term(Interval(c0, torch.full((1, 2), 0.2, dtype=torch.float64)), 0.5).backward()
        assert torch.equal(c0.grad, torch.zeros_like(c0))


def _batch(b: int = 8):
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, 3, 32, 32, generator=g), torch.randint(0, 10, (b,), generator=g)


class TestRecord:
    def test_collects_the_intervals_of_the_same_pass(self):
        torch.manual_seed(0)
        model, (x, _) = CNN4().eval(), _batch()
        radius, eps = RadiusConfig("tanh", lam=0.01), 2 / 255
        record = BoundsRecord()
        out = interval_bounds(model, x, eps, radius, record=record)
        plain = interval_bounds(model, x, eps, radius)
        assert torch.equal(out.lower, plain.lower) and torch.equal(out.upper, plain.upper)
        relu_at = [i for i, m in enumerate(model.layers) if isinstance(m, torch.nn.ReLU)]
        assert len(record.pre_relu) == len(relu_at) == 5
        for i, iv in zip(relu_at, record.pre_relu):  # each is the interval of the prefix up to that ReLU
            ref = interval_bounds(torch.nn.Sequential(*model.layers[:i]), x, eps, radius)
            torch.testing.assert_close(iv.lower, ref.lower)
            torch.testing.assert_close(iv.upper, ref.upper)
        # first: the input box after the model's normalisation, radius ε/σ where not clipped at 0 or 1.
        inside = (x > eps) & (x < 1 - eps)
        std = model.layers[0].std.expand_as(x)
        torch.testing.assert_close(record.first.radius[inside], (eps / std)[inside])

    def test_margin_path_records_the_same_relus(self):
        torch.manual_seed(0)
        model, (x, y) = CNN4().eval(), _batch()
        a, b = BoundsRecord(), BoundsRecord()
        worst_case_loss(model, x, y, 0.01, None, record=a)
        worst_case_loss(model, x, y, 0.01, None, margin=True, record=b)
        assert len(a.pre_relu) == len(b.pre_relu) == 5
        for p, q in zip(a.pre_relu, b.pre_relu):
            torch.testing.assert_close(p.radius, q.radius)

    def test_ibp_default_init_is_penalised(self):
        # CNN4's default init widens the bounds layer by layer: the tightness term is positive
        # and its gradient reaches the first convolution.
        torch.manual_seed(0)
        model, (x, _) = CNN4(), _batch()
        record = BoundsRecord()
        interval_bounds(model, x, 2 / 255, None, record=record)
        total, logs = warmup_regulariser(record, 0.5)
        assert logs["reg_tightness"].item() > 0.1
        total.backward()
        assert model.layers[1].weight.grad.abs().sum().item() > 0


class TestAPPLoss:
    def _cfg(self, **train):
        return RunConfig().replace(
            radius={"kind": "tanh", "lam": 0.01}, train={"eps": 2 / 255, "kappa": 0.5, "reg_weight": 0.5, **train}
        )

    def test_in_the_ramp_adds_weighted_regulariser_of_the_same_pass(self):
        torch.manual_seed(0)
        model, (x, y) = CNN4().eval(), _batch()
        cfg = self._cfg()
        ctx = step_context(cfg, 0.5)  # ε = 1/255, λ = 0.005, κ = 0.75, weight 0.5·0.5
        loss, logs = make_strategy(cfg).loss(model, x, y, ctx)
        record = BoundsRecord()
        worst = worst_case_loss(model, x, y, ctx.eps, cfg.radius, ctx.lam, record=record)
        reg, _ = warmup_regulariser(record, 0.5)
        expected = 0.25 * worst + 0.75 * F.cross_entropy(model(x), y) + 0.25 * reg
        assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
        assert logs["reg_loss"].item() == pytest.approx(reg.item(), rel=1e-6)

    def test_in_the_warm_up_uses_a_tiny_ball(self):
        torch.manual_seed(0)
        model, (x, y) = CNN4().eval(), _batch()
        cfg = self._cfg()
        loss, logs = make_strategy(cfg).loss(model, x, y, step_context(cfg, 0.0))
        record = BoundsRecord()
        interval_bounds(model, x, REG_MIN_EPS, cfg.radius, 0.0, record=record)
        reg, _ = warmup_regulariser(record, 0.5)
        assert loss.item() == pytest.approx((F.cross_entropy(model(x), y) + 0.5 * reg).item(), rel=1e-6)
        assert logs["reg_loss"].item() == pytest.approx(reg.item(), rel=1e-6)

    def test_off_after_the_ramp_and_by_default(self):
        torch.manual_seed(0)
        model, (x, y) = CNN4().eval(), _batch()
        for cfg, r in ((self._cfg(), 1.0), (self._cfg(reg_weight=0.0), 0.5)):
            _, logs = make_strategy(cfg).loss(model, x, y, step_context(cfg, r))
            assert "reg_loss" not in logs

    def test_kappa_none_is_the_worst_case_alone(self):
        torch.manual_seed(0)
        model, (x, y) = CNN4().eval(), _batch()
        cfg = self._cfg(reg_weight=0.0, kappa_schedule="none")
        ctx = step_context(cfg, 0.3)
        loss, logs = make_strategy(cfg).loss(model, x, y, ctx)
        worst = worst_case_loss(model, x, y, ctx.eps, cfg.radius, ctx.lam)
        assert loss.item() == pytest.approx(worst.item(), rel=1e-6) and "clean_loss" not in logs


@pytest.mark.parametrize(
    ("model", "precision"),
    [({}, "fp32"), ({"arch": "cnn4_bn", "init": "ibp"}, "fp32"), ({"arch": "cnn4_bn", "init": "ibp"}, "bf16")],
    ids=["cnn4", "cnn4_bn", "cnn4_bn-bf16"],
)
def test_training_logs_the_regulariser_and_grad_norm(cifar_dir, tmp_path, model, precision):
    # cnn4_bn trains in train mode: the warm-up's tiny-ball pass and the ramp's bounds both
    # need the clean batch's BatchNorm statistics recorded first.
    cfg = RunConfig().replace(
        model=model,
        data={"data_dir": str(cifar_dir), "subset": 128, "test_subset": 64, "batch_size": 64},
        optim={"name": "adam", "lr": 1e-3, "grad_clip": 10.0},
        train={
            "epochs": 2,
            "eps": 2 / 255,
            "warmup_epochs": 1,
            "ramp_epochs": 1,
            "ramp": "smoothed",
            "kappa_schedule": "none",
            "reg_weight": 0.5,
            "precision": precision,
        },
    )
    fit(cfg, tmp_path / "run", progress=False)
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for row in rows:  # warm-up and ramp epochs both carry the regulariser
        assert row["reg_loss"] > 0 and row["reg_tightness"] >= 0 and row["reg_relu"] >= 0
        assert row["grad_norm"] > 0
    # 2 steps per epoch: the smoothed ramp's last step (3) stands at (3 − 2)/2; it reaches 1 at step 4.
    assert rows[-1]["ramp"] == pytest.approx(0.5)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "smoothed ramp" in report and "λ_reg = 0.5" in report and "clipped to 10" in report


@pytest.mark.parametrize("field", [{"train": {"reg_weight": 0.5}}, {"optim": {"grad_clip": 10.0}}])
def test_julia_engine_refuses_what_it_lacks(field):
    from approp.config import ConfigError
    from approp.julia.runner import check_julia_run

    cfg = RunConfig().replace(train={"engine": "julia"}).replace(**field)
    with pytest.raises(ConfigError, match="Julia engine"):
        check_julia_run(cfg)
