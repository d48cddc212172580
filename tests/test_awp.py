"""AWP and PGD-AT strategies: the weight perturbation's size, its removal, and the step it takes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from approp.config import RunConfig
from approp.models import CNN4
from approp.train import STRATEGIES, StepContext, fit, make_strategy
from approp.train.adversarial import AWP, PGDTraining, add_into, awp_perturbation, perturbed_weights


def _batch(seed: int = 0, b: int = 16):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 32, 32, generator=g), torch.randint(0, 10, (b,), generator=g)


def _ctx(cfg: RunConfig, eps: float) -> StepContext:
    values = {
        "eps": eps,
        "lam": cfg.radius.lam,
        "kappa": cfg.train.kappa,
        "radius": cfg.radius,
        "train": cfg.train,
        "ramp": 1.0,
    }
    return StepContext(**{f.name: values[f.name] for f in dataclasses.fields(StepContext)})


def test_strategies_are_registered():
    for algo, cls in (("awp", AWP), ("pgd", PGDTraining)):
        cfg = RunConfig().replace(train={"algo": algo, "awp_gamma": 0.02})
        assert isinstance(make_strategy(cfg), cls) and algo in STRATEGIES
    assert make_strategy(RunConfig().replace(train={"algo": "awp", "awp_gamma": 0.02})).gamma == 0.02


@pytest.mark.parametrize("gamma", [0.005, 0.01, 0.05])
def test_awp_perturbation_has_the_prescribed_layer_norms(gamma):
    torch.manual_seed(0)
    model = CNN4()
    x, y = _batch()
    diff = awp_perturbation(model, x, y, gamma)
    names = {n for n, _ in perturbed_weights(model)}
    assert set(diff) == names and len(names) == 6  # 4 conv + 2 linear weights, no biases
    params = dict(model.named_parameters())
    for name, v in diff.items():
        assert v.norm().item() == pytest.approx(gamma * params[name].norm().item(), rel=1e-5)
    # Direction: the normalised gradient of the loss, layer by layer.
    loss = F.cross_entropy(model(x), y)
    grads = dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names])))
    for name, v in diff.items():
        g, v = grads[name].double(), v.double()
        cos = (v * g).sum() / (v.norm() * g.norm())
        assert cos.item() == pytest.approx(1.0, abs=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_awp_loss_is_taken_on_the_perturbed_model_and_restored():
    torch.manual_seed(0)
    model = CNN4()
    cfg = RunConfig().replace(train={"algo": "awp", "awp_gamma": 0.01})
    x, y = _batch(1)
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    awp = make_strategy(cfg)
    loss, logs = awp.loss(model, x, y, _ctx(cfg, 0.0))  # ε = 0: x_adv = x, no randomness
    for name, p in model.named_parameters():  # perturbed by exactly v during the step
        expected = theta[name] + awp.diff[name] if name in awp.diff else theta[name]
        assert torch.allclose(p, expected, atol=1e-7)
    assert logs["adv_loss"] > F.cross_entropy(torch.func.functional_call(model, theta, (x,)), y)
    lr = 0.1
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    opt.zero_grad()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}  # gradient at θ + v
    opt.step()
    awp.after_step(model)
    assert awp.diff is None
    for name, p in model.named_parameters():
        assert torch.allclose(p, theta[name] - lr * grads[name], atol=1e-6), name
    # The gradient at θ + v is not the one at θ: the step really used the perturbed model.
    leaves = {n: t.clone().requires_grad_(True) for n, t in theta.items()}
    loss_at_theta = F.cross_entropy(torch.func.functional_call(model, leaves, (x,)), y)
    g_theta = torch.autograd.grad(loss_at_theta, leaves["layers.1.weight"])[0]
    assert not torch.allclose(g_theta, grads["layers.1.weight"], atol=1e-6)


def test_awp_restore_without_a_step_is_exact():
    torch.manual_seed(1)
    model = CNN4()
    cfg = RunConfig().replace(train={"algo": "awp", "awp_gamma": 0.01, "pgd_steps": 2})
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    awp = make_strategy(cfg)
    x, y = _batch(2)
    awp.loss(model, x, y, _ctx(cfg, 2 / 255))
    moved = max((p - theta[n]).abs().max().item() for n, p in model.named_parameters())
    assert moved > 1e-4
    awp.after_step(model)
    for name, p in model.named_parameters():
        assert torch.allclose(p, theta[name], atol=1e-7), name


def test_add_into_is_linear():
    model = CNN4()
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    diff = {"layers.1.weight": torch.ones_like(theta["layers.1.weight"])}
    add_into(model, diff, 0.5)
    assert torch.allclose(model.layers[1].weight, theta["layers.1.weight"] + 0.5)
    assert torch.equal(model.layers[1].bias, theta["layers.1.bias"])


def test_pgd_training_loss_exceeds_clean_loss():
    torch.manual_seed(0)
    model = CNN4()
    cfg = RunConfig().replace(train={"algo": "pgd", "pgd_steps": 5})
    x, y = _batch(3)
    model.train()
    loss, _ = PGDTraining().loss(model, x, y, _ctx(cfg, 8 / 255))
    assert model.training  # the attack ran in eval mode and gave the mode back
    assert loss.item() > F.cross_entropy(model(x), y).item() + 0.01


@pytest.mark.parametrize("algo", ["awp", "pgd"])
def test_fit_runs_with_adversarial_strategies(cifar_dir, tmp_path, algo):
    cfg = RunConfig().replace(
        data={"data_dir": str(cifar_dir), "subset": 256, "test_subset": 64, "batch_size": 64},
        train={"algo": algo, "epochs": 1, "warmup_epochs": 0, "ramp_epochs": 0, "pgd_steps": 2},
    )
    result = fit(cfg, tmp_path / algo, progress=False)
    row = result.history[-1]
    assert row["adv_loss"] > 0 and row["loss"] == pytest.approx(row["adv_loss"])
    assert (tmp_path / algo / "checkpoint.json").is_file()
