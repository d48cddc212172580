"""Certified parameter robustness: λ* is sound and found by a monotone bisection, the quantisation box holds
PyTorch's really quantised weights, no certified point changes under real quantisation, and a model with an
unsupported layer is refused by that layer's name before any work."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from approp.attacks.joint import joint_attack_margins
from approp.attacks.parameter import relative_box
from approp.bounds.rules import UnsupportedLayerError
from approp.certify.parameter import RadiusGrid, certified_curve, certified_radius
from approp.certify.quantise import QuantSpec, predictions, quant_certificate, quantise_weight, quantised_model
from approp.certify.run import CertifyConfig, certify_source
from approp.certify.sources import load_source
from approp.cli import app
from approp.config import ConfigError, RadiusConfig, RunConfig
from approp.data import to_float
from approp.radius import radius_of
from mlp import train_mlp

pytest_plugins = ["trained"]  # the session's trained model and its fixtures

SPECS = [
    QuantSpec(8, True),
    QuantSpec(4, True),
    QuantSpec(8, False),
    QuantSpec(4, False),
    QuantSpec(8, True, restricted=False),
    QuantSpec(4, False, restricted=False),
]
GRID = RadiusGrid(1e-5, 0.2, 24)


@pytest.fixture(scope="module")
def points(eval_points):
    return to_float(eval_points.x[:48]), eval_points.y[:48]


@pytest.fixture(scope="module")
def trained_mlp(cifar_dir):
    """Returns the shared briefly trained MLP (tests/trained.py): int8 certifies many of its points."""
    return train_mlp(cifar_dir)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_quantisation_box_contains_the_real_quantised_weights(trained_model, spec):
    for name, w in trained_model.named_parameters():
        r = radius_of(w.detach(), spec.radius())
        if w.dim() < 2:  # weight-only: biases stay float, radius 0
            assert bool((r == 0).all())
            continue
        err = (w.detach() - quantise_weight(w, spec)).abs()
        assert bool((err <= r).all()), f"{name}: rounding error {err.max():.3g} above its radius"
        # The box is tight: its half-width is the rounding step's half, which some weight nearly reaches.
        assert err.max().item() >= 0.3 * r.max().item()


@pytest.mark.parametrize("bits", [8, 4])
def test_certified_points_keep_their_prediction_under_real_quantisation(trained_model, trained_mlp, points, bits):
    x, y = points
    for model in (trained_model, trained_mlp):
        for per_channel, restricted in ((True, True), (False, True), (True, False)):
            res = quant_certificate(model, x, y, QuantSpec(bits, per_channel, restricted))
            assert res["violations"] == 0  # must never fail
            assert res["certified_unchanged"] <= res["kept"]
            assert res["certified_correct"] <= min(res["certified_unchanged"], res["float_correct"])
    # On the small MLP the certificate is not vacuous (int8: 12 of 48 points), int4 certifies fewer.
    res8 = quant_certificate(trained_mlp, x, y, QuantSpec(8, True))
    res4 = quant_certificate(trained_mlp, x, y, QuantSpec(4, True))
    assert res8["certified_unchanged"] >= len(x) // 8
    assert res4["certified_unchanged"] <= res8["certified_unchanged"]


def test_quantised_model_is_pytorchs(trained_mlp):
    """The real quantised weights take at most 2^bits values per output channel, as PyTorch's grid does."""
    q = quantised_model(trained_mlp, QuantSpec(4, True, restricted=False))
    w = q[1].weight.detach()
    assert max(len(row.unique()) for row in w) <= 16
    assert not torch.equal(w, trained_mlp[1].weight.detach())


def test_the_two_grids_are_named_and_distinct(trained_mlp):
    """int8 is the deployment grid (per channel, integers in [−127, 127], s = max/127: each channel's largest
    weight lands exactly on ±127); int8:torch PyTorch's observer grid (s = max/127.5); the old box is torch's."""
    assert QuantSpec.parse("int8") == QuantSpec(8, True, True) and QuantSpec.parse("int8").name == "int8"
    assert QuantSpec.parse("int4:torch:tensor").name == "int4:tensor:torch"
    for bad in ("int8:torch:deploy", "int8:channel:tensor", "int9", "int8:tensor:tensor"):
        with pytest.raises(ConfigError):
            QuantSpec.parse(bad)
    w = trained_mlp[1].weight.detach()  # (32, 3072)
    amax = w.abs().amax(1, keepdim=True)
    deploy = quantise_weight(w, QuantSpec.parse("int8")) / (amax / 127)
    torch_grid = quantise_weight(w, QuantSpec.parse("int8:torch")) / (amax / 127.5)
    assert torch.allclose(deploy, deploy.round(), atol=1e-3) and deploy.abs().amax(1).round().eq(127).all()
    assert torch.allclose(torch_grid, torch_grid.round(), atol=1e-3) and torch_grid.amin() >= -128.001
    # The deployment half-step is the larger (max/254 > max/255), so its box holds the torch box.
    r_deploy = radius_of(w, QuantSpec.parse("int8").radius())
    r_torch = radius_of(w, QuantSpec.parse("int8:torch").radius())
    assert torch.allclose(r_deploy / r_torch, torch.full_like(w, 127.5 / 127))
    # A config written before the grid was named (restricted unset) is the torch box, bit for bit.
    old = RadiusConfig(kind="quant", lam=1.0, bits=8, per_channel=True, perturb_biases=False)
    assert torch.equal(radius_of(w, old), r_torch) and "restricted" not in RunConfig(radius=old).to_dict()["radius"]


@pytest.mark.slow  # about 50 s: one 30-step attack per distinct λ*
def test_lambda_star_is_sound_against_a_float64_attack(trained_model, points):
    x, y = points
    lam_star = certified_radius(trained_model, x, y, GRID)
    certified = lam_star > 0
    assert certified.sum() >= 5  # something to attack
    model64 = trained_model.double()
    theta = {n: p.detach() for n, p in model64.named_parameters()}
    for lam in lam_star[certified].unique().tolist():  # λ* takes grid values: one box per value
        idx = (lam_star == lam).nonzero().flatten()
        margins = joint_attack_margins(
            model64,
            relative_box(theta, lam),
            x[idx].double(),
            y[idx],
            0.0,
            steps=30,
            generator=torch.Generator().manual_seed(0),
        )
        assert bool((margins > 0).all()), f"a point certified at λ* = {lam:.3g} was flipped"


@pytest.mark.parametrize("method", ["ibp", "best"])
def test_bisection_agrees_with_the_direct_decision_and_is_monotone(trained_model, points, method):
    x, y = points
    lam_star = certified_radius(trained_model, x, y, GRID, method=method)
    values = GRID.values()
    probe = [values[k].item() for k in (2, 8, 12, 16, 20)]
    direct = certified_curve(trained_model, x, y, tuple(probe), method=method)
    shares = []
    for lam in probe:
        # Bisection (λ* ≥ λ) and the direct check at λ agree point by point on grid values.
        assert torch.equal(lam_star >= lam - 1e-15, direct[lam])
        shares.append(int(direct[lam].sum()))
    assert shares == sorted(shares, reverse=True)  # nested boxes certify fewer points
    assert (lam_star > 0).any() and (lam_star < values[-1]).all()


def test_best_certifies_at_least_what_intervals_do(trained_model, points):
    x, y = points
    ibp = certified_radius(trained_model, x, y, GRID, method="ibp")
    best = certified_radius(trained_model, x, y, GRID, method="best")
    assert bool((best >= ibp).all())


def test_unsupported_layer_is_refused_by_name_before_any_data(tmp_path, cifar_dir):
    model = nn.Sequential(nn.Flatten(), nn.Linear(3072, 16), nn.Tanh(), nn.Linear(16, 10))
    path = tmp_path / "tanh.pt"
    torch.save(model, path)
    with pytest.raises(UnsupportedLayerError, match=r"layer 2 \(Tanh\)"):
        load_source(path)
    # The CLI names it too, and fails before reading data (the data folder does not exist).
    res = CliRunner().invoke(app, ["certify", str(path), "--data-dir", str(tmp_path / "no-data")])
    assert res.exit_code == 1
    assert "Tanh" in res.output and "no-data" not in res.output


def test_own_sequential_on_own_points_in_a_stated_range(tmp_path, trained_mlp, points):
    x, y = points
    torch.save(trained_mlp, tmp_path / "mlp.pt")
    torch.save((x * 2 - 1, y), tmp_path / "points.pt")  # the user's data lives in [−1, 1]
    # The same network fed [−1, 1] inputs: its first layer undoes the map, so predictions match the [0, 1] case.
    shifted = nn.Sequential(nn.Flatten(), nn.Linear(3072, 32), nn.ReLU(), nn.Linear(32, 10))
    shifted.load_state_dict(trained_mlp.state_dict())
    with torch.no_grad():  # W·((u + 1)/2) + b = (W/2)·u + (b + W·1/2)
        shifted[1].bias.add_(shifted[1].weight.sum(1) / 2)
        shifted[1].weight.mul_(0.5)
    torch.save(shifted, tmp_path / "shifted.pt")
    cfg = CertifyConfig(lams=(0.001, 0.01), radius=False, quant=("int8",))
    res = certify_source(tmp_path / "shifted.pt", cfg, n=48, data=tmp_path / "points.pt", input_range=(-1.0, 1.0))
    assert res["correct"] == int((predictions(trained_mlp, x) == y).sum())
    assert json.loads((tmp_path / "shifted.pt.certify" / "certify.json").read_text())["n"] == 48
    assert res["curve"][0]["certified"] >= res["curve"][1]["certified"]
    assert res["quant"][0]["violations"] == 0
    with pytest.raises(Exception, match="outside the stated input range"):
        certify_source(tmp_path / "shifted.pt", cfg, n=48, data=tmp_path / "points.pt")


def test_evaluate_stage_and_table2_columns(trained_run, cifar_dir, tmp_path):
    import shutil

    from approp.config import RunConfig
    from approp.evaluate import EvalConfig, Evaluator
    from approp.experiments.preset import AlgoSpec, Cell
    from approp.experiments.tables import Reference, read_eval, result_from_eval, table2_rows

    run = shutil.copytree(trained_run, tmp_path / "run")
    cfg = EvalConfig(
        n=24,
        pgd_steps=2,
        autoattack=False,
        verified=False,
        param_attack=(0.001,),
        param_attack_steps=2,
        certify=(0.001,),
        quant=("int8",),
    )
    res = Evaluator(run, cfg, data_dir=cifar_dir, progress=False).run()
    cert = res["certify"]
    attack = res["param_attack"][0]
    # The certified bound of flips uses the attack's denominator: the points correct before any perturbation.
    assert cert["curve"][0]["of"] == round(attack["acc_before"] * 24)
    assert "Certified parameter robustness" in (run / "report.md").read_text()
    cell = Cell("c", "2/255", 2 / 255, AlgoSpec("standard", "standard", ()), RunConfig())
    row = table2_rows([result_from_eval(cell, read_eval(run))], (0.001,), Reference())[0]
    at_most, at_least = row["λ=0.001 at most (certified)"], row["λ=0.001"]
    assert at_most.n == at_least.n and at_most.value >= at_least.value  # the true rate lies between


def test_quantisation_margins_are_sound_and_agree_with_the_certificate(trained_mlp, points):
    """f* = 1 and 'smallest bits ≤ 8' are exactly the int8 certificate; a point certified down to b bits keeps its
    prediction in the model really quantised to b bits, and at the corners of its f* box; shares fall with bits."""
    from approp.certify.quant_margin import margin_rows, quant_margins

    x, y = points
    spec = QuantSpec.parse("int8")
    res = quant_margins(trained_mlp, x, y, spec)
    frac, bits = torch.tensor(res["fraction"]), torch.tensor(res["smallest_bits"])
    pred = predictions(trained_mlp, x)
    from approp.certify.quantise import certified_under

    at_int8 = certified_under(trained_mlp, x, pred, spec)
    assert torch.equal(frac == 1.0, at_int8) and torch.equal((bits > 0) & (bits <= 8), at_int8)
    assert int(at_int8.sum()) >= 6 and bool((frac > 0).sum() > at_int8.sum())  # the margin says more than yes/no
    for b in sorted(set(bits[bits > 0].tolist())):
        q = quantised_model(trained_mlp, QuantSpec(b, True, True))
        assert bool((predictions(q, x)[bits == b] == pred[bits == b]).all())
    # Corners of the f* box (every weight at ±f*·half-step, signs random) keep the prediction.
    gen = torch.Generator().manual_seed(0)
    for i in (frac > 0).nonzero().flatten()[:8].tolist():
        corner = copy.deepcopy(trained_mlp)
        with torch.no_grad():
            for p in corner.parameters():
                if p.dim() >= 2:
                    r = radius_of(p, spec.radius(frac[i].item()))
                    p.add_(r * (torch.randint(0, 2, p.shape, generator=gen) * 2 - 1))
        assert predictions(corner, x[i : i + 1]).item() == pred[i].item()
    by_bits, bins = margin_rows(res)
    assert by_bits[0][1] >= by_bits[1][1] >= by_bits[2][1] and sum(k for _, k in bins) == len(x)


def test_bad_input_to_certify_ends_in_one_line(tmp_path, trained_run, trained_mlp, points):
    """A corrupt model file, run directory or --data file, --n 0 and an unknown --arch are one-line errors."""
    import shutil

    from safetensors.torch import save_file

    from approp.config import ModelConfig
    from approp.models import build_model

    x, y = points
    (tmp_path / "bad.pt").write_bytes(b"not a pickle" * 20)
    torch.save(trained_mlp, tmp_path / "mlp.pt")
    torch.save((x[:4], y[:4]), tmp_path / "points.pt")
    run = shutil.copytree(trained_run, tmp_path / "run")
    (run / "model.safetensors").write_bytes(b"\x08\x00")
    cnn7 = build_model(ModelConfig(arch="cnn7"))
    save_file({k: v.contiguous() for k, v in cnn7.state_dict().items()}, str(tmp_path / "cnn7.safetensors"))
    common = ["--no-radius", "--lam", "0.001"]
    cases = {
        "corrupt model": ([str(tmp_path / "bad.pt"), "--data", str(tmp_path / "points.pt")], "not a model saved"),
        "corrupt run": ([str(run), "--data", str(tmp_path / "points.pt")], "is corrupt"),
        "corrupt data": ([str(tmp_path / "mlp.pt"), "--data", str(tmp_path / "bad.pt")], "not a torch.save'd (x, y)"),
        "no points": ([str(tmp_path / "mlp.pt"), "--data", str(tmp_path / "points.pt"), "--n", "0"], "--n must be"),
        "unknown arch": ([str(tmp_path / "cnn7.safetensors"), "--arch", "resnet"], "cnn4_bn"),
        "wrong arch": ([str(tmp_path / "cnn7.safetensors"), "--arch", "cnn4_bn"], "does not fit cnn4_bn"),
    }
    for name, (args, message) in cases.items():
        res = CliRunner().invoke(app, ["certify", *args, *common, "--out", str(tmp_path / "out")])
        assert res.exit_code == 1 and isinstance(res.exception, SystemExit), (name, res.exception)
        # One message (rich wraps it at the terminal's width): the words, no traceback.
        assert res.output.startswith("error:") and message in " ".join(res.output.split()), (name, res.output)
    res = CliRunner().invoke(
        app,
        [
            "certify",
            str(tmp_path / "cnn7.safetensors"),
            "--arch",
            "cnn7",
            "--data",
            str(tmp_path / "points.pt"),
            "--n",
            "2",
            *common,
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["n"] == 2
