"""The graph engine: every node kind and the DAG backward pass sound over box × ball, on residual networks.

Networks: ForeignResNet (tests/foreign_resnet.py: torch only, no approp import, every new node kind),
a linear DAG (the backward pass must be exact there), ResNet-20 and PreAct ResNet-18 (approp.models).
BatchNorm: eval mode (running statistics) and train mode (the clean batch's statistics through the
midpoint network; the reference network is then the eval-mode copy with those statistics fixed).
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from approp.attacks.joint import joint_attack_margins
from approp.bounds import (
    BoundsRecord,
    clean_statistics,
    interval_bounds,
    linear_margin_bounds,
    margin_lower_bounds,
    trace,
    worst_case_loss,
)
from approp.bounds.graph_rules import add_rule
from approp.bounds.interval import Interval
from approp.bounds.linear import backward, prepare
from approp.bounds.rules import Call, UnsupportedLayerError, kind_name
from approp.bounds.verify import clears, margin_bounds, verified_by
from approp.config import ConfigError, ModelConfig, RadiusConfig, RunConfig
from approp.julia import check_julia_run
from approp.models import build_model, ibp_std
from approp.radius import parameter_box
from box_samples import samples
from foreign_resnet import ForeignResNet  # tests/: torch only

MODES = ["eval", "train"]
# (ε, radius): the tight regime and the training scale.
REGIMES = {"tight": (1e-5, RadiusConfig("abs", lam=1e-5)), "training": (2 / 255, RadiusConfig("tanh", lam=0.01))}


def foreign(seed: int = 0) -> nn.Module:
    """Returns a float64 ForeignResNet with random BatchNorm γ (both signs), β and running statistics."""
    torch.manual_seed(seed)
    net = ForeignResNet().double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                sign = torch.where(torch.rand(c, generator=gen) < 0.2, -1.0, 1.0)
                m.weight.copy_((torch.rand(c, generator=gen) + 0.5) * sign)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.3)
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.3)
    return net.eval()


def batch(n: int = 4, seed: int = 1, size: int = 8):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=gen, dtype=torch.float64), torch.randint(0, 10, (n,), generator=gen)


def reference(model: nn.Module, x: torch.Tensor, mode: str) -> nn.Module:
    """Returns the network the bounds speak about: `model` itself (eval) or its copy with the clean batch's
    statistics fixed (train); leaves `model`'s BatchNorm layers in `mode` (Dropout stays in eval mode)."""
    if mode == "eval":
        return model.eval()
    model.train()
    model.drop.eval()  # Dropout has a rule in eval mode only
    with clean_statistics(model) as stats, torch.no_grad():
        model(x)
    net = copy.deepcopy(model)
    with torch.no_grad():
        for src, dst in zip(model.modules(), net.modules()):
            if id(src) in stats:
                dst.running_mean.copy_(stats[id(src)][0])
                dst.running_var.copy_(stats[id(src)][1])
    return net.eval()


def all_bounds(model, x, y, eps, radius, mode):
    """Returns (interval bounds, interval margins, linear margins) with `mode`'s statistics."""
    with clean_statistics(model):
        if mode == "train":
            model(x)
        return (
            interval_bounds(model, x, eps, radius),
            margin_lower_bounds(model, x, y, eps, radius),
            linear_margin_bounds(model, x, y, eps, radius),
        )


def ball(x, eps, gen, corners: bool):
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    u = torch.rand(x.shape, generator=gen, dtype=x.dtype)
    return lo + (hi - lo) * (u.round() if corners else u)


def test_the_trace_holds_every_node_kind():
    names = {kind_name(n.key) for n in trace(foreign()).nodes[1:]}
    assert names >= {
        "Conv2d",
        "BatchNorm2d",
        "ReLU",
        "torch.nn.functional.relu",
        "torch.relu",
        "Tensor.relu",
        "operator.add (+)",
        "torch.add",
        "Tensor.add",
        "AvgPool2d",
        "torch.nn.functional.avg_pool2d",
        "AdaptiveAvgPool2d",
        "torch.nn.functional.adaptive_avg_pool2d",
        "Identity",
        "Dropout",
        "Tensor.view",
        "Tensor.reshape",
        "torch.flatten",
        "Tensor.flatten",
        "Linear",
    }
    graph = trace(foreign())
    fan_out = [n.name for n in graph.nodes if len(n.consumers) > 1]
    assert len(fan_out) >= 3  # the block input, the projection input, the pooled branches' input


@pytest.mark.parametrize("mode", MODES)
def test_point_box_and_ball_give_exactly_the_forward_pass(mode):
    model = foreign(seed=1)
    x, y = batch()
    net = reference(model, x, mode)
    zero = RadiusConfig("abs", lam=0.0)
    b, m_iv, m_lin = all_bounds(model, x, y, 0.0, zero, mode)
    with torch.no_grad():
        out = net(x)
    torch.testing.assert_close(b.lower, out, rtol=0, atol=1e-12)
    torch.testing.assert_close(b.upper, out, rtol=0, atol=1e-12)
    margins = out.gather(1, y[:, None]) - out
    torch.testing.assert_close(m_iv, margins, rtol=0, atol=1e-12)
    torch.testing.assert_close(m_lin, margins, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("corners", [False, True], ids=["uniform", "corners"])
def test_sampled_outputs_and_margins_within_bounds(mode, regime, corners):
    eps, radius = REGIMES[regime]
    model = foreign(seed=0)
    x, y = batch()
    net = reference(model, x, mode)
    b, m_iv, m_lin = all_bounds(model, x, y, eps, radius, mode)
    gen = torch.Generator().manual_seed(2)
    widest = torch.zeros((), dtype=torch.float64)
    for params in samples(model, radius, corners, gen, 12):
        with torch.no_grad():
            out = functional_call(net, params, (ball(x, eps, gen, corners),))
        assert (out >= b.lower - 1e-12).all() and (out <= b.upper + 1e-12).all()
        m = out.gather(1, y[:, None]) - out
        assert (m >= m_iv - 1e-12).all() and (m >= m_lin - 1e-12).all()
        widest = torch.maximum(widest, (out - b.center).abs().max())
    assert widest > (1e-7 if regime == "tight" else 1e-3)  # the samples do move the output
    # The linear (DAG backward) bound is informative: tighter than the intervals on average.
    own = F.one_hot(y, 10).bool()
    assert m_lin[~own].mean() > m_iv[~own].mean()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("regime", list(REGIMES))
def test_joint_attack_never_gets_below_the_bound(mode, regime):
    eps, radius = REGIMES[regime]
    model = foreign(seed=2)
    x, y = batch(seed=4)
    net = reference(model, x, mode)
    _, m_iv, m_lin = all_bounds(model, x, y, eps, radius, mode)
    own = F.one_hot(y, 10).bool()
    floor = torch.maximum(m_iv, m_lin).masked_fill(own, float("inf")).amin(1)  # (B,)
    reached = joint_attack_margins(
        net, parameter_box(net, radius), x, y, eps, steps=20, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        start = net(x)
    start = (start.gather(1, y[:, None]) - start).masked_fill(own, float("inf")).amin(1)
    assert (reached >= floor - 1e-9).all()
    assert (reached < start).all()  # the attack does move the margin down


class LinearDAG(nn.Module):
    """fc(flatten(conv2(h) + h + avg(h))), h = conv1(x): linear, with h read by three consumers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        return self.fc(torch.flatten(self.conv2(h) + h + F.avg_pool2d(h, 3, stride=1, padding=1), 1))


def test_dag_backward_pass_is_exact_on_a_linear_graph():
    """With no parameter box the network is linear in x, so ±e_i's backward bounds are the exact range
    over the ball: only if every consumer's coefficients reach h (summed) before h is processed."""
    torch.manual_seed(0)
    model = LinearDAG().double().eval()
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    eps = 0.05
    prep = prepare(model, x, eps, None)
    eye = torch.eye(5, dtype=torch.float64).expand(2, 5, 5)
    lower, _ = backward(prep, eye)
    upper = -backward(prep, -eye)[0]
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    jac = torch.autograd.functional.jacobian(lambda t: model(t).sum(0), x)  # (5, B, 3, 6, 6)
    out = model(x).detach()
    dlo, dhi = (lo - x).unsqueeze(0), (hi - x).unsqueeze(0)
    exact_lo = out + (torch.minimum(jac * dlo, jac * dhi)).flatten(2).sum(2).T
    exact_hi = out + (torch.maximum(jac * dlo, jac * dhi)).flatten(2).sum(2).T
    torch.testing.assert_close(lower, exact_lo, rtol=0, atol=1e-10)
    torch.testing.assert_close(upper, exact_hi, rtol=0, atol=1e-10)
    ib = interval_bounds(model, x, eps)
    assert (ib.lower <= exact_lo + 1e-10).all() and (ib.lower < exact_lo - 1e-3).any()  # intervals lose h's correlation


class Sigmoidal(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.sigmoid(x.flatten(1)))


def test_unsupported_node_is_refused_by_name_before_any_data():
    model = Sigmoidal()
    for bound in (
        lambda: interval_bounds(model, None, 0.1),
        lambda: margin_lower_bounds(model, None, None, 0.1),
        lambda: linear_margin_bounds(model, None, None, 0.1),
    ):
        with pytest.raises(UnsupportedLayerError, match=r"graph node 'sigmoid' \(a call of torch\.sigmoid\)") as err:
            bound()  # x is None: the refusal comes before anything reads it
        assert isinstance(err.value, ConfigError)
        assert "supported kinds" in str(err.value) and "operator.add (+)" in str(err.value)
    with pytest.raises(UnsupportedLayerError, match=r"layer 1 \(Tanh\), graph node '_1'"):
        interval_bounds(nn.Sequential(nn.Flatten(), nn.Tanh(), nn.Linear(12, 10)), None, 0.1)


class InPlaceRead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        a = self.relu(h)
        return self.fc(a + h)  # reads h after the in-place ReLU changed it


def test_in_place_update_read_later_and_train_dropout_are_refused():
    with pytest.raises(UnsupportedLayerError, match="in place"):
        interval_bounds(InPlaceRead(), torch.rand(1, 3, 2, 2), 0.1)
    model = foreign().train()
    with pytest.raises(UnsupportedLayerError, match="Dropout in training mode"), clean_statistics(model):
        model(batch()[0])
        interval_bounds(model, batch()[0], 0.01)


@pytest.mark.parametrize("arch", ["resnet20", "preact_resnet18"])
def test_residual_architectures(arch):
    torch.manual_seed(0)
    plain = build_model(ModelConfig(arch=arch))
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, init="ibp")).eval()
    weights = [p for p in model.parameters() if p.dim() >= 2]
    assert abs(weights[1].std().item() / ibp_std(weights[1]) - 1) < 0.1  # Shi et al.'s init …
    assert weights[-1].shape[0] == 10 and torch.equal(weights[-1], plain.linear.weight)  # … but the last layer
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([3, 7])
    b = interval_bounds(model, x, 0.0, RadiusConfig("abs", lam=0.0))
    with torch.no_grad():
        out = model(x)
    assert torch.equal(b.lower, out) and torch.equal(b.upper, out)
    lower = linear_margin_bounds(model, x, y, 1e-5, RadiusConfig("abs", lam=1e-5))
    margins = out.gather(1, y[:, None]) - out
    assert (lower <= margins + 1e-5).all() and (lower >= margins - 1.0).all()  # sound and close at 1e-5


def test_resnet20_trains_through_the_bounds_with_batchnorm_statistics():
    model = build_model(ModelConfig(arch="resnet20", init="ibp")).train()
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    record = BoundsRecord()
    with clean_statistics(model):
        clean = F.cross_entropy(model(x), y)
        worst = worst_case_loss(model, x, y, 2 / 255, RadiusConfig("tanh", lam=0.01), record=record)
    assert worst >= clean and torch.isfinite(worst)
    relus = [n for n in trace(model).nodes if n.is_relu]
    assert len(record.pre_relu) == len(relus) == 19 and record.first is not None
    worst.backward()
    assert model.blocks[3].shortcut[0].weight.grad.abs().sum() > 0  # through the projection shortcut


@pytest.mark.parametrize("arch", ["resnet20", "preact_resnet18"])
def test_julia_engine_refuses_residual_networks_by_name(arch):
    cfg = RunConfig().replace(model={"arch": arch}, train={"engine": "julia"})
    with pytest.raises(ConfigError, match=f"no residual networks.*got '{arch}'"):
        check_julia_run(cfg)


def test_verified_decision_on_a_residual_network():
    """The lazy verified decision agrees with all margins' best bounds; at ε = λ = 0 every point whose label is
    the network's own prediction is verified (the allowance is far below its margin)."""
    model = foreign(seed=3)
    x, _ = batch(n=6, seed=6)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::3] = (y[::3] + 1) % 10  # some wrong labels
    radius = RadiusConfig("abs", lam=1e-4)
    for eps in (0.0, 1e-4):
        full = clears(margin_bounds(prepare(model, x, eps, radius), y, "best"), y).all(1)
        assert torch.equal(verified_by(model, x, y, eps, radius, method="best"), full)
    zero = verified_by(model, x, y, 0.0, RadiusConfig("abs", lam=0.0))
    assert torch.equal(zero, torch.arange(6) % 3 != 0)


def test_addition_keeps_the_form_precision_needs():
    """bf16 ⟨c, r⟩ operands add as ⟨c_a + c_b, r_a + r_b⟩ (their ends would round r away); fp32 ends add as ends."""
    c = torch.full((2, 3), 1.0, dtype=torch.bfloat16)
    r = torch.full((2, 3), 0.01, dtype=torch.bfloat16)
    a, b = Interval(c, r), Interval.from_bounds(c.float() - 0.5, c.float() + 0.5)
    out = add_rule(Call(torch.add, (a, Interval(c, r)), {}), a, {})
    assert not out.has_bounds and torch.equal(out.radius, r + r)
    mixed = add_rule(Call(torch.add, (a, b), {}), a, {})
    assert not mixed.has_bounds  # a 16-bit operand keeps the midpoint-radius form
    torch.testing.assert_close(mixed.radius.float(), r.float() + 0.5)
    ends = add_rule(Call(torch.add, (b, b), {}), b, {})
    assert ends.has_bounds and torch.equal(ends.lower, 2 * b.lower) and torch.equal(ends.upper, 2 * b.upper)
    shifted = add_rule(Call(torch.add, (b, 2.0), {}), b, {})
    assert torch.equal(shifted.lower, b.lower + 2.0) and torch.equal(shifted.upper, b.upper + 2.0)
