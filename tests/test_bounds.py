"""Interval bounds: soundness by sampling (uniform and at box corners), collapse, monotonicity."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from approp.bounds import (
    Interval,
    ParamInterval,
    UnsupportedLayerError,
    affine,
    interval_bounds,
    margin_lower_bounds,
    verified,
    worst_case_loss,
)
from approp.config import RadiusConfig
from approp.models import CNN4
from approp.radius import parameter_radii

KINDS = ["abs", "const", "tanh"]
# λ per kind chosen so that the boxes are of comparable, non-trivial size.
LAM = {"abs": 0.05, "const": 0.002, "tanh": 0.05}


def small_cnn4(seed: int) -> nn.Module:
    """A CNN4 in float64 with smaller weights (so bounds stay informative, like a trained net)."""
    torch.manual_seed(seed)
    model = CNN4().double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    return model


def sample_networks(model, radius: RadiusConfig, n: int, corners: bool, gen):
    """Yields parameter dicts sampled in the box (uniformly, or at random corners)."""
    radii = parameter_radii(model, radius)
    for _ in range(n):
        params = {}
        for name, p in model.named_parameters():
            u = torch.rand(p.shape, generator=gen, dtype=p.dtype) * 2 - 1
            if corners:
                u = u.sign()
            params[name] = (p + u * radii[name]).detach()
        yield params


def sample_inputs(x, eps, gen):
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    return lo + (hi - lo) * torch.rand(x.shape, generator=gen, dtype=x.dtype)


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 32, 32, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (4,), generator=gen)
    return x, y


class TestSoundness:
    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("corners", [False, True], ids=["uniform", "corners"])
    @pytest.mark.parametrize("seed", [0, 1])
    def test_sampled_outputs_lie_within_bounds(self, kind, corners, seed, batch):
        x, _ = batch
        model = small_cnn4(seed)
        radius, eps = RadiusConfig(kind, lam=LAM[kind]), 0.01
        b = interval_bounds(model, x, eps, radius)
        gen = torch.Generator().manual_seed(seed)
        widest = torch.zeros(())
        for params in sample_networks(model, radius, 12, corners, gen):
            out = functional_call(model, params, (sample_inputs(x, eps, gen),))
            assert (out >= b.lower - 1e-9).all() and (out <= b.upper + 1e-9).all()
            widest = torch.maximum(widest, (out - b.center).abs().max())
        # The samples really move the output (the test would catch a collapsed box).
        assert widest > 1e-3

    @pytest.mark.parametrize("kind", KINDS)
    def test_margin_bounds_sound_and_tighter(self, kind, batch):
        x, y = batch
        model = small_cnn4(3)
        radius, eps = RadiusConfig(kind, lam=LAM[kind]), 0.01
        lower = margin_lower_bounds(model, x, y, eps, radius)
        b = interval_bounds(model, x, eps, radius)
        separate = b.lower.gather(1, y[:, None]) - b.upper
        separate.scatter_(1, y[:, None], 0.0)
        assert (lower >= separate - 1e-9).all()
        gen = torch.Generator().manual_seed(3)
        for params in sample_networks(model, radius, 16, True, gen):
            out = functional_call(model, params, (sample_inputs(x, eps, gen),))
            true_margin = out.gather(1, y[:, None]) - out
            assert (true_margin >= lower - 1e-9).all()

    def test_single_affine_layer_is_exact_at_eps_zero(self):
        """With a point input, W_r·|x| + b_r is attained at the corner W_c + sign(x)·W_r."""
        torch.manual_seed(0)
        layer = nn.Linear(7, 5).double()
        x = torch.rand(3, 7, dtype=torch.float64) * 2 - 0.5  # partly outside [0, 1]: clipped
        radius = RadiusConfig("const", lam=0.1)
        b = interval_bounds(nn.Sequential(layer), x, 0.0, radius)
        # Upper bound of output (i, j) is attained by W_j = W_c,j + sign(x_i)·λ, b_j + λ.
        x = x.clamp(0, 1)
        w_up = layer.weight.unsqueeze(0) + 0.1 * x.sign().unsqueeze(1)  # (3, 5, 7)
        attained = torch.einsum("bjd,bd->bj", w_up, x) + layer.bias + 0.1
        torch.testing.assert_close(b.upper, attained)


class TestCollapseAndMonotonicity:
    @pytest.mark.parametrize("kind", KINDS)
    def test_collapse_to_forward_pass(self, kind, batch):
        x, _ = batch
        model = small_cnn4(0)
        b = interval_bounds(model, x, 0.0, RadiusConfig(kind, lam=0.0))
        torch.testing.assert_close(b.center, model(x), rtol=1e-12, atol=1e-12)
        assert b.radius.abs().max() == 0
        assert interval_bounds(model, x, 0.0, None).radius.abs().max() == 0

    @pytest.mark.parametrize("kind", KINDS)
    def test_widen_monotonically_in_eps_and_lam(self, kind, batch):
        x, _ = batch
        model = small_cnn4(0)
        lam = LAM[kind]
        prev = None
        for eps in [0.0, 0.002, 0.005, 0.01]:
            b = interval_bounds(model, x, eps, RadiusConfig(kind, lam=lam))
            if prev is not None:
                assert (b.lower <= prev.lower + 1e-12).all() and (b.upper >= prev.upper - 1e-12).all()
                assert b.radius.sum() > prev.radius.sum()
            prev = b
        prev = None
        for scale in [0.0, 0.25, 0.5, 1.0]:
            b = interval_bounds(model, x, 0.003, RadiusConfig(kind, lam=lam * scale))
            if prev is not None:
                assert (b.lower <= prev.lower + 1e-12).all() and (b.upper >= prev.upper - 1e-12).all()
                assert b.radius.sum() > prev.radius.sum()
            prev = b

    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("margin", [False, True])
    def test_worst_case_loss_at_least_clean_loss(self, kind, margin, batch):
        x, y = batch
        model = small_cnn4(2)
        clean = torch.nn.functional.cross_entropy(model(x), y)
        worst = worst_case_loss(model, x, y, 0.004, RadiusConfig(kind, lam=LAM[kind]), margin=margin)
        assert worst >= clean
        zero = worst_case_loss(model, x, y, 0.0, RadiusConfig(kind, lam=0.0), margin=margin)
        torch.testing.assert_close(zero, clean)

    def test_verified_implies_correct_and_shrinks_with_eps(self, batch):
        x, _ = batch
        model = small_cnn4(0)
        y = model(x).argmax(1)  # labels the model gets right
        assert verified(model, x, y, 0.0, None).all()
        big = verified(model, x, y, 0.05, RadiusConfig("abs", lam=0.05))
        assert not big.any()


class TestRules:
    def test_abs_fast_path_equals_general_product(self):
        torch.manual_seed(0)
        w = torch.randn(4, 6, dtype=torch.float64)
        x = Interval(torch.randn(2, 6, dtype=torch.float64), torch.rand(2, 6, dtype=torch.float64))
        fast = affine(x, ParamInterval(w, 0.1 * w.abs(), rel=0.1), None, torch.nn.functional.linear)
        general = affine(x, ParamInterval(w, 0.1 * w.abs()), None, torch.nn.functional.linear)
        torch.testing.assert_close(fast.center, general.center)
        torch.testing.assert_close(fast.radius, general.radius)

    @pytest.mark.parametrize("rel", [None, 0.1])
    def test_affine_agrees_across_interval_forms(self, rel):
        """Ends [c − r, c + r] and ⟨c, r⟩ are the same interval, so every rule must agree."""
        torch.manual_seed(0)
        w, b = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
        c, r = torch.randn(2, 6, dtype=torch.float64), torch.rand(2, 6, dtype=torch.float64)
        box = ParamInterval(w, 0.1 * w.abs(), rel=rel)
        bias = ParamInterval(b, 0.05 * b.abs())
        mid = affine(Interval(c, r), box, bias, torch.nn.functional.linear)
        ends = affine(Interval.from_bounds(c - r, c + r), box, bias, torch.nn.functional.linear)
        torch.testing.assert_close(mid.lower, ends.lower)
        torch.testing.assert_close(mid.upper, ends.upper)

    def test_unsupported_layer_is_named(self):
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.ReLU())
        with pytest.raises(UnsupportedLayerError, match=r"layer 1 \(Tanh\)"):
            interval_bounds(model, torch.rand(1, 3, 8, 8), 0.1)

    def test_negative_eps_or_lam_rejected(self, batch):
        x, _ = batch
        model = small_cnn4(0)
        with pytest.raises(ValueError, match="eps"):
            interval_bounds(model, x, -0.1)
        with pytest.raises(ValueError, match="lam"):
            interval_bounds(model, x, 0.1, RadiusConfig("abs"), lam=-1.0)

    def test_gradients_flow_through_radius(self, batch):
        x, y = batch
        model = small_cnn4(0)
        worst_case_loss(model, x, y, 0.003, RadiusConfig("tanh", lam=0.05)).backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name
