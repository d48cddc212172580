"""Cheaper forms of the interval rules equal the forms they replace, to float64 rounding.

The `const` and `quant` radii are one value per output unit, so the affine rule sums |x_c| over one
channel instead of running a second full product; the BatchNorm rule runs its per-channel maps as
eval-mode batch_norm calls. Each must give the bound (and, for training, the gradient) of the
general form: here both are computed in float64 and compared to 1e-12 relative. Skipping |x_c|
after a ReLU and adding in place change no bit.
"""

import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from approp.bounds import RULES, Interval, ParamInterval, affine, layer_params
from approp.bounds.batchnorm import batchnorm_rule, statistics
from approp.bounds.graph_rules import add_rule
from approp.bounds.rules import Call
from approp.config import RadiusConfig
from approp.radius import radius_of, radius_per_output

RADII = [
    RadiusConfig("const", lam=0.03),
    RadiusConfig("quant", lam=1.0, bits=4),
    RadiusConfig("quant", lam=1.0, bits=8, per_channel=False),
    RadiusConfig("quant", lam=1.0, bits=6, restricted=True),
]
CONVS = [
    dict(stride=1, padding=1, dilation=1),
    dict(stride=2, padding=0, dilation=1),
    dict(stride=1, padding=2, dilation=2),
]


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Returns whether a equals b to 1e-12 relative to b's largest magnitude."""
    return bool((a - b).abs().max() <= 1e-12 * b.abs().max())


def interval64(shape: tuple[int, ...], ends: bool, seed: int) -> Interval:
    """Returns a float64 interval of `shape` with centres of both signs, held by its ends or as ⟨c, r⟩."""
    gen = torch.Generator().manual_seed(seed)
    c = torch.randn(shape, generator=gen, dtype=torch.float64)
    r = torch.rand(shape, generator=gen, dtype=torch.float64) * 0.3
    return Interval.from_bounds(c - r, c + r) if ends else Interval(c, r)


@pytest.mark.parametrize("radius", RADII, ids=lambda r: f"{r.kind}-{r.bits}-{r.per_channel}-{r.restricted}")
def test_radius_per_output_expands_to_the_radius(radius):
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    rho = radius_per_output(w, radius)
    assert rho.dim() == 4 and rho.shape[1:] == (1, 1, 1) and rho.shape[0] in (1, 5)
    assert torch.equal(rho.expand_as(w), radius_of(w, radius))
    assert radius_per_output(w[0, 0, 0], radius) is None  # biases keep the general form
    assert radius_per_output(w, RadiusConfig("tanh", lam=0.03)) is None


@pytest.mark.parametrize("radius", RADII[:2], ids=["const", "quant"])
@pytest.mark.parametrize("conv", CONVS, ids=["s1p1", "s2p0", "dilated"])
@pytest.mark.parametrize("ends", [False, True], ids=["mid-rad", "ends"])
def test_conv_window_sum_equals_the_full_radius_product(radius, conv, ends):
    torch.manual_seed(0)
    layer = nn.Conv2d(4, 6, 3, **conv).double()
    x = interval64((3, 4, 9, 9), ends, seed=1)
    params = layer_params(layer, radius)
    assert params["weight"].per_output is not None

    def op(inp, weight, bias):
        return F.conv2d(inp, weight, bias, layer.stride, layer.padding, layer.dilation)

    fast = affine(x, params["weight"], params["bias"], op)
    general = ParamInterval(layer.weight, params["weight"].radius)  # no per_output: the stacked product
    slow = affine(x, general, params["bias"], op)
    assert close(fast.center, slow.center) and close(fast.radius, slow.radius)


@pytest.mark.parametrize("ends", [False, True], ids=["mid-rad", "ends"])
def test_linear_window_sum_equals_the_full_radius_product_and_its_gradient(ends):
    torch.manual_seed(0)
    layer = nn.Linear(7, 5).double()
    radius = RadiusConfig("const", lam=0.05)
    x = interval64((4, 7), ends, seed=2)
    params = layer_params(layer, radius)
    fast = affine(x, params["weight"], params["bias"], F.linear)
    slow = affine(x, ParamInterval(layer.weight, params["weight"].radius), params["bias"], F.linear)
    assert close(fast.radius, slow.radius) and close(fast.center, slow.center)
    (g_fast,) = torch.autograd.grad((fast.upper - fast.lower).sum(), layer.weight)
    (g_slow,) = torch.autograd.grad((slow.upper - slow.lower).sum(), layer.weight)
    assert close(g_fast, g_slow)


def reference_bn(layer: nn.Module, x: Interval, params: dict[str, ParamInterval]) -> Interval:
    """Returns the BatchNorm interval in the form the rule had before: Rump's product term by term."""
    mean, var = statistics(layer)
    shape = (1, -1) + (1,) * (x.center.dim() - 2)
    inv = torch.rsqrt(var + layer.eps)
    g, b = params["weight"], params["bias"]
    k_c, b_c, mean = (g.center * inv).view(shape), b.center.view(shape), mean.view(shape)
    z_c = x.center - mean
    yc = torch.addcmul(b_c, k_c, z_c)
    yr = k_c.abs() * x.radius
    if g.radius is not None:
        yr = torch.addcmul(yr, (g.radius * inv).view(shape), z_c.abs() + x.radius)
    if b.radius is not None:
        yr = yr + b.radius.view(shape)
    return Interval(yc, yr)


@pytest.mark.parametrize("kind", ["1d", "2d"])
@pytest.mark.parametrize("radius", [RadiusConfig("tanh", lam=0.2), RadiusConfig("abs", lam=0.1), None])
@pytest.mark.parametrize("ends", [False, True], ids=["mid-rad", "ends"])
def test_batchnorm_rule_equals_rumps_product_term_by_term_and_so_does_its_gradient(kind, radius, ends):
    gen = torch.Generator().manual_seed(3)
    layer = (nn.BatchNorm1d(5) if kind == "1d" else nn.BatchNorm2d(5)).double().eval()
    with torch.no_grad():
        for t in (layer.weight, layer.bias, layer.running_mean):
            t.copy_(torch.randn(5, generator=gen))
        layer.running_var.copy_(torch.rand(5, generator=gen) + 0.1)
    x = interval64((4, 5) if kind == "1d" else (4, 5, 6, 6), ends, seed=4)
    new, old = (
        batchnorm_rule(layer, x, layer_params(layer, radius)),
        reference_bn(layer, x, layer_params(layer, radius)),
    )
    assert close(new.center, old.center) and close(new.radius, old.radius)
    weights = torch.randn(new.center.shape, generator=gen, dtype=torch.float64)
    grads = [
        torch.autograd.grad((weights * (iv.center + 3 * iv.radius)).sum(), [layer.weight, layer.bias])
        for iv in (new, old)
    ]
    assert all(close(a, b) for a, b in zip(*grads))


@pytest.mark.parametrize("radius", [RadiusConfig("tanh", lam=0.05), RadiusConfig("abs", lam=0.05), RADII[0]])
@pytest.mark.parametrize("ends", [False, True], ids=["mid-rad", "ends"])
def test_a_relus_output_skips_the_abs_and_gives_the_same_bound(radius, ends):
    """After a ReLU the centre is >= 0, so the affine rule's |x_c| is x_c itself: bit for bit the same."""
    torch.manual_seed(0)
    layer = nn.Conv2d(4, 6, 3, padding=1).double()
    relu = RULES[nn.ReLU](nn.ReLU(), interval64((3, 4, 7, 7), ends, seed=5), {})
    assert relu.nonneg and (relu.lower >= 0).all()
    params = layer_params(layer, radius)
    flagged = affine(relu, params["weight"], params["bias"], lambda a, w, b: F.conv2d(a, w, b, padding=1))
    relu.nonneg = False
    plain = affine(relu, params["weight"], params["bias"], lambda a, w, b: F.conv2d(a, w, b, padding=1))
    assert torch.equal(flagged.center, plain.center) and torch.equal(flagged.radius, plain.radius)


def test_a_residual_sum_of_ends_and_centre_radius_is_the_sum_of_the_ends():
    """The addition rule forms c ∓ r and adds the other operand's ends in place: exactly (c ∓ r) + ends."""
    a, b = interval64((2, 3, 4, 4), True, seed=6), interval64((2, 3, 4, 4), False, seed=7)
    for x, y in ((a, b), (b, a)):
        total = add_rule(Call(operator.add, (x, y), {}), x, {})
        assert torch.equal(total.lower, (b.center - b.radius) + a.lower)
        assert torch.equal(total.upper, (b.center + b.radius) + a.upper)
