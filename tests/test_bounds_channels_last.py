"""The channels_last path (train.channels_last, the CPU default): sound, and the same bounds and gradients."""

import copy

import pytest
import torch
from test_bounds import KINDS, LAM, sample_inputs, sample_networks, small_cnn4
from torch.func import functional_call

from approp.bounds import interval_bounds, margin_lower_bounds, worst_case_loss
from approp.config import RadiusConfig, RunConfig
from approp.models import CNN4
from approp.train.loop import prepare_model

CL = torch.channels_last


def to_cl(model, x):
    """Returns channels_last copies of a model and an image batch (B, 3, 32, 32)."""
    return copy.deepcopy(model).to(memory_format=CL), x.contiguous(memory_format=CL)


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(6, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (6,), generator=gen)
    return x, y


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("corners", [False, True], ids=["uniform", "corners"])
def test_sampled_outputs_lie_within_channels_last_bounds(kind, corners):
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(4, 3, 32, 32, generator=gen, dtype=torch.float64)
    model, x_cl = to_cl(small_cnn4(4), x)
    assert model.layers[1].weight.is_contiguous(memory_format=CL)
    radius, eps = RadiusConfig(kind, lam=LAM[kind]), 0.01
    b = interval_bounds(model, x_cl, eps, radius)
    widest = torch.zeros((), dtype=torch.float64)
    for params in sample_networks(model, radius, 12, corners, gen):
        out = functional_call(model, params, (sample_inputs(x_cl, eps, gen),))
        assert (out >= b.lower - 1e-9).all() and (out <= b.upper + 1e-9).all()
        widest = torch.maximum(widest, (out - b.center).abs().max())
    assert widest > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_same_bounds_as_contiguous(kind, batch):
    x, y = batch
    torch.manual_seed(0)
    model = CNN4()
    model_cl, x_cl = to_cl(model, x)
    radius = RadiusConfig(kind, lam=0.01)
    ref, got = interval_bounds(model, x, 2 / 255, radius), interval_bounds(model_cl, x_cl, 2 / 255, radius)
    # Default-initialised nets have bounds ~1e3 wide: compare relative to their size.
    width = (ref.upper - ref.lower).abs().max()
    assert width > 1.0
    torch.testing.assert_close(got.lower, ref.lower, rtol=1e-5, atol=1e-5 * width.item())
    torch.testing.assert_close(got.upper, ref.upper, rtol=1e-5, atol=1e-5 * width.item())
    margins = margin_lower_bounds(model, x, y, 2 / 255, radius)
    torch.testing.assert_close(
        margin_lower_bounds(model_cl, x_cl, y, 2 / 255, radius), margins, rtol=1e-5, atol=1e-5 * width.item()
    )


def worst_case_grads(model, x, y, kind, margin):
    """Returns (loss, gradients) of the worst-case loss for the contiguous model and a channels_last copy."""
    model_cl, x_cl = to_cl(model, x)
    radius = RadiusConfig(kind, lam=0.01)
    out = []
    for net, inp in ((model, x), (model_cl, x_cl)):
        loss = worst_case_loss(net, inp, y, 2 / 255, radius, margin=margin)
        out.append((loss.detach(), torch.autograd.grad(loss, list(net.parameters()))))
    return out


def scaled_cnn4(seed: int, dtype: torch.dtype) -> torch.nn.Module:
    """A CNN4 with weights scaled like a trained net's, so that the worst-case loss is finite."""
    torch.manual_seed(seed)
    model = CNN4().to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.3)
    return model


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("margin", [False, True], ids=["logits", "margin"])
def test_same_worst_case_loss_and_gradients_as_contiguous(kind, margin, batch):
    """float64: the two layouts agree to rounding, gradients included."""
    x, y = batch
    (loss, grads), (loss_cl, grads_cl) = worst_case_grads(scaled_cnn4(1, torch.float64), x.double(), y, kind, margin)
    assert loss > 0
    torch.testing.assert_close(loss_cl, loss, rtol=1e-12, atol=0)
    for g_cl, g in zip(grads_cl, grads):
        assert g.abs().max() > 0
        torch.testing.assert_close(g_cl, g, rtol=1e-9, atol=1e-12 * g.abs().max().item())


@pytest.mark.parametrize("kind", KINDS)
def test_float32_gradients_agree_up_to_kinks(kind, batch):
    """float32 (oneDNN's kernels): the loss agrees to rounding, gradients to 1 % in norm.

    The loss is piecewise smooth: where two inputs of a max-pool window (or c ± r at a
    ReLU) are within rounding of each other, the other summation order of the
    channels_last convolutions can route that element's gradient to its neighbour.
    Measured: one such flip in ~50k windows moves a conv weight gradient by ~2e-3 of
    its largest entry; a layout error would move it by its whole size.
    """
    x, y = batch
    (loss, grads), (loss_cl, grads_cl) = worst_case_grads(scaled_cnn4(1, torch.float32), x, y, kind, False)
    torch.testing.assert_close(loss_cl, loss, rtol=1e-5, atol=0)
    for g_cl, g in zip(grads_cl, grads):
        assert (g_cl - g).norm() <= 1e-2 * g.norm()


def test_cpu_training_uses_channels_last_unless_julia():
    model, on = prepare_model(RunConfig(), torch.device("cpu"))
    assert on and model.layers[1].weight.is_contiguous(memory_format=CL)
    model, on = prepare_model(RunConfig().replace(train={"channels_last": False}), torch.device("cpu"))
    assert not on and model.layers[1].weight.is_contiguous()
    model, on = prepare_model(RunConfig().replace(train={"engine": "julia"}), torch.device("cpu"))
    assert not on and model.layers[1].weight.is_contiguous()
