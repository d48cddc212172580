"""The ONNX graph of any network the bounds trace: residual networks written from approp.bounds.graph's node list.

`graph_nodes(g, model, input_shape)` walks `approp.bounds.graph.trace(model)` (the node list the bounds
run on, so the export covers exactly their node kinds) and writes each node through approp.certify.deploy's
GraphBuilder: Conv2d and Linear with int8 weights dequantised in the graph (DequantizeLinear, per axis 0
for per-channel specs), BatchNorm as BatchNormalization with its running statistics, every other kind
in float. Shape queries (x.size(0), x.shape[0], x.dim()) write nothing: a reshape is written from the
shape it produces on an example batch, with its batch entry 0 (ONNX: copy the input's), so N stays
dynamic. The network is written as it runs in eval mode (Dropout is the identity).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..bounds.graph import Graph, Node, Ref, trace
from ..bounds.graph_rules import ADD, AVG_POOL, PASS, RELU, RESHAPE
from ..bounds.rules import UnsupportedLayerError, kind_name
from ..config import ConfigError
from .deploy import EMITTERS, GraphBuilder


def _resolve(a: Any, values: list[Any]) -> Any:
    """Returns a with every Ref replaced by the value of its node (tuples, lists and dicts walked)."""
    if isinstance(a, Ref):
        return values[int(a)]
    if isinstance(a, (tuple, list)):
        return type(a)(_resolve(v, values) for v in a)
    if isinstance(a, dict):
        return {k: _resolve(v, values) for k, v in a.items()}
    return a


@torch.no_grad()
def example_values(graph: Graph, x: torch.Tensor) -> list[Any]:
    """Returns every node's value on the example batch x (N, …): tensors, or numbers and shapes for shape queries.

    The model must be in eval mode (BatchNorm reads its running statistics and updates nothing).
    """
    values: list[Any] = [x]
    for node in graph.nodes[1:]:
        args, kwargs = _resolve(node.args, values), _resolve(node.kwargs, values)
        fn = node.module if node.module is not None else node.key
        values.append(fn(*args, **kwargs))
    return values


def _avg_pool(g: GraphBuilder, m: nn.AvgPool2d, x: str) -> str:
    if m.divisor_override is not None:
        raise ConfigError("ONNX export: AvgPool2d with divisor_override has no ONNX AveragePool equivalent")
    kernel = list(m.kernel_size) if isinstance(m.kernel_size, tuple) else [m.kernel_size] * 2
    stride = m.stride if m.stride else m.kernel_size
    stride = list(stride) if isinstance(stride, tuple) else [stride] * 2
    ph, pw = m.padding if isinstance(m.padding, tuple) else (m.padding, m.padding)
    return g.node(
        "AveragePool",
        [x],
        kernel_shape=kernel,
        strides=stride,
        pads=[ph, pw, ph, pw],
        ceil_mode=int(m.ceil_mode),
        count_include_pad=int(m.count_include_pad),
    )


def _adaptive_pool(g: GraphBuilder, x: str, shape_in: torch.Size, shape_out: torch.Size) -> str:
    """Returns adaptive average pooling from (N, C, H, W) to (N, C, h, w) as a global or a fixed-window pool."""
    (h_in, w_in), (h, w) = shape_in[2:], shape_out[2:]
    if h == w == 1:
        return g.node("GlobalAveragePool", [x])
    if h_in % h or w_in % w:
        raise ConfigError(
            f"ONNX export: adaptive average pooling from {h_in}×{w_in} to {h}×{w} has uneven windows (no AveragePool)"
        )
    k = [h_in // h, w_in // w]
    return g.node("AveragePool", [x], kernel_shape=k, strides=k)


def _operand(g: GraphBuilder, a: Any, names: list[Any], values: list[Any], like: torch.Tensor) -> str:
    """Returns the ONNX name of an addition's operand: a tensor node's name, or a scalar initialiser (like's dtype)
    for a number or a shape query's value."""
    if isinstance(a, Ref) and isinstance(values[int(a)], torch.Tensor):
        return names[int(a)]
    return g.const(torch.tensor(_resolve(a, values), dtype=like.dtype))


def _emit(g: GraphBuilder, node: Node, names: list[Any], values: list[Any], index: int) -> str:
    """Returns the ONNX name of node `index`'s value, writing its nodes; raises ConfigError for a kind without one."""
    x = names[node.inputs[0]] if node.inputs else None
    first = values[node.inputs[0]] if node.inputs else None
    m, key = node.module, node.key
    if m is not None and type(m) in EMITTERS:
        return EMITTERS[type(m)](g, m, x)
    if key in RELU:
        return g.node("Relu", [x])
    if key in PASS:
        return x
    if key in ADD:
        if node.kwargs.get("alpha", 1) != 1:
            raise ConfigError(f"ONNX export: {node.describe()} has alpha ≠ 1")
        operands = [*node.args[:2], *([node.kwargs["other"]] if "other" in node.kwargs else [])]
        return g.node("Add", [_operand(g, a, names, values, values[index]) for a in operands])
    if key in RESHAPE:
        out = values[index]
        if out.shape[0] != first.shape[0]:
            raise ConfigError(f"ONNX export: {node.describe()} mixes the points of a batch")
        return g.node("Reshape", [x, g.const(torch.tensor([0, *out.shape[1:]], dtype=torch.int64), "shape")])
    if key in AVG_POOL:
        if key in (nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d):
            return _adaptive_pool(g, x, first.shape, values[index].shape)
        if key is F.avg_pool2d:
            # F.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor): nn.AvgPool2d's order
            m = nn.AvgPool2d(*_resolve(node.args[1:], values), **_resolve(node.kwargs, values))
        return _avg_pool(g, m, x)
    raise ConfigError(f"ONNX export: no emitter for {node.describe()}; supported: {', '.join(supported_kinds())}")


def supported_kinds() -> list[str]:
    """Returns the names of the node kinds the graph export writes (sorted)."""
    keys = [*EMITTERS, *RELU, *PASS, *ADD, *RESHAPE, *AVG_POOL]
    return sorted({kind_name(k) for k in keys})


def graph_nodes(g: GraphBuilder, model: nn.Module, input_shape: tuple[int, ...]) -> str:
    """Returns the ONNX name of the model's output after writing every traced node into g (input named 'input').

    Raises ConfigError (UnsupportedLayerError) naming a node that cannot be traced or written.
    """
    was_training = model.training
    model.eval()
    try:
        graph = trace(model)
        values = example_values(graph, torch.zeros(2, *input_shape))  # N = 2: a reshape across N shows
    except UnsupportedLayerError:
        raise
    except (RuntimeError, TypeError, ValueError) as err:
        raise ConfigError(
            f"ONNX export: {type(model).__name__} does not run on inputs (N, *{input_shape}): {err}"
        ) from None
    finally:
        model.train(was_training)
    names: list[Any] = ["input"]
    for i, node in enumerate(graph.nodes[1:], start=1):
        names.append(None if node.static else _emit(g, node, names, values, i))
    return names[graph.output]
