"""Cross-check of the Julia engine (APProp via juliacall) against the PyTorch engine.

Identical weights and inputs through both engines must give the same bounds,
worst-case loss, gradients (to 1e-5 relative), the same weights after one
SGD step and after several SGD or Adam steps, also across a resume (the
optimiser state out to numpy and back). Skipped, with the reason, where no Julia runtime is set up.
juliacall is imported before torch by conftest.py (`approp.julia.preload()`),
which pytest imports before this module.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from approp import julia
from approp.bounds import interval_bounds, margin_lower_bounds, verified, worst_case_loss
from approp.config import RadiusConfig
from approp.models import CNN4
from approp.radius import clamp_parameters

_OK, _REASON = julia.availability()
pytestmark = [
    pytest.mark.julia,
    pytest.mark.skipif(not _OK, reason=f"Julia engine unavailable: {_REASON.splitlines()[0] if _REASON else ''}"),
]

RTOL = 1e-5
RADII = [
    RadiusConfig("abs", lam=0.01),
    RadiusConfig("const", lam=1e-3, perturb_biases=False),
    RadiusConfig("tanh", lam=0.02, clamp=0.2),
]


@pytest.fixture(scope="module")
def engine():
    return julia.get_engine("cpu")


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    model = CNN4().double()
    x = torch.rand(6, 3, 32, 32, dtype=torch.float64)
    # Repeated labels, as in every real batch: the gradient of W[y, :] and b[y] must add up
    # the contributions of the samples that share a class.
    y = torch.tensor([0, 1, 1, 3, 8, 8])
    params = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return model, x, y, params


def _close(a, b, rtol=RTOL):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.abs(b).max(), 1e-12)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("radius", RADII, ids=lambda r: r.kind)
def test_bounds_agree(engine, case, radius):
    model, x, _, params = case
    ref = interval_bounds(model, x, 2 / 255, radius)
    lo, hi = engine.bounds(params, x.numpy(), 2 / 255, radius)
    _close(lo, ref.lower.detach().numpy())
    _close(hi, ref.upper.detach().numpy())


def test_float32_bounds_agree(engine, case):
    _, x, _, params = case
    model32 = CNN4()
    model32.load_state_dict({k: torch.from_numpy(v).float() for k, v in params.items()})
    radius = RADII[0]
    ref = interval_bounds(model32, x.float(), 0.01, radius)
    lo, hi = engine.bounds({k: v.astype(np.float32) for k, v in params.items()}, x.float().numpy(), 0.01, radius)
    _close(lo, ref.lower.detach().numpy(), rtol=1e-4)
    _close(hi, ref.upper.detach().numpy(), rtol=1e-4)


@pytest.mark.parametrize("margin", [False, True])
@pytest.mark.parametrize("radius", RADII, ids=lambda r: r.kind)
def test_worst_case_loss_and_margins_agree(engine, case, radius, margin):
    model, x, y, params = case
    ref = worst_case_loss(model, x, y, 0.01, radius, margin=margin).item()
    got = engine.worst_case_loss(params, x.numpy(), y.numpy(), 0.01, radius, margin=margin)
    assert got == pytest.approx(ref, rel=RTOL)
    ref_m = margin_lower_bounds(model, x, y, 0.01, radius).detach().numpy()
    _close(engine.margin_lower_bounds(params, x.numpy(), y.numpy(), 0.01, radius), ref_m)
    ref_v = verified(model, x, y, 0.0, radius, lam=0.0).numpy()
    assert np.array_equal(engine.verified(params, x.numpy(), y.numpy(), 0.0, radius, lam=0.0), ref_v)


def _torch_app_loss(model, x, y, eps, radius, kappa, margin=False):
    worst = worst_case_loss(model, x, y, eps, radius, margin=margin)
    return (1 - kappa) * worst + kappa * F.cross_entropy(model(x), y)


@pytest.mark.parametrize("margin", [False, True])
@pytest.mark.parametrize("radius", RADII, ids=lambda r: r.kind)
def test_gradients_agree(engine, case, radius, margin):
    model, x, y, params = case
    model.zero_grad()
    loss = _torch_app_loss(model, x, y, 0.01, radius, kappa=0.3, margin=margin)
    loss.backward()
    got_loss, grads = engine.loss_and_gradients(params, x.numpy(), y.numpy(), 0.01, radius, 0.3, margin=margin)
    assert got_loss == pytest.approx(loss.item(), rel=RTOL)
    for name, p in model.named_parameters():
        _close(grads[name], p.grad.numpy())


@pytest.mark.parametrize("radius", RADII, ids=lambda r: r.kind)
def test_one_app_step_agrees(engine, case, radius):
    _, x, y, params = case
    model = CNN4().double()
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()})
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    _torch_app_loss(model, x, y, 0.01, radius, kappa=0.5).backward()
    opt.step()
    if radius.clamp is not None:
        clamp_parameters(model, radius.clamp)
    new = engine.app_step(
        params,
        x.numpy(),
        y.numpy(),
        0.01,
        radius,
        kappa=0.5,
        lr=0.05,
        momentum=0.9,
        weight_decay=5e-4,
    )
    for name, p in model.state_dict().items():
        _close(new[name], p.numpy())


def test_trainer_keeps_momentum_like_torch(engine, case):
    _, x, y, params = case
    radius = RADII[0]
    model = CNN4().double()
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()})
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    trainer = engine.trainer(params, radius, lr=0.05, momentum=0.9, kappa=0.5)
    for lr in (0.05, 0.02):
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        _torch_app_loss(model, x, y, 0.01, radius, kappa=0.5).backward()
        opt.step()
        trainer.step(x.numpy(), y.numpy(), 0.01, lr=lr)
    for name, p in model.state_dict().items():
        _close(trainer.params()[name], p.numpy())


def _torch_steps(params, x, y, radius, lrs, optimizer="adam", weight_decay=5e-4):
    """Returns (model, opt) after one PyTorch APP step (SGD with momentum 0.9, or Adam) per learning rate in `lrs`."""
    model = CNN4().double()
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()})
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lrs[0], momentum=0.9, weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lrs[0], weight_decay=weight_decay)
    for lr in lrs:
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        _torch_app_loss(model, x, y, 0.01, radius, kappa=0.5).backward()
        opt.step()
    return model, opt


ADAM_LRS = (1e-3, 1e-3, 5e-4, 2e-4)  # a scheduled learning rate, as the loop sets it per step


def test_adam_over_several_steps_agrees(engine, case):
    # TorchAdam computes PyTorch's bias corrections 1 - βᵗ in Float64 from the step count,
    # so what remains is rounding (PyTorch updates m by lerp): far below RTOL per step, in
    # float64 as here. Optimisers.Adam would differ: it keeps β in the parameters' eltype and
    # builds βᵗ by repeated products, about 1e-5 relative per step in Float32.
    _, x, y, params = case
    radius = RadiusConfig("tanh", lam=0.02)  # no clamp: Adam's steps are what is compared
    model, opt = _torch_steps(params, x, y, radius, ADAM_LRS)
    trainer = engine.trainer(params, radius, optimizer="adam", lr=ADAM_LRS[0], weight_decay=5e-4, kappa=0.5)
    for lr in ADAM_LRS:
        trainer.step(x.numpy(), y.numpy(), 0.01, lr=lr)
    got = trainer.params()
    for name, p in model.state_dict().items():
        _close(got[name], p.numpy())
    step, state = trainer.optimizer_state()
    assert step == len(ADAM_LRS)
    for name, p in model.named_parameters():
        _close(state["exp_avg"][name], opt.state[p]["exp_avg"].numpy())
        _close(state["exp_avg_sq"][name], opt.state[p]["exp_avg_sq"].numpy())


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resumed_trainer_continues_like_torch(engine, case, optimizer):
    # Two steps, the state out to numpy and into a new trainer (what a resumed run does),
    # two more: the same weights as four uninterrupted PyTorch steps.
    _, x, y, params = case
    radius = RADII[0]
    lrs = (0.01, 0.01, 0.005, 0.002) if optimizer == "sgd" else ADAM_LRS
    model, _ = _torch_steps(params, x, y, radius, lrs, optimizer)
    kw = dict(optimizer=optimizer, lr=lrs[0], momentum=0.9, weight_decay=5e-4, kappa=0.5)
    first = engine.trainer(params, radius, **kw)
    for lr in lrs[:2]:
        first.step(x.numpy(), y.numpy(), 0.01, lr=lr)
    step, state = first.optimizer_state()
    resumed = engine.trainer(first.params(), radius, **kw)
    resumed.load_optimizer_state(step, state)
    for lr in lrs[2:]:
        resumed.step(x.numpy(), y.numpy(), 0.01, lr=lr)
    for name, p in model.state_dict().items():
        _close(resumed.params()[name], p.numpy())
