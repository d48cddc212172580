"""`approp certify` and `approp bounds` on residual networks: a module of someone else's class, a state dict + --arch.

ForeignResNet (tests/foreign_resnet.py: torch only, no approp import, a residual addition and
BatchNorm) is saved with torch.save and read back by the commands. Soundness is checked by
sampling: a point certified at λ keeps its prediction for networks drawn uniformly in the box
[θ − λ|θ|, θ + λ|θ|] and at its corners, and the interval bounds the commands report hold every
sampled network's logits on inputs sampled in the ball.
"""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from approp.attacks.parameter import relative_box
from approp.bound_summary import bound_summary
from approp.bounds import interval_bounds
from approp.bounds.rules import UnsupportedLayerError
from approp.boxes import batched_logits, sample_in_box, stacked_uniform, uniform_inputs
from approp.certify.run import CertifyConfig, certify_source
from approp.certify.sources import load_source, parse_arch
from approp.checkpoint import CheckpointError
from approp.cli import app
from approp.config import RadiusConfig
from approp.data import Split, load_cifar10, to_float
from approp.models import build_model
from foreign_resnet import ForeignResNet  # tests/: torch only

LAMS = (1e-4, 1e-3, 1e-2)


def foreign_model(seed: int = 0) -> nn.Module:
    """Returns a ForeignResNet in eval mode whose BatchNorm running statistics are not the defaults."""
    torch.manual_seed(seed)
    model = ForeignResNet().train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(32, 3, 8, 8))
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Returns (folder, model): foreign.pt (torch.save of the whole module) and points.pt (x (40, 3, 8, 8), y)."""
    folder = tmp_path_factory.mktemp("foreign")
    model = foreign_model()
    torch.save(model, folder / "foreign.pt")
    x = torch.rand(40, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::5] = (y[::5] + 1) % 10  # some points wrong: certify must count them out
    torch.save((x, y), folder / "points.pt")
    return folder, model


def _misclassified_in_box(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """Returns a bool mask (B,): True where some network drawn in the relative box (uniform or corner) errs."""
    box = relative_box(dict(model.named_parameters()), lam)
    gen = torch.Generator().manual_seed(0)
    params = stacked_uniform(box, 64, gen)
    corners = [sample_in_box(box, "corner", gen) for _ in range(64)]
    params = {n: torch.cat([params[n], torch.stack([c[n] for c in corners])]) for n in params}
    with torch.no_grad():
        logits = batched_logits(model, params, x.expand(128, *x.shape))  # (128, B, 10)
    return (logits.argmax(2) != y).any(0)


def test_certify_reads_a_foreign_residual_module_and_its_certificates_hold_in_the_box(saved):
    folder, model = saved
    x, y = torch.load(folder / "points.pt")
    res = CliRunner().invoke(
        app,
        ["certify", str(folder / "foreign.pt"), "--data", str(folder / "points.pt"), "--n", "40"]
        + ["--lam", ",".join(map(str, LAMS)), "--quant", "int8", "--out", str(folder / "out")],
    )
    assert res.exit_code == 0, res.output
    result = json.loads((folder / "out" / "certify.json").read_text())
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    assert result["correct"] == int(correct.sum()) == 32
    certified = [row["certified"] for row in result["curve"]]
    assert certified[0] > 0 and certified == sorted(certified, reverse=True)
    lam_star = torch.tensor(result["radius"]["lam_star"])
    assert not bool((lam_star[~correct] > 0).any())  # a wrong point is certified at no λ
    for lam, count in zip(LAMS, certified, strict=True):
        held = lam_star >= lam
        assert int(held.sum()) <= count  # λ* is the largest certified λ of a grid: a lower bound
        assert not bool((_misclassified_in_box(model, x, y, lam) & held).any())
    assert result["quant"][0]["violations"] == 0


def test_bounds_of_a_foreign_residual_module_contain_sampled_outputs(saved):
    folder, _ = saved
    model, _ = load_source(folder / "foreign.pt")  # what `approp bounds FILE` bounds
    x, _ = torch.load(folder / "points.pt")
    x = x[:8]
    eps, lam = 0.01, 0.01
    b = interval_bounds(model, x, eps, RadiusConfig(kind="abs", lam=lam), lam)  # (8, 10)
    box = relative_box(dict(model.named_parameters()), lam)
    gen = torch.Generator().manual_seed(2)
    params = stacked_uniform(box, 64, gen)
    corners = [sample_in_box(box, "corner", gen) for _ in range(64)]
    params = {n: torch.cat([params[n], torch.stack([c[n] for c in corners])]) for n in params}
    with torch.no_grad():
        z = batched_logits(model, params, uniform_inputs(x, eps, 128, gen))  # (128, 8, 10)
    tol = 1e-5 * (1 + z.abs())
    assert bool((z >= b.lower - tol).all()) and bool((z <= b.upper + tol).all())
    with torch.no_grad():  # ε = λ = 0: the plain forward pass
        zero = interval_bounds(model, x, 0.0, RadiusConfig(kind="abs", lam=0.0), 0.0)
        torch.testing.assert_close(zero.center, model(x), atol=1e-5, rtol=1e-5)
    assert float(zero.radius.max()) < 1e-5


def test_bounds_command_on_a_model_file_and_a_state_dict(saved, cifar_dir, tmp_path):
    folder, model = saved
    test = Split(*load_cifar10(str(cifar_dir), train=False)).take(16)
    args = ["--n", "16", "--lam", "0.001", "--eps", "0.001", "--method", "best", "--data-dir", str(cifar_dir)]
    res = CliRunner().invoke(app, ["bounds", str(folder / "foreign.pt"), *args])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    with torch.no_grad():  # ForeignResNet pools adaptively: CIFAR's 32 × 32 images fit it too
        assert summary["clean_acc"] == (model(to_float(test.x)).argmax(1) == test.y).float().mean().item()
        width = interval_bounds(model, to_float(test.x), 0.001, RadiusConfig(kind="abs", lam=0.001), 0.001)
    assert summary["radius"] == "abs" and summary["verified_acc"] <= summary["clean_acc"]
    assert summary["mean_bound_width"] == pytest.approx(float(width.radius.mul(2).mean()), rel=1e-5)
    # A resnet20 state dict with --arch: the same numbers as the module it was saved from.
    net = build_model(parse_arch("resnet20")).eval()
    save_file(net.state_dict(), str(tmp_path / "r20.safetensors"))
    torch.save(net, tmp_path / "r20.pt")
    got = [
        bound_summary(path, lam=1e-4, n=16, data_dir=str(cifar_dir), method="best", arch=arch)
        for path, arch in ((tmp_path / "r20.safetensors", "resnet20"), (tmp_path / "r20.pt", None))
    ]
    assert got[0] == got[1] and got[0]["n"] == 16
    with pytest.raises(Exception, match="--lam"):
        bound_summary(tmp_path / "r20.pt", n=4, data_dir=str(cifar_dir))


def test_state_dict_with_arch_is_certified(tmp_path):
    net = build_model(parse_arch("preact_resnet18")).eval()
    save_file(net.state_dict(), str(tmp_path / "pr18.safetensors"))
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = net(x).argmax(1)
    torch.save((x, y), tmp_path / "points.pt")
    cfg = CertifyConfig(lams=(1e-6, 1e-2), radius=False)
    res = certify_source(tmp_path / "pr18.safetensors", cfg, n=3, data=tmp_path / "points.pt", arch="preact_resnet18")
    assert res["correct"] == 3 and res["curve"][0]["certified"] >= res["curve"][1]["certified"]
    with pytest.raises(Exception, match="--arch"):
        load_source(tmp_path / "pr18.safetensors")
    with pytest.raises(Exception, match="does not fit cnn4"):
        load_source(tmp_path / "pr18.safetensors", arch="cnn4")


class Softsign(nn.Module):
    """A residual block whose activation has no bound rule (x / (1 + |x|))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.softsign(self.conv(x)) + x
        return self.fc(h.flatten(1))


class NoHead(nn.Module):
    """A residual module returning ReLU features: supported nodes, but no final Linear to form margins at."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x.flatten(1))  # (B, 10)
        return torch.relu(h + h)


@pytest.mark.parametrize(("module", "match"), [(Softsign, "softsign"), (NoHead, "final nn.Linear")])
def test_unsupported_module_is_refused_by_name_before_any_data(tmp_path, module, match):
    path = tmp_path / "model.pt"
    torch.save(module(), path)
    with pytest.raises(UnsupportedLayerError, match=match):
        load_source(path)
    missing = tmp_path / "no-points.pt"  # never read: the refusal comes first
    for command in (["certify", str(path), "--data", str(missing)], ["bounds", str(path), "--lam", "0.01"]):
        res = CliRunner().invoke(app, [*command, "--data-dir", str(tmp_path / "no-data")])
        assert res.exit_code == 1 and match.split()[0] in res.output and "no-points" not in res.output
        assert "no-data" not in res.output


def test_a_class_that_cannot_be_imported_is_named_with_what_torch_load_needs(tmp_path, monkeypatch):
    # A class defined in a module that is gone when the file is read (a user's script not on the path).
    script = types.ModuleType("users_script")
    exec("from torch import nn\nclass Net(nn.Sequential):\n    pass\n", script.__dict__)
    monkeypatch.setitem(sys.modules, "users_script", script)
    torch.save(script.Net(nn.Flatten(), nn.Linear(12, 10)), tmp_path / "model.pt")
    monkeypatch.delitem(sys.modules, "users_script")
    with pytest.raises(CheckpointError, match="users_script.*PYTHONPATH"):
        load_source(tmp_path / "model.pt")


def test_every_evaluate_stage_and_bounds_on_a_resnet20_run(tmp_path, cifar_dir):
    run = tmp_path / "r20"
    common = ["--data-dir", str(cifar_dir)]
    train = ["train", "--out", str(run), "--set", "model.arch=resnet20", "--subset", "64", "--test-subset", "16"]
    res = CliRunner().invoke(app, [*train, "--epochs", "1", "--eps", "0.002", "--lam", "0.001", "--quiet", *common])
    assert res.exit_code == 0, res.output
    stages = ["--n", "8", "--no-autoattack", "--neighbourhood", "2", "--param-attack", "0.01", "--statistical", "16"]
    stages += ["--certify", "0.0001,0.001", "--quant", "int8", "--quiet"]
    res = CliRunner().invoke(app, ["evaluate", str(run), *stages, *common])
    assert res.exit_code == 0, res.output
    result = json.loads((run / "eval.json").read_text())
    assert json.loads((run / "checkpoint.json").read_text())["model"]["arch"] == "resnet20"
    assert result["verified_acc"] <= result["verified_acc_best"] <= result["clean_acc"]
    assert result["pgd_acc"] <= result["clean_acc"]
    attack = result["param_attack"][0]
    assert attack["acc_after"] <= attack["acc_before"] == result["clean_acc"]
    assert set(result["neighbourhood"]["summary"]) == {"uniform", "corner"}
    stat = result["statistical"]["summary"]
    assert stat["certified"] + stat["refuted"] + stat["undecided"] == pytest.approx(1.0)
    curve = [row["certified"] for row in result["certify"]["curve"]]
    assert curve == sorted(curve, reverse=True) and curve[0] <= result["certify"]["correct"]
    # `approp bounds RUN` decides the same points as the evaluation's interval stage (the run's ε and λ).
    res = CliRunner().invoke(app, ["bounds", str(run), "--n", "8", *common])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert (summary["eps"], summary["lam"], summary["radius"]) == (0.002, 0.001, "tanh")
    assert summary["verified_acc"] == result["verified_acc"] and summary["clean_acc"] == result["clean_acc"]
    res = CliRunner().invoke(
        app,
        ["landscape", str(run), "--out", str(tmp_path / "l.png"), "--n", "8", "--points", "3"]
        + ["--grid", "3", "--directions", "2", "--quiet", *common],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "l.png").is_file()
