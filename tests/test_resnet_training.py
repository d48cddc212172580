"""Training residual networks: resnet20 with every algorithm through `fit`, on a fixed batch, in bf16;
preact_resnet18 with APP. Resume is in test_train, DDP in test_distributed, the Julia refusal in
test_julia_refusals (each beside its CNN4 case)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import load_file
from test_precision import ConvSpy, make_step, synthetic_batch
from torch import nn

from approp.bounds import RULES
from approp.checkpoint import load_model
from approp.config import RunConfig
from approp.models import PreActResNet18, ResNet20
from approp.precision import training_autocast
from approp.train import fit
from approp.train.adversarial import awp_perturbation, perturbed_weights
from approp.train.loop import _optimiser_step
from approp.train.strategies import step_context

ALGOS = ["standard", "pgd", "awp", "app"]
# BatchNorm running-statistics updates per optimiser step: one for every algorithm. PGD attacks in
# eval mode and the bounds never update them; AWP's perturbation gradient runs the train-mode network
# once more but restores them (AWP's own code runs that pass on a proxy copy it throws away).
BN_UPDATES = {"standard": 1, "pgd": 1, "awp": 1, "app": 1}


def resnet_cfg(cifar_dir, algo: str, arch: str = "resnet20", **train) -> RunConfig:
    """Returns a one-epoch run of `arch` on 64 training images in batches of 32 (APP from Shi's IBP init)."""
    return RunConfig().replace(
        model={"arch": arch, "init": "ibp" if algo == "app" else "default"},
        data={"data_dir": str(cifar_dir), "subset": 64, "test_subset": 32, "batch_size": 32, "augment": True},
        optim={"name": "adam", "lr": 1e-3},
        radius={"kind": "tanh", "lam": 0.01},
        train={"algo": algo, "epochs": 1, "eps": 0.001, "warmup_epochs": 0, "ramp_epochs": 1, "pgd_steps": 2, **train},
    )


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("algo", ALGOS)
def test_each_algorithm_trains_resnet20_into_a_run_directory(cifar_dir, tmp_path, algo):
    cfg = resnet_cfg(cifar_dir, algo)
    result = fit(cfg, tmp_path, progress=False)
    row = result.history[0]
    assert all(math.isfinite(row[k]) for k in ("loss", "grad_norm", "clean_acc", "verified_acc")), row
    if algo == "app":  # the bounds hold the clean logits, so the worst case is never below the clean loss
        assert row["worst_loss"] >= row["clean_loss"] > 0
    # Run directory: resolved config, one metrics line, the checkpoint (weights and BatchNorm buffers), report.
    assert RunConfig.load(tmp_path / "config.toml") == cfg
    assert [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0]
    assert "clean accuracy" in (tmp_path / "report.md").read_text()
    model, meta = load_model(tmp_path)
    assert isinstance(model, ResNet20) and (meta["algo"], meta["epoch"]) == (algo, 0)
    saved, trained = model.state_dict(), result.model.state_dict()
    assert saved.keys() == trained.keys()
    for name, value in saved.items():
        assert torch.equal(value, trained[name]), name
    steps = cfg.data.subset // cfg.data.batch_size
    for bn in batchnorms(model):  # the running statistics trained, and as often as the algorithm runs BN
        assert bn.num_batches_tracked.item() == steps * BN_UPDATES[algo]
        assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))


@pytest.mark.parametrize("algo", ALGOS)
def test_each_algorithm_lowers_its_loss_on_a_fixed_batch(algo):
    """Five of the loop's own steps on one batch of 16: the loss falls (APP's worst case by orders of
    magnitude: at init the interval widths grow about tenfold through each conv-BatchNorm pair)."""
    step = make_step(algo, "fp32", arch="resnet20", init="ibp" if algo == "app" else "default", eps=0.001)
    x, y = synthetic_batch()
    ctx = step_context(step.cfg, 1.0)
    losses, worst_over_clean = [], []
    for _ in range(5):
        bad, logs = _optimiser_step(step, x, y, ctx, check=True)
        assert bad is None
        losses.append(logs["loss"].item())
        if algo == "app":
            worst_over_clean.append(logs["worst_loss"].item() >= logs["clean_loss"].item())
    assert all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < 0.7 * losses[0], losses
    if algo == "app":
        assert all(worst_over_clean) and all(b < a for a, b in zip(losses, losses[1:])), losses


@pytest.mark.parametrize("algo", ALGOS)
def test_bf16_step_on_resnet20_is_the_fp32_one_up_to_rounding(algo):
    """Same weights, same batch: the bf16 loss (forward, BatchNorm with the clean batch's statistics,
    bounds, attack) is the fp32 one to 2 %; one bf16 optimiser step stays finite and keeps fp32
    parameters and BatchNorm buffers."""
    x, y = synthetic_batch(8)
    losses = {}
    for precision in ("fp32", "bf16"):
        step = make_step(algo, precision, arch="resnet20", eps=0.001)  # seeds 0: PGD starts alike
        ctx = step_context(step.cfg, 1.0)
        with training_autocast(precision, "cpu"):
            loss, _ = step.step_fn(x, y, ctx)
        step.strategy.after_step(step.model)  # AWP restores its weights
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        losses[precision] = loss.item()
        assert _optimiser_step(step, x, y, ctx, check=True)[0] is None
        for t in (*step.model.parameters(), *step.model.buffers()):
            assert t.dtype in (torch.float32, torch.int64) and torch.isfinite(t.float()).all()
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)


def test_bf16_run_trains_resnet20_in_bf16_and_verifies_in_fp32(cifar_dir, tmp_path, monkeypatch):
    spy = ConvSpy()
    monkeypatch.setitem(RULES, nn.Conv2d, spy)
    cfg = resnet_cfg(cifar_dir, "app", precision="bf16", ramp_epochs=0)
    result = fit(cfg, tmp_path, progress=False)
    assert all(math.isfinite(result.history[0][k]) for k in ("loss", "worst_loss", "clean_loss"))
    # Training: 2 batches × 21 convolutions in bf16; the epoch's verified accuracy (32 points): 21 in fp32.
    convs = sum(isinstance(m, nn.Conv2d) for m in result.model.modules())
    assert [d for d, _ in spy.dtypes] == [torch.bfloat16] * 2 * convs + [torch.float32] * convs
    # The checkpoint holds fp32 weights and BatchNorm statistics, and records the precision it trained in.
    weights = load_file(str(tmp_path / "model.safetensors"))
    assert {t.dtype for n, t in weights.items() if not n.endswith("num_batches_tracked")} == {torch.float32}
    assert json.loads((tmp_path / "checkpoint.json").read_text())["precision"] == "bf16"


def test_awp_in_bf16_steps_on_the_perturbed_weights():
    """The perturbed forward must not reuse autocast's bf16 copies of the unperturbed weights (cached by
    the perturbation's own pass): it did, and bf16 AWP trained as PGD-AT. With ε = 0 (no attack) the
    step's loss is the perturbed network's loss, computed afresh."""
    x, y = synthetic_batch(8)
    for arch in ("cnn4", "resnet20"):
        step = make_step("awp", "bf16", arch=arch)
        ctx = dataclasses.replace(step_context(step.cfg, 1.0), eps=0.0)
        with training_autocast("bf16", "cpu"):
            loss, _ = step.step_fn(x, y, ctx)
        with torch.no_grad(), training_autocast("bf16", "cpu"):
            perturbed = nn.functional.cross_entropy(step.model(x).float(), y)
        step.strategy.after_step(step.model)
        with torch.no_grad(), training_autocast("bf16", "cpu"):
            plain = nn.functional.cross_entropy(step.model(x).float(), y)
        assert loss.item() == pytest.approx(perturbed.item(), rel=1e-3), arch
        assert abs(loss.item() - plain.item()) > 1e-3, arch  # the perturbation does move the loss


def test_awp_gradient_pass_keeps_the_running_statistics_and_uses_the_batchs():
    """AWP's perturbation gradient leaves every BatchNorm buffer bit for bit as it was (the reference
    takes it on a proxy it throws away), and is the gradient of the train-mode network, which
    normalises by the batch's statistics."""
    torch.manual_seed(0)
    model = ResNet20().train()
    x, y = synthetic_batch(8)
    before = {n: b.clone() for n, b in model.named_buffers()}
    diff = awp_perturbation(model, x, y, gamma=0.01)
    for name, value in model.named_buffers():
        assert torch.equal(value, before[name]), name
    loss = nn.functional.cross_entropy(model(x), y)  # the same pass, statistics now updated
    named = perturbed_weights(model)
    grads = torch.autograd.grad(loss, [p for _, p in named])
    for (name, p), g in zip(named, grads):
        expected = 0.01 * p.detach().norm() * g / g.norm()
        torch.testing.assert_close(diff[name], expected, rtol=1e-5, atol=1e-9)
    changed = [n for n, b in model.named_buffers() if n.endswith("running_mean") and not torch.equal(b, before[n])]
    assert changed  # the unguarded pass does update them: the check above can fail


def test_preact_resnet18_trains_with_app(cifar_dir, tmp_path):
    """The larger residual network, kept cheap: APP (tanh) on 16 images in batches of 8, one epoch."""
    cfg = resnet_cfg(cifar_dir, "app", arch="preact_resnet18").replace(
        data={"subset": 16, "test_subset": 8, "batch_size": 8, "eval_batch_size": 8}
    )
    result = fit(cfg, tmp_path, progress=False)
    row = result.history[0]
    assert math.isfinite(row["loss"]) and row["worst_loss"] >= row["clean_loss"] > 0
    model, meta = load_model(tmp_path)
    assert isinstance(model, PreActResNet18) and meta["epoch"] == 0
    for name, value in model.state_dict().items():
        assert torch.equal(value, result.model.state_dict()[name]), name
    for bn in batchnorms(model):
        assert bn.num_batches_tracked.item() == 2
