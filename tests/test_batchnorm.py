"""BatchNorm in the bounds: interval and linear rules sound over the box in eval and train mode.

Eval mode: the bounds hold for the eval-mode network (running statistics) with any θ̃ in the box.
Train mode: they hold for the network whose BatchNorm layers are fixed at the clean batch's
statistics through the midpoint network (`frozen` below), with any θ̃ in the box.
"""

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

from approp.attacks.joint import joint_attack_margins
from approp.bounds import (
    BatchNormStatisticsError,
    clean_statistics,
    interval_bounds,
    linear_margin_bounds,
    margin_lower_bounds,
)
from approp.bounds.batchnorm import BN_FAN
from approp.bounds.linear import backward, prepare
from approp.bounds.verify import verified_by
from approp.config import ModelConfig, RadiusConfig
from approp.models import CIFAR10_MEAN, CIFAR10_STD, Normalize, build_model
from approp.radius import parameter_box, parameter_radii
from box_samples import samples

KINDS = ["abs", "const", "tanh"]
LAM = {"abs": 0.03, "const": 0.002, "tanh": 0.05}
EPS = 0.004
MODES = ["eval", "train"]


def tiny_bn_net(seed: int) -> nn.Sequential:
    """Returns a float64 conv net with BatchNorm2d/1d, random γ (both signs), β and running statistics."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        Normalize(CIFAR10_MEAN, CIFAR10_STD),
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),  # 16 → 8
        nn.Conv2d(4, 6, 2),
        nn.BatchNorm2d(6),
        nn.ReLU(),  # 8 → 7
        nn.MaxPool2d(2),
        nn.Flatten(),  # 6·3·3
        nn.Linear(54, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Linear(16, 10),
    ).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.weight.copy_(
                    (torch.rand(c, generator=gen) + 0.5) * torch.where(torch.rand(c, generator=gen) < 0.2, -1, 1)
                )
                m.bias.copy_(torch.randn(c, generator=gen) * 0.3)
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.3)
    return net


def batch(n: int = 6, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=gen, dtype=torch.float64), torch.randint(0, 10, (n,), generator=gen)


def frozen(model: nn.Module, stats) -> nn.Module:
    """Returns an eval-mode copy of `model` whose BatchNorm layers use the recorded statistics as constants."""
    net = copy.deepcopy(model)
    with torch.no_grad():
        for src, dst in zip(model.modules(), net.modules()):
            if id(src) in stats:
                mean, var = stats[id(src)]
                dst.running_mean.copy_(mean)
                dst.running_var.copy_(var)
    return net.eval()


def reference(model: nn.Module, x: torch.Tensor, mode: str) -> tuple[nn.Module, dict]:
    """Returns (the network the bounds speak about, recorded stats) and leaves `model` in `mode`."""
    if mode == "eval":
        return model.eval(), {}
    model.train()
    with clean_statistics(model) as stats, torch.no_grad():
        model(x)
    return frozen(model, stats), stats


def bounds_in(model, x, y, radius, mode):
    """Returns (interval bounds, interval margin bounds, linear margin bounds), in `mode`'s statistics."""
    with clean_statistics(model):
        if mode == "train":
            model(x)
        return (
            interval_bounds(model, x, EPS, radius),
            margin_lower_bounds(model, x, y, EPS, radius),
            linear_margin_bounds(model, x, y, EPS, radius),
        )


def ball(x, gen, corners: bool):
    lo, hi = (x - EPS).clamp(min=0), (x + EPS).clamp(max=1)
    u = torch.rand(x.shape, generator=gen, dtype=x.dtype)
    return lo + (hi - lo) * (u.round() if corners else u)


class TestSoundness:
    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("corners", [False, True], ids=["uniform", "corners"])
    def test_sampled_outputs_and_margins_within_bounds(self, mode, kind, corners):
        model = tiny_bn_net(seed=0)
        x, y = batch()
        radius = RadiusConfig(kind, lam=LAM[kind])
        net, _ = reference(model, x, mode)
        b, margin_iv, margin_lin = bounds_in(model, x, y, radius, mode)
        gen = torch.Generator().manual_seed(2)
        widest = torch.zeros((), dtype=torch.float64)
        for params in samples(model, radius, corners, gen, 12):
            out = functional_call(net, params, (ball(x, gen, corners),))
            assert (out >= b.lower - 1e-9).all() and (out <= b.upper + 1e-9).all()
            m = out.gather(1, y[:, None]) - out
            assert (m >= margin_iv - 1e-9).all() and (m >= margin_lin - 1e-9).all()
            widest = torch.maximum(widest, (out - b.center).abs().max())
        assert widest > 1e-3  # the samples do move the output
        assert torch.isfinite(margin_lin).all()

    @pytest.mark.parametrize("mode", MODES)
    def test_batchnorm_parameters_alone_are_bounded_at_their_corners(self, mode):
        """Weights fixed, ε = 0: only the one-dimensional parameters (biases, γ, β) move, to their corners."""
        model = tiny_bn_net(seed=1)
        x, y = batch(seed=3)
        radius = RadiusConfig("const", lam=0.05, perturb_weights=False)
        net, stats = reference(model, x, mode)
        with clean_statistics(model):
            if mode == "train":
                model(x)
            b = interval_bounds(model, x, 0.0, radius)
        gen = torch.Generator().manual_seed(5)
        widest = torch.zeros((), dtype=torch.float64)
        for params in samples(model, radius, True, gen, 16):
            out = functional_call(net, params, (x,))
            assert (out >= b.lower - 1e-9).all() and (out <= b.upper + 1e-9).all()
            widest = torch.maximum(widest, (out - b.center).abs().max())
        assert widest > 1e-3

    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize("kind", ["abs", "tanh"])
    def test_joint_attack_never_gets_below_the_bound(self, mode, kind):
        model = tiny_bn_net(seed=2)
        x, y = batch(n=4, seed=4)
        radius = RadiusConfig(kind, lam=LAM[kind])
        net, _ = reference(model, x, mode)
        _, margin_iv, margin_lin = bounds_in(model, x, y, radius, mode)
        own = nn.functional.one_hot(y, 10).bool()
        floor = torch.maximum(margin_iv, margin_lin).masked_fill(own, float("inf")).amin(1)  # (B,)
        box = parameter_box(net, radius)
        reached = joint_attack_margins(net, box, x, y, EPS, steps=20, generator=torch.Generator().manual_seed(0))
        start = net(x)
        start = (start.gather(1, y[:, None]) - start).masked_fill(own, float("inf")).amin(1)
        assert (reached >= floor - 1e-9).all()
        assert (reached < start - 1e-4).all()  # the attack does move the margin down


def _exact_range(layer, stats, lo, hi, radius):
    """Returns per element (min, max) of γ·(x − μ)/s + β over x ∈ {lo, hi}, γ, β at their box's ends.

    The map is bilinear in (γ, x) and affine in β per element, so its extremes over the box lie at corners.
    """
    mean, var = stats
    shape = (1, -1) + (1,) * (lo.dim() - 2)
    inv = (var + layer.eps).rsqrt().view(shape)
    r = parameter_radii(layer, radius)
    values = []
    for x in (lo, hi):
        for sg in (-1, 1):
            for sb in (-1, 1):
                g = (layer.weight + sg * r["weight"]).view(shape)
                b = (layer.bias + sb * r["bias"]).view(shape)
                values.append(g * (x - mean.view(shape)) * inv + b)
    stacked = torch.stack(values)
    return stacked.amin(0), stacked.amax(0)


def _single_bn(kind: str, mode: str, seed: int):
    """Returns (layer, x, stats) for one BatchNorm layer on inputs x in [0, 1] (1-d or 2-d)."""
    gen = torch.Generator().manual_seed(seed)
    layer = (nn.BatchNorm1d(5) if kind == "1d" else nn.BatchNorm2d(3)).double()
    x = torch.rand((7, 5) if kind == "1d" else (4, 3, 5, 5), generator=gen, dtype=torch.float64)
    with torch.no_grad():
        c = layer.num_features
        layer.weight.copy_(torch.randn(c, generator=gen))
        layer.bias.copy_(torch.randn(c, generator=gen))
        layer.running_mean.copy_(torch.randn(c, generator=gen))
        layer.running_var.copy_(torch.rand(c, generator=gen) + 0.1)
    if mode == "eval":
        return layer.eval(), x, (layer.running_mean, layer.running_var)
    with clean_statistics(layer) as stats:
        layer.train()(x)
    return layer, x, stats[id(layer)]


class TestRules:
    """One BatchNorm layer alone: the rules against its exact range over the box's corners."""

    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize("kind", ["1d", "2d"])
    @pytest.mark.parametrize("eps", [0.0, 0.1])
    def test_interval_rule_contains_the_exact_range_and_is_exact_at_a_point_input(self, mode, kind, eps):
        layer, x, stats = _single_bn(kind, mode, seed=0)
        radius = RadiusConfig("const", lam=0.2)
        net = nn.Sequential(layer)
        lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
        low, high = _exact_range(layer, stats, lo, hi, radius)
        with clean_statistics(net):
            if mode == "train":
                net(x)
            b = interval_bounds(net, x, eps, radius)
        assert (b.lower <= low + 1e-12).all() and (b.upper >= high - 1e-12).all()
        # Rump's product overestimates the width by at most 2·γ_r·x_r/s: tight up to second order.
        inv = (stats[1] + layer.eps).rsqrt().view((1, -1) + (1,) * (x.dim() - 2))
        slack = (b.upper - b.lower) - (high - low)
        assert (slack <= 2 * 0.2 * eps * inv + 1e-12).all()
        if eps == 0:
            assert torch.allclose(b.lower, low, atol=1e-12) and torch.allclose(b.upper, high, atol=1e-12)

    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize("kind", ["1d", "2d"])
    @pytest.mark.parametrize("eps", [0.0, 0.1])
    def test_linear_rule_below_the_exact_minimum_and_equal_at_a_point_input(self, mode, kind, eps):
        layer, x, stats = _single_bn(kind, mode, seed=1)
        radius = RadiusConfig("const", lam=0.2)
        net = nn.Sequential(layer)
        gen = torch.Generator().manual_seed(3)
        coef = torch.randn(len(x), 4, *x.shape[1:], generator=gen, dtype=torch.float64)  # (B, S, *out)
        lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
        # The functional is separable: its minimum over the box is the sum of per-element minima.
        values = []
        mean, var = stats
        shape = (1, 1, -1) + (1,) * (x.dim() - 2)
        r = parameter_radii(layer, radius)
        for xe in (lo, hi):
            for sg in (-1, 1):
                for sb in (-1, 1):
                    g, b = layer.weight + sg * r["weight"], layer.bias + sb * r["bias"]
                    y = g.view(shape) * (xe.unsqueeze(1) - mean.view(shape)) * (var + layer.eps).rsqrt().view(shape)
                    values.append(coef * (y + b.view(shape)))
        exact = torch.stack(values).amin(0).flatten(2).sum(2)  # (B, S)
        with clean_statistics(net):
            if mode == "train":
                net(x)
            lower, rounding = backward(prepare(net, x, eps, radius), coef)
        assert (lower <= exact + 1e-12).all()
        # The rounding magnitude covers at least the terms the network's own evaluation sums.
        with torch.no_grad():
            y_mid = nn.functional.batch_norm(x, mean, var, layer.weight, layer.bias, False, 0.0, layer.eps)
        assert (rounding >= BN_FAN * (coef.abs() * y_mid.abs().unsqueeze(1)).flatten(2).sum(2)).all()
        if eps == 0:
            assert torch.allclose(lower, exact, atol=1e-12)


class TestCollapse:
    @pytest.mark.parametrize("mode", MODES)
    def test_point_box_and_ball_give_the_forward_pass(self, mode):
        model = tiny_bn_net(seed=0)
        x, y = batch()
        model.train(mode == "train")
        with clean_statistics(model):
            out = model(x)
            b = interval_bounds(model, x, 0.0, RadiusConfig("abs", lam=0.0))
            lin = linear_margin_bounds(model, x, y, 0.0, None)
        assert torch.allclose(b.lower, out, atol=1e-12) and torch.allclose(b.upper, out, atol=1e-12)
        assert torch.allclose(lin, out.gather(1, y[:, None]) - out, atol=1e-12)

    def test_cnn4_bn_train_mode_center_equals_the_train_forward(self):
        torch.manual_seed(0)
        model = build_model(ModelConfig("cnn4_bn", init="ibp")).train()
        x = torch.rand(8, 3, 32, 32)
        with clean_statistics(model):
            out = model(x)
            b = interval_bounds(model, x, 0.0)
        assert (b.center - out).abs().max() < 1e-4 * out.abs().max()
        assert torch.equal(b.radius, torch.zeros_like(b.radius))


class TestStatistics:
    def test_train_mode_without_recorded_statistics_is_an_error(self):
        model = tiny_bn_net(seed=0).train()
        x, _ = batch()
        with pytest.raises(BatchNormStatisticsError, match=r"BatchNorm2d\(4\) is in training mode"):
            interval_bounds(model, x, EPS)

    def test_bound_pass_uses_clean_statistics_and_updates_running_ones_once(self):
        model = tiny_bn_net(seed=0).train()
        x, _ = batch()
        bn = model[2]
        with clean_statistics(model) as stats:
            model(x)
            after_forward = (bn.running_mean.clone(), int(bn.num_batches_tracked))
            interval_bounds(model, x, EPS, RadiusConfig("abs", lam=0.03))
        assert torch.equal(bn.running_mean, after_forward[0]) and after_forward[1] == 1
        h = model[1](model[0](x))  # the first BatchNorm's clean input (B, 4, 8, 8)
        mean, var = stats[id(bn)]
        assert torch.allclose(mean, h.mean((0, 2, 3))) and torch.allclose(var, h.var((0, 2, 3), unbiased=False))

    def test_statistics_keep_their_gradient(self):
        """Training differentiates through the recorded statistics, as through BatchNorm's own forward."""
        model = tiny_bn_net(seed=0).train()
        x, y = batch()
        with clean_statistics(model):
            model(x)
            loss = margin_lower_bounds(model, x, y, EPS).sum()
        conv = model[1].weight
        (grad,) = torch.autograd.grad(loss, conv)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


class TestVerifiedDecision:
    def test_float32_decision_never_contradicted_in_float64(self):
        """The rounding allowance with BN_FAN: what float32 verifies has positive float64 margins."""
        model64 = tiny_bn_net(seed=0).eval()
        model32 = copy.deepcopy(model64).float()
        x, _ = batch(n=16, seed=7)
        y = model64(x).argmax(1)
        radius = RadiusConfig("abs", lam=0.002)
        ok = verified_by(model32, x.float(), y, EPS / 4, radius, method="best")
        exact = torch.maximum(
            margin_lower_bounds(model64, x, y, EPS / 4, radius), linear_margin_bounds(model64, x, y, EPS / 4, radius)
        )
        own = nn.functional.one_hot(y, 10).bool()
        assert ok.sum() >= 8  # the check has points to check
        assert (exact.masked_fill(own, 1.0)[ok] > 0).all()
