"""Linear (CROWN-style) margin bounds: soundness by sampling and by attack, exactness, the verified decision."""

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

from approp.bounds import (
    UnsupportedLayerError,
    interval_bounds,
    linear_margin_bounds,
    margin_lower_bounds,
)
from approp.bounds.linear import backward, prepare
from approp.bounds.verify import allowance, clears, interval_margins, margin_bounds, verified_by
from approp.config import RadiusConfig
from approp.models import CIFAR10_MEAN, CIFAR10_STD, CNN4, Normalize
from approp.radius import parameter_radii

KINDS = ["abs", "const", "tanh"]
LAM = {"abs": 0.03, "const": 0.001, "tanh": 0.05}
EPS = 0.004


def tiny_net() -> nn.Sequential:
    """A small conv net with a strided conv (output_padding 1 in the transpose) and an odd-sized pool."""
    return nn.Sequential(
        Normalize(CIFAR10_MEAN, CIFAR10_STD),
        nn.Conv2d(3, 4, 3, stride=2, padding=1),  # 16 → 8
        nn.ReLU(),
        nn.Conv2d(4, 6, 2),  # 8 → 7
        nn.ReLU(),
        nn.MaxPool2d(2),  # 7 → 3 (last row and column dropped)
        nn.Flatten(),
        nn.Linear(54, 16),
        nn.ReLU(),
        nn.Linear(16, 10),
    )


def _teacher_data(shape, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns images (64, *shape) and labels from a fixed random linear teacher (learnable in a few steps)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(64, *shape, generator=gen)
    teacher = torch.randn(x[0].numel(), 10, generator=gen)
    return x, (x.flatten(1) @ teacher).argmax(1)


def make_model(arch: str, trained: bool, seed: int = 0) -> nn.Module:
    """Returns a float64 model: random (weights halved, like a trained net's scale) or briefly trained."""
    torch.manual_seed(seed)
    model = CNN4() if arch == "cnn4" else tiny_net()
    shape = (3, 32, 32) if arch == "cnn4" else (3, 16, 16)
    if trained:
        x, y = _teacher_data(shape, seed)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(15):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    else:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(0.5)
    return model.double().eval()


def points(arch: str, n: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    size = 32 if arch == "cnn4" else 16
    return torch.rand(n, 3, size, size, generator=gen, dtype=torch.float64), torch.randint(0, 10, (n,), generator=gen)


def true_margins(model, params, x, y) -> torch.Tensor:
    out = functional_call(model, params, (x,))
    return out.gather(1, y[:, None]) - out


def sample_box(model, radius, corners: bool, gen) -> dict[str, torch.Tensor]:
    """Returns parameters sampled in the box, uniformly or at a random corner."""
    radii = parameter_radii(model, radius)
    params = {}
    for name, p in model.named_parameters():
        u = torch.rand(p.shape, generator=gen, dtype=p.dtype) * 2 - 1
        params[name] = (p + (u.sign() if corners else u) * radii[name]).detach()
    return params


def sample_ball(x, eps, corners: bool, gen) -> torch.Tensor:
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    u = torch.rand(x.shape, generator=gen, dtype=x.dtype)
    return lo + (hi - lo) * (u.round() if corners else u)


class TestSoundness:
    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("corners", [False, True], ids=["uniform", "corners"])
    @pytest.mark.parametrize("arch,trained", [("cnn4", False), ("cnn4", True), ("tiny", False), ("tiny", True)])
    def test_sampled_margins_never_below_bound(self, kind, corners, arch, trained):
        model = make_model(arch, trained)
        x, y = points(arch)
        radius = RadiusConfig(kind, lam=LAM[kind])
        lower = linear_margin_bounds(model, x, y, EPS, radius)
        gen = torch.Generator().manual_seed(2)
        for _ in range(10):
            m = true_margins(model, sample_box(model, radius, corners, gen), sample_ball(x, EPS, corners, gen), y)
            assert (m >= lower - 1e-9).all()
        # The bound is informative: above the interval bound on average, and finite.
        assert torch.isfinite(lower).all()
        assert lower.sum() > margin_lower_bounds(model, x, y, EPS, radius).sum()

    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("arch", ["cnn4", "tiny"])
    def test_joint_attack_on_parameters_and_input_never_beats_bound(self, kind, arch):
        model = make_model(arch, trained=True)
        x, y = points(arch, n=2)
        radius = RadiusConfig(kind, lam=LAM[kind])
        lower = linear_margin_bounds(model, x, y, EPS, radius)
        j = lower.masked_fill(nn.functional.one_hot(y, 10).bool(), float("inf")).argmin(1)  # weakest margin
        reached = _attack(model, x, y, j, radius, EPS, steps=25)
        start = true_margins(model, dict(model.named_parameters()), x, y).gather(1, j[:, None]).squeeze(1)
        bound = lower.gather(1, j[:, None]).squeeze(1)
        assert (reached >= bound - 1e-9).all()
        assert (reached < start).all()  # the attack does move the margin down

    @pytest.mark.parametrize("kind", KINDS)
    def test_crown_intermediate_sound_and_within_interval(self, kind):
        model = make_model("tiny", trained=True)
        x, y = points("tiny")
        radius = RadiusConfig(kind, lam=LAM[kind])
        ibp, crown = prepare(model, x, EPS, radius), prepare(model, x, EPS, radius, intermediate="crown")
        pre_i, pre_c = ibp.inputs[8], crown.inputs[8]  # input of the dense ReLU
        assert (pre_c.lower >= pre_i.lower).all() and (pre_c.upper <= pre_i.upper).all()
        assert (pre_c.upper - pre_c.lower).sum() < (pre_i.upper - pre_i.lower).sum()
        lower = linear_margin_bounds(model, x, y, EPS, radius, intermediate="crown")
        gen = torch.Generator().manual_seed(4)
        for _ in range(10):
            m = true_margins(model, sample_box(model, radius, True, gen), sample_ball(x, EPS, True, gen), y)
            assert (m >= lower - 1e-9).all()


def _attack(model, x, y, j, radius, eps, steps: int) -> torch.Tensor:
    """Returns margins z_y − z_j (B,) after projected gradient descent on parameters and inputs together.

    Each point gets its own copy of the parameters (the worst network differs per point).
    """
    radii = parameter_radii(model, radius)
    reached = []
    for b in range(len(y)):
        params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
        xb = x[b : b + 1].clone().requires_grad_()
        lo, hi = (x[b : b + 1] - eps).clamp(min=0), (x[b : b + 1] + eps).clamp(max=1)
        for _ in range(steps):
            margin = true_margins(model, params, xb, y[b : b + 1])[0, j[b]]
            grads = torch.autograd.grad(margin, [xb, *params.values()])
            with torch.no_grad():
                xb.sub_(eps / 4 * grads[0].sign())
                xb.copy_(torch.minimum(torch.maximum(xb, lo), hi))
                for (name, p), g in zip(params.items(), grads[1:]):
                    centre, r = dict(model.named_parameters())[name], radii[name]
                    p.sub_(r / 4 * g.sign())
                    p.copy_(torch.minimum(torch.maximum(p, centre - r), centre + r))
        with torch.no_grad():
            reached.append(true_margins(model, params, xb, y[b : b + 1])[0, j[b]])
    return torch.stack(reached)


class TestExactness:
    @pytest.mark.parametrize("arch", ["cnn4", "tiny"])
    def test_point_box_and_ball_give_the_exact_margins(self, arch):
        model = make_model(arch, trained=True)
        x, y = points(arch)
        exact = model(x).gather(1, y[:, None]) - model(x)
        for radius in (None, RadiusConfig("tanh", lam=0.0)):
            torch.testing.assert_close(linear_margin_bounds(model, x, y, 0.0, radius), exact, rtol=1e-10, atol=1e-10)

    @pytest.mark.parametrize("kind", KINDS)
    def test_single_linear_layer_equals_interval_margins(self, kind):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10)).double()
        x, y = torch.rand(5, 3, 2, 2, dtype=torch.float64), torch.randint(0, 10, (5,))
        radius = RadiusConfig(kind, lam=LAM[kind] * 3)
        torch.testing.assert_close(
            linear_margin_bounds(model, x, y, 0.05, radius), margin_lower_bounds(model, x, y, 0.05, radius)
        )

    @pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (2, 0)])
    def test_single_conv_layer_equals_interval_bounds(self, stride, padding):
        """Backward bounds of ±e_i through one conv (its transpose, output_padding included) are the interval ends."""
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 2, 3, stride=stride, padding=padding)).double()
        x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
        radius = RadiusConfig("abs", lam=0.1)
        ib = interval_bounds(model, x, 0.05, radius)
        prep = prepare(model, x, 0.05, radius)
        n = ib.lower[0].numel()
        eye = torch.eye(n, dtype=torch.float64).view(n, *ib.lower.shape[1:])
        lower, _ = backward(prep, eye.expand(2, *eye.shape))
        upper, _ = backward(prep, -eye.expand(2, *eye.shape))
        torch.testing.assert_close(lower, ib.lower.flatten(1))
        torch.testing.assert_close(-upper, ib.upper.flatten(1))


class TestVerifiedDecision:
    @pytest.mark.parametrize("kind", KINDS)
    def test_best_of_both_at_least_interval(self, kind):
        model = make_model("cnn4", trained=True)
        x, y = points("cnn4", n=4)
        y = model(x).argmax(1)
        radius = RadiusConfig(kind, lam=LAM[kind] / 10)
        for eps in (0.0, 0.001, EPS):
            prep = prepare(model, x, eps, radius)
            ib, best = interval_margins(prep, y), margin_bounds(prep, y, "best")
            assert (best.lower - allowance(best) >= ib.lower - allowance(ib)).all()
            by_ibp = verified_by(model, x, y, eps, radius, method="ibp")
            assert (verified_by(model, x, y, eps, radius, method="best") >= by_ibp).all()

    def test_float32_verified_never_contradicted_in_float64(self):
        """A float32 margin that clears the allowance is positive in float64, and the allowance covers the error."""
        model64 = make_model("cnn4", trained=True, seed=3)
        model32 = copy.deepcopy(model64).float()
        x, _ = points("cnn4", n=8, seed=5)
        y = model64(x).argmax(1)
        radius = RadiusConfig("tanh", lam=0.01)
        checked = 0
        for eps in (0.0, 0.0005, 0.001, 0.002):
            p32, p64 = prepare(model32, x.float(), eps, radius), prepare(model64, x, eps, radius)
            for method in ("ibp", "crown"):
                b32, b64 = margin_bounds(p32, y, method), margin_bounds(p64, y, method)
                ok = clears(b32, y)
                own = nn.functional.one_hot(y, 10).bool()
                assert (b64.lower[ok & ~own] > 0).all()
                err = (b32.lower.double() - b64.lower).abs()
                assert (err <= allowance(b32).double() + 1e-12).all()
                checked += int((ok & ~own).sum())
        assert checked > 0  # some margins were verified, so the check had something to check
        mask32 = verified_by(model32, x.float(), y, 0.001, radius, method="best")
        low64 = margin_bounds(prepare(model64, x, 0.001, radius), y, "best").lower
        assert (low64[mask32].masked_fill(nn.functional.one_hot(y[mask32], 10).bool(), 1.0) > 0).all()

    def test_linear_pass_runs_only_on_open_margins_weakest_first(self, monkeypatch):
        import approp.bounds.verify as verify

        model = make_model("tiny", trained=True)
        x, _ = points("tiny", n=6)
        scores = model(x)
        y = torch.cat([scores[:3].argmax(1), scores[3:].argmin(1)])  # three right, three wrong
        radius = RadiusConfig("abs", lam=0.001)
        prep = prepare(model, x, 0.0005, radius)
        interval = interval_margins(prep, y)
        ok_ibp = clears(interval, y)
        linear_ok = clears(margin_bounds(prep, y, "crown"), y)
        seen = []
        real = verify.backward
        monkeypatch.setattr(verify, "backward", lambda p, coef: seen.append(coef.shape[:2]) or real(p, coef))
        decided = verified_by(model, x, y, 0.0005, radius, method="best")
        open_points = ~ok_ibp.all(1)
        # Stage 1: one functional per point the intervals left open, on its weakest open margin.
        assert seen[0] == (int(open_points.sum()), 1)
        weakest = interval.lower.masked_fill(ok_ibp, float("inf")).argmin(1)
        cleared = linear_ok.gather(1, weakest[:, None]).squeeze(1)
        # Stage 2: only the points whose weakest margin cleared and that have more open, at most those margins.
        again = open_points & cleared & ((~ok_ibp).sum(1) > 1)
        assert sum(n for n, _ in seen[1:]) == int(again.sum())
        assert all(s <= int((~ok_ibp).sum(1).max()) - 1 for _, s in seen[1:])
        assert 0 < ok_ibp.all(1).sum() < len(y)  # the case exercises both paths
        assert (open_points & ~cleared).any()  # and a point decided at its weakest margin
        # The same decision as taking every margin's linear bound.
        assert torch.equal(decided, (ok_ibp | linear_ok).all(1))

    @pytest.mark.parametrize("method", ["crown", "best"])
    def test_lazy_decision_equals_all_margins(self, method):
        model = make_model("cnn4", trained=True)
        x, _ = points("cnn4", n=12, seed=2)
        y = model(x).argmax(1)
        y[::4] = (y[::4] + 1) % 10  # some wrong labels: decided at their weakest margin
        radius = RadiusConfig("tanh", lam=LAM["tanh"] / 10)
        for eps in (0.0, 0.0005, EPS):
            full = clears(margin_bounds(prepare(model, x, eps, radius), y, method), y).all(1)
            assert torch.equal(verified_by(model, x, y, eps, radius, method=method), full)


class TestErrors:
    def test_unsupported_layer_is_named(self):
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(144, 10))
        with pytest.raises(UnsupportedLayerError, match=r"layer 1 \(Tanh\)"):
            linear_margin_bounds(model, torch.rand(1, 3, 8, 8), torch.tensor([0]), 0.1)

    def test_unsupported_pool_is_named(self):
        model = nn.Sequential(nn.MaxPool2d(3), nn.Flatten(), nn.Linear(12, 10))
        with pytest.raises(UnsupportedLayerError, match="MaxPool2d"):
            linear_margin_bounds(model, torch.rand(1, 3, 6, 6), torch.tensor([0]), 0.1)

    def test_bad_arguments_named(self):
        model = make_model("tiny", trained=False)
        x, y = points("tiny", n=1)
        with pytest.raises(ValueError, match="intermediate"):
            linear_margin_bounds(model, x, y, 0.0, intermediate="deeppoly")
        with pytest.raises(ValueError, match="method"):
            verified_by(model, x, y, 0.0, method="lp")
        with pytest.raises(ValueError, match="eps"):
            linear_margin_bounds(model, x, y, -1.0)
