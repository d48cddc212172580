"""The quantised network as deployed: a quantiser written without torch.ao (both tie rules) and ONNX Runtime never
change a point that `approp certify --quant int8` certified, and the ONNX graph computes the quantised network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from approp.certify.deploy import ROUNDINGS, integer_weights, onnx_logits, quantised_copy, to_onnx
from approp.certify.quantise import QuantSpec, predictions, quantised_model
from approp.checkpoint import load_model
from approp.cli import app
from approp.config import ConfigError, ModelConfig
from approp.data import to_float
from approp.models import build_model
from approp.radius import radius_of
from mlp import train_mlp

pytest.importorskip("onnxruntime")  # in the test extra: present wherever the tests are installed

pytest_plugins = ["trained"]

# A committed CNN4 trained with the certified-training recipe: int8 certifies a good share of its points.
RECIPE_RUN = Path(__file__).resolve().parents[1] / "docs/results/cpu_recipe/cells/eps2over255-app_tanh/run"


@pytest.fixture(scope="module")
def points(eval_points):
    return to_float(eval_points.x[:40]), eval_points.y[:40]


@pytest.fixture(scope="module")
def mlp(cifar_dir):
    """Returns the shared briefly trained MLP (tests/trained.py): int8 certifies many of its points."""
    return train_mlp(cifar_dir)


def test_independent_quantiser_ties_grid_and_box():
    """Ties go to even or away from zero as named; integers stay on the grid; q·s lies in the certificate's box."""
    w = torch.tensor([[2.5, -2.5, 3.5, 127.0], [0.5, -1.5, 10.0, -127.0]])  # s = 1 per row on the int8 grid
    even, s = integer_weights(w, QuantSpec.parse("int8"), "half_even")
    away, _ = integer_weights(w, QuantSpec.parse("int8"), "half_away")
    assert torch.equal(s, torch.ones(2))
    assert even.tolist() == [[2, -2, 4, 127], [0, -2, 10, -127]]
    assert away.tolist() == [[3, -3, 4, 127], [1, -2, 10, -127]]
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(16, 3, 3, 3, generator=gen)
    for text in ("int8", "int4:tensor", "int8:torch", "int3:tensor:torch"):
        spec = QuantSpec.parse(text)
        lo, hi = spec.levels
        for rounding in ROUNDINGS:
            q, s = integer_weights(w, spec, rounding)
            assert int(q.min()) >= lo and int(q.max()) <= hi
            deq = q.float() * (s.view(-1, 1, 1, 1) if spec.per_channel else s)
            assert bool(((deq - w).abs() <= radius_of(w, spec.radius())).all())
        # Off the ties (w/s within 0.499 of an integer; each grid's largest weight on PyTorch's grid sits at
        # ±127.5, a tie), both agree with PyTorch's own fake quantisation.
        model = nn.Sequential(nn.Conv2d(3, 16, 3))
        model[0].weight.data.copy_(w)
        v = w / (s.view(-1, 1, 1, 1) if spec.per_channel else s)
        off_tie = (v - v.floor() - 0.5).abs() > 1e-3
        ours, theirs = quantised_copy(model, spec)[0].weight, quantised_model(model, spec)[0].weight
        assert torch.allclose(ours[off_tie], theirs[off_tie], atol=1e-6) and off_tie.float().mean() > 0.9
    with pytest.raises(ConfigError):
        integer_weights(w, QuantSpec(), "half_up")  # type: ignore[arg-type]


@pytest.mark.parametrize("arch", ["cnn4", "cnn4_bn", "cnn7"])
def test_onnx_graph_computes_the_quantised_network(arch):
    """ONNX Runtime's logits equal those of the dequantised copy (int8 initialisers, DequantizeLinear, float conv)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch)).eval()
    for m in model.modules():  # BatchNorm with statistics other than the identity's
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(6, 3, 32, 32)
    for text in ("int8", "int4:tensor:torch"):
        spec = QuantSpec.parse(text)
        proto = to_onnx(model, spec, (3, 32, 32))
        inits = {t.name: t for t in proto.graph.initializer}
        assert any(t.data_type == 3 for t in inits.values())  # INT8 weights are stored
        assert sum(n.op_type == "DequantizeLinear" for n in proto.graph.node) == sum(
            p.dim() >= 2 for p in model.parameters()
        )
        with torch.no_grad():
            ref = quantised_copy(model, spec)(x)
        got = onnx_logits(proto, x)
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_export_refuses_an_unknown_layer_by_name():
    with pytest.raises(ConfigError, match="Tanh"):
        to_onnx(nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.Tanh(), nn.Linear(4, 2)), QuantSpec(), (3, 2, 2))


@pytest.mark.parametrize("which", ["mlp", "recipe_cnn4"])
def test_certified_points_keep_their_prediction_in_onnx_runtime(which, mlp, points, tmp_path):
    """`approp certify --quant int8 --onnx`: every certified point keeps its prediction in ONNX Runtime and under
    the quantiser without torch.ao with either tie rule; the certificate is not vacuous on these models."""
    x, y = points
    if which == "mlp":  # both grids and the margins
        model, extra, at_least = mlp, ["--quant", "int8,int8:torch", "--quant-margin"], 4
    else:  # a real CNN4, fewer points and the deployment grid only (CROWN on CNN4 costs seconds per check)
        model, extra, at_least = load_model(RECIPE_RUN)[0].eval(), ["--quant", "int8"], 2
        x, y = x[:24], y[:24]
    torch.save(model, tmp_path / "model.pt")
    torch.save((x, y), tmp_path / "points.pt")
    res = CliRunner().invoke(
        app,
        [
            "certify",
            str(tmp_path / "model.pt"),
            "--data",
            str(tmp_path / "points.pt"),
            "--n",
            str(len(x)),
            "--lam",
            "0.001",
            "--no-radius",
            "--onnx",
            *extra,
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "out" / "certify.json").read_text())
    deploy = result["quant"][0]
    assert deploy["spec"] == "int8" and deploy["grid"] == [-127, 127]
    assert deploy["certified_unchanged"] >= at_least
    for entry in result["quant"]:
        for name in ("onnx", *ROUNDINGS):
            assert entry[f"{name}_violations"] == 0
    # ONNX Runtime's network is PyTorch's quantised network: the same predictions here.
    proto = to_onnx(model, QuantSpec.parse("int8"), (3, 32, 32))
    assert torch.equal(onnx_logits(proto, x).argmax(1), predictions(quantised_model(model, QuantSpec.parse("int8")), x))
    page = (tmp_path / "out" / "certify.md").read_text()
    assert "ONNX Runtime accuracy" in page
    if which == "mlp":
        assert result["quant"][1]["grid"] == [-128, 127] and "Quantisation margins, int8" in page
        margin = result["quant_margin"][0]  # f* = 1 exactly where int8 is certified
        assert sum(f == 1.0 for f in margin["fraction"]) == deploy["certified_unchanged"]
