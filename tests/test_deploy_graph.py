"""ONNX export of traced (residual) networks: ONNX Runtime computes PyTorch's quantised network, node kind by node
kind, and every point the int8 certificate covers keeps its prediction there.

The certificate runs through the library (certify_model): `approp certify` loads Sequential networks only.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from approp.bounds.rules import KINDS, kind_name
from approp.certify.deploy import ROUNDINGS, onnx_logits, quantised_copy, to_onnx
from approp.certify.deploy_graph import supported_kinds
from approp.certify.quantise import QuantSpec, predictions, quantised_model
from approp.certify.run import CertifyConfig, certify_model
from approp.certify.sources import Points
from approp.config import ConfigError, ModelConfig
from approp.data import Split, load_cifar10, to_float
from approp.layers import Normalize
from approp.models import build_model
from foreign_resnet import ForeignResNet  # tests/: torch only

pytest.importorskip("onnxruntime")  # in the test extra: present wherever the tests are installed

pytest_plugins = ["trained"]


class Branchy(nn.Module):
    """Returns logits (B, 10) for x (B, 3, 8, 8): the kinds ForeignResNet leaves out (Normalize, MaxPool2d, adaptive
    pooling to 2×2, F.avg_pool2d with stride and padding, a number added, BatchNorm1d, Dropout2d, torch.reshape)."""

    def __init__(self) -> None:
        super().__init__()
        self.normalize = Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.pool = nn.MaxPool2d(2)  # 8 → 4
        self.adaptive = nn.AdaptiveAvgPool2d(2)  # 4 → 2
        self.drop = nn.Dropout2d(0.3)
        self.bn = nn.BatchNorm1d(20)
        self.fc = nn.Linear(20, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(F.relu(self.conv(self.normalize(x))))  # (B, 5, 4, 4)
        h = self.adaptive(h) + F.avg_pool2d(h, 3, stride=2, padding=1) + 0.25  # (B, 5, 2, 2)
        return self.fc(self.bn(torch.reshape(self.drop(h), (x.shape[0], -1))))


class TinyResidual(nn.Module):
    """Returns logits (B, 10) for CIFAR-10 x (B, 3, 32, 32): 4×4 pooling, conv, a residual conv, pooling, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(4)  # 32 → 8
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(self.pool(x)))  # (B, 8, 8, 8)
        h = torch.relu(self.conv2(h)) + h
        return self.fc(torch.flatten(F.avg_pool2d(h, 2), 1))  # (B, 128) → (B, 10)


def _with_statistics(model: nn.Module) -> nn.Module:
    """Returns the model in eval mode, its BatchNorm statistics other than the identity's."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("which", ["foreign", "branchy", "resnet20"])
def test_onnx_graph_computes_the_quantised_residual_network(which):
    """ONNX Runtime's logits equal the dequantised copy's and PyTorch's quantised network's; int8 weights stored."""
    torch.manual_seed(0)
    model, shape = {
        "foreign": (ForeignResNet, (3, 8, 8)),
        "branchy": (Branchy, (3, 8, 8)),
        "resnet20": (lambda: build_model(ModelConfig(arch="resnet20")), (3, 32, 32)),
    }[which]
    model = _with_statistics(model())
    x = torch.rand(5, *shape)
    for text in ("int8", "int4:tensor"):
        spec = QuantSpec.parse(text)
        proto = to_onnx(model, spec, shape)
        weights = sum(p.dim() >= 2 for p in model.parameters())
        assert sum(t.data_type == 3 for t in proto.graph.initializer) == 2 * weights  # INT8 weights and zero points
        assert sum(n.op_type == "DequantizeLinear" for n in proto.graph.node) == weights
        got = onnx_logits(proto, x)
        with torch.no_grad():
            ours, torchs = quantised_copy(model, spec)(x), quantised_model(model, spec)(x)
        scale = ours.abs().max().item()
        assert got.shape == (5, 10) and scale > 0
        assert torch.allclose(got, ours, rtol=1e-4, atol=1e-5 * scale)
        assert torch.allclose(got, torchs, rtol=1e-4, atol=1e-5 * scale)
        with torch.no_grad():  # and not the float network: the quantisation is in the graph
            assert not torch.allclose(got, model(x), rtol=1e-6, atol=1e-7 * scale)
    assert not model.training  # the export leaves the mode as it was


def test_graph_export_refuses_what_it_cannot_write():
    """The kinds are the bounds' own; a kind without an emitter is named; a reshape across the batch and uneven
    adaptive pooling are refused."""

    class Tanh(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(12, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1)) + torch.tanh(self.fc(x.flatten(1)))

    class Mixing(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(-1)

    class Uneven(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.adaptive_avg_pool2d(x, 3).flatten(1)

    with pytest.raises(ConfigError, match="torch.tanh"):
        to_onnx(Tanh(), QuantSpec(), (3, 2, 2))
    with pytest.raises(ConfigError, match="mixes the points"):
        to_onnx(Mixing(), QuantSpec(), (3, 2, 2))
    with pytest.raises(ConfigError, match="uneven windows"):
        to_onnx(Uneven(), QuantSpec(), (3, 4, 4))
    # The export writes exactly the node kinds the bounds have interval rules for.
    assert set(supported_kinds()) == {kind_name(k) for k, kind in KINDS.items() if kind.interval}


@pytest.fixture(scope="module")
def tiny_residual(cifar_dir):
    """Returns a TinyResidual trained briefly (60 full-batch Adam steps) on 2,000 CIFAR-10 images, in eval mode."""
    train = Split(*load_cifar10(cifar_dir, train=True)).take(2000)
    x, y = to_float(train.x), train.y
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = TinyResidual()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def test_certified_points_keep_their_prediction_in_onnx_runtime_residual(tiny_residual, eval_points):
    """certify_model(quant int8, onnx): every certified point keeps its prediction in ONNX Runtime and under either
    tie rule; ONNX Runtime predicts as PyTorch's quantised network; the certificate is not vacuous."""
    x, y = to_float(eval_points.x[:40]), eval_points.y[:40]
    cfg = CertifyConfig(lams=(), quant=("int8",), radius=False, onnx=True)
    result = certify_model(tiny_residual, Points(x, y, "CIFAR-10 test"), cfg)
    entry = result["quant"][0]
    assert entry["spec"] == "int8" and entry["certified_unchanged"] >= 2
    for name in ("onnx", *ROUNDINGS):
        assert entry[f"{name}_violations"] == 0
    spec = QuantSpec.parse("int8")
    onnx_pred = onnx_logits(to_onnx(tiny_residual, spec, (3, 32, 32)), x).argmax(1)
    assert torch.equal(onnx_pred, predictions(quantised_model(tiny_residual, spec), x))
    certified = torch.tensor(entry["certified"])
    assert torch.equal(onnx_pred[certified], predictions(tiny_residual, x)[certified])
    assert entry["onnx_correct"] == int((onnx_pred == y).sum())
