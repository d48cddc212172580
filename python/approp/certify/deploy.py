"""The quantised network as deployed: integer weights from a quantiser written without torch.ao, and ONNX Runtime.

- integer_weights: the weight-only symmetric quantiser of a QuantSpec written from its definition
  (s = max|θ|/q per output channel or tensor, round, clamp), with either tie rule: half to even
  (TensorRT, torch.round, numpy) or half away from zero (C's round, the usual hand-written kernel).
  It shares no code with approp.radius or torch.ao, so it checks the certificate independently.
- quantised_copy: the model with those integer weights dequantised (q·s in float32).
- to_onnx: an ONNX graph of the weight-only quantised network: int8 initialisers with their scales
  and zero points 0, DequantizeLinear (per axis 0 for per-channel specs) feeding the float
  Conv / Gemm, everything else float (BatchNorm as BatchNormalization with its running statistics).
  Sequential networks are walked layer by layer through EMITTERS (one function per layer kind
  writing nodes); any other network the bounds trace (residual ones) node by node from its torch.fx
  trace (approp.certify.deploy_graph), through the same emitters.
- onnx_predictions: argmax of the graph run in ONNX Runtime on the CPU.

onnx and onnxruntime are optional (`pip install approp[deploy]`): imported when a graph is built or run.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from ..config import ConfigError
from ..layers import Normalize
from .quantise import QuantSpec

Rounding = Literal["half_even", "half_away"]
ROUNDINGS: tuple[Rounding, ...] = ("half_even", "half_away")
OPSET = 17
IR_VERSION = 9  # what onnxruntime ≥ 1.16 reads; newer onnx writes a newer IR by default


def require_onnx() -> None:
    """Raises ConfigError (a one-line message) where onnx or onnxruntime is not installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"the ONNX check needs onnx and onnxruntime (pip install 'approp[deploy]'): {err}") from None


def _round(v: torch.Tensor, rounding: Rounding) -> torch.Tensor:
    """Returns v rounded to integers with ties to even or away from zero."""
    if rounding == "half_even":
        return torch.round(v)  # IEEE round-half-even, as numpy and TensorRT
    if rounding == "half_away":
        return torch.sign(v) * torch.floor(v.abs() + 0.5)
    raise ConfigError(f"rounding must be one of {', '.join(ROUNDINGS)}; got {rounding!r}")


def integer_weights(
    w: torch.Tensor, spec: QuantSpec, rounding: Rounding = "half_even"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (q, s): integers q (same shape as w (C_out, …), int8) and steps s (C_out,) or (), float32.

    s = max|w| / half-range, half-range 2^(bits−1) − 1 on the deployment grid (127 at int8) or
    2^(bits−1) − ½ on PyTorch's (127.5), at least float32's eps; q = clamp(round(w / s)).
    """
    half = 2 ** (spec.bits - 1) - (1.0 if spec.restricted else 0.5)
    q_max = 2 ** (spec.bits - 1) - 1
    q_min = -q_max if spec.restricted else -q_max - 1
    w = w.detach().float()
    amax = w.abs().flatten(1).amax(1) if spec.per_channel else w.abs().amax()
    scale = torch.clamp(amax / half, min=torch.finfo(torch.float32).eps)
    view = scale.view(-1, *([1] * (w.dim() - 1))) if spec.per_channel else scale
    q = torch.clamp(_round(w / view, rounding), q_min, q_max)
    return q.to(torch.int8), scale


def quantised_copy(model: nn.Module, spec: QuantSpec, rounding: Rounding = "half_even") -> nn.Module:
    """Returns a copy of the model whose weights (parameters of ≥ 2 dims) are q·s from integer_weights."""
    out = copy.deepcopy(model).eval()
    with torch.no_grad():
        for p in out.parameters():
            if p.dim() >= 2:
                q, s = integer_weights(p, spec, rounding)
                p.copy_(q.float() * (s.view(-1, *([1] * (p.dim() - 1))) if spec.per_channel else s))
    return out


class GraphBuilder:
    """Collects ONNX nodes and initialisers; names are unique ('t0', 't1', …)."""

    def __init__(self, spec: QuantSpec, rounding: Rounding) -> None:
        require_onnx()
        self.spec, self.rounding = spec, rounding
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._count = 0

    def name(self, hint: str = "t") -> str:
        """Returns a fresh tensor name."""
        self._count += 1
        return f"{hint}{self._count}"

    def const(self, value: torch.Tensor, hint: str = "c") -> str:
        """Returns the name of a new initialiser holding value (any dtype)."""
        from onnx import numpy_helper

        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(value.detach().cpu().numpy(), name))
        return name

    def node(self, op: str, inputs: list[str], hint: str = "t", **attrs: Any) -> str:
        """Returns the output name of a new node op(inputs) with attributes."""
        from onnx import helper

        out = self.name(hint)
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def weight(self, w: torch.Tensor) -> str:
        """Returns the name of the float weight: int8 initialiser → DequantizeLinear with its step(s)."""
        q, s = integer_weights(w, self.spec, self.rounding)
        zero = torch.zeros_like(s, dtype=torch.int8)
        args = [self.const(q, "q"), self.const(s.float(), "scale"), self.const(zero, "zero")]
        return self.node("DequantizeLinear", args, "w", **({"axis": 0} if self.spec.per_channel else {}))


def _pair(v: int | tuple[int, ...]) -> list[int]:
    return list(v) if isinstance(v, tuple) else [v, v]


def _conv(g: GraphBuilder, m: nn.Conv2d, x: str) -> str:
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise ConfigError(f"ONNX export: Conv2d needs numeric zero padding; got {m.padding!r}, {m.padding_mode!r}")
    ph, pw = _pair(m.padding)
    args = [x, g.weight(m.weight)] + ([g.const(m.bias.float())] if m.bias is not None else [])
    return g.node(
        "Conv",
        args,
        kernel_shape=_pair(m.kernel_size),
        strides=_pair(m.stride),
        pads=[ph, pw, ph, pw],
        dilations=_pair(m.dilation),
        group=m.groups,
    )


def _linear(g: GraphBuilder, m: nn.Linear, x: str) -> str:
    args = [x, g.weight(m.weight)] + ([g.const(m.bias.float())] if m.bias is not None else [])
    return g.node("Gemm", args, transB=1)


def _batchnorm(g: GraphBuilder, m: nn.modules.batchnorm._BatchNorm, x: str) -> str:
    if m.running_mean is None:
        raise ConfigError("ONNX export: BatchNorm without running statistics cannot run in eval mode")
    ones = torch.ones(m.num_features)
    weight = m.weight if m.affine else ones
    bias = m.bias if m.affine else torch.zeros(m.num_features)
    args = [x] + [g.const(t.detach().float()) for t in (weight, bias, m.running_mean, m.running_var)]
    return g.node("BatchNormalization", args, epsilon=float(m.eps))


def _maxpool(g: GraphBuilder, m: nn.MaxPool2d, x: str) -> str:
    ph, pw = _pair(m.padding)
    return g.node(
        "MaxPool",
        [x],
        kernel_shape=_pair(m.kernel_size),
        strides=_pair(m.stride or m.kernel_size),
        pads=[ph, pw, ph, pw],
        dilations=_pair(m.dilation),
        ceil_mode=int(m.ceil_mode),
    )


def _flatten(g: GraphBuilder, m: nn.Flatten, x: str) -> str:
    if m.start_dim != 1 or m.end_dim != -1:
        raise ConfigError("ONNX export: only nn.Flatten(1, -1) is supported")
    return g.node("Flatten", [x], axis=1)


def _normalize(g: GraphBuilder, m: Normalize, x: str) -> str:
    return g.node("Div", [g.node("Sub", [x, g.const(m.mean.float())]), g.const(m.std.float())])


EMITTERS: dict[type, Callable[[GraphBuilder, Any, str], str]] = {
    nn.Conv2d: _conv,
    nn.Linear: _linear,
    nn.BatchNorm1d: _batchnorm,
    nn.BatchNorm2d: _batchnorm,
    nn.MaxPool2d: _maxpool,
    nn.Flatten: _flatten,
    Normalize: _normalize,
    nn.ReLU: lambda g, m, x: g.node("Relu", [x]),
    nn.Identity: lambda g, m, x: x,
    nn.Dropout: lambda g, m, x: x,  # eval mode: the identity
}


def _flat_layers(model: nn.Module) -> list[nn.Module]:
    """Returns the model's layers in order (its `.layers` or itself, nested Sequentials flattened)."""
    root = getattr(model, "layers", model)
    if not isinstance(root, nn.Sequential):
        raise ConfigError(f"ONNX export: {type(model).__name__} is not a Sequential network (nor has `.layers`)")
    out: list[nn.Module] = []
    for layer in root:
        out += _flat_layers(layer) if isinstance(layer, nn.Sequential) else [layer]
    return out


def to_onnx(model: nn.Module, spec: QuantSpec, input_shape: tuple[int, ...], rounding: Rounding = "half_even"):
    """Returns the onnx.ModelProto of the weight-only quantised model for inputs (N, *input_shape) (N dynamic).

    Raises ConfigError naming the first layer kind (or traced node) without an emitter.
    """
    from onnx import TensorProto, checker, helper

    g = GraphBuilder(spec, rounding)
    if isinstance(getattr(model, "layers", model), nn.Sequential):
        layers = _flat_layers(model)
        for layer in layers:
            if type(layer) not in EMITTERS:
                raise ConfigError(
                    f"ONNX export: no emitter for {type(layer).__name__}; supported: "
                    f"{', '.join(sorted(k.__name__ for k in EMITTERS))}"
                )
        x = "input"
        for layer in layers:
            x = EMITTERS[type(layer)](g, layer, x)
    else:  # any other network the bounds trace (residual ones): written node by node from the trace
        from .deploy_graph import graph_nodes  # deploy_graph builds on this module's emitters

        x = graph_nodes(g, model, input_shape)
    g.nodes.append(helper.make_node("Identity", [x], ["logits"]))
    graph = helper.make_graph(
        g.nodes,
        f"approp_{spec.name}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", None])],
        g.inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="approp")
    proto.ir_version = IR_VERSION
    checker.check_model(proto)
    return proto


def onnx_logits(proto: Any, x: torch.Tensor, batch_size: int = 500, threads: int = 1) -> torch.Tensor:
    """Returns the logits (N, classes) of the ONNX graph run in ONNX Runtime (CPU) on x (N, C, H, W)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out = [
        torch.from_numpy(session.run(None, {"input": x[i : i + batch_size].float().cpu().numpy()})[0])
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, 0)


def deployed_check(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: QuantSpec, certified: torch.Tensor
) -> dict[str, int]:
    """Returns counts of what the deployed quantised networks do on x (N, …), y (N,): ONNX Runtime's and each
    tie rule's independent quantiser's correct points, kept float predictions, and certified points changed
    (`certified` (N,) bool: the quantisation certificate's mask; every violation count must be 0)."""
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 500]).argmax(1) for i in range(0, len(x), 500)])
        runs = {"onnx": onnx_logits(to_onnx(model, spec, tuple(x.shape[1:])), x).argmax(1)}
        for rounding in ROUNDINGS:
            q = quantised_copy(model, spec, rounding)
            runs[rounding] = torch.cat([q(x[i : i + 500]).argmax(1) for i in range(0, len(x), 500)])
    out = {}
    for name, p in runs.items():
        out |= {
            f"{name}_correct": int((p == y).sum()),
            f"{name}_kept": int((p == pred).sum()),
            f"{name}_violations": int((certified & (p != pred)).sum()),
        }
    return out
