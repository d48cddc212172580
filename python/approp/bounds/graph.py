"""The bound engine's view of a network: a torch.fx trace reduced to a small list of nodes.

`trace(model)` returns a Graph: nodes in topological order (nodes[0] is the input), each with
its kind (the key of approp.bounds.rules.KINDS: a module class, or the function or Tensor method
it calls), its module (call_module nodes), its inputs and its consumers. Every node the output
does not depend on is dropped. A chain network (nn.Sequential) is the special case where node
k + 1 is layer k and reads node k.

Why torch.fx symbolic tracing rather than torch.export: fx keeps the module hierarchy. A
call_module node holds the very nn.Module the model owns, so a node's parameter box comes
from that module's own named parameters (the names the radius and the checkpoints use),
BatchNorm's train or eval behaviour is read from the module when the bounds run (export
specialises it when exporting and lowers the layer to functional aten ops), and the forward
hooks that record clean-batch statistics (approp.bounds.batchnorm) see the same objects.
Tracing needs no example input, so a model is checked before any data is read. Layers the
bounds know by type (approp's Normalize, BatchNorm, every registered class) are leaves:
the trace stops at them instead of entering their forward.

A model with a node no rule covers is refused by name (UnsupportedLayerError, a ConfigError):
the node, its target and the supported kinds. Shape queries (x.size(0), x.shape[0], x.dim())
are "static" nodes: their value is a number read from the interval's shape, not an interval.
Limits: fx records `out += y` as an addition, so an in-place update of a tensor that another
node reads afterwards is not seen; an in-place ReLU whose input is read afterwards is refused.
"""

from __future__ import annotations

import operator
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from .batchnorm import BATCHNORMS
from .rules import DISPLAY, KINDS, UnsupportedLayerError, kind_name


class Ref(int):
    """An argument slot holding the value of node `int(self)`."""


@dataclass
class Node:
    """One node: kind key, module (or None), arguments with Ref slots, inputs and consumers (indices)."""

    name: str
    key: Any
    target: str
    module: nn.Module | None = None
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    inputs: tuple[int, ...] = ()  # the nodes it reads, each once
    slots: tuple[int, ...] = ()  # the node of every argument slot, in argument order (x + x: twice)
    bounded: tuple[int, ...] = ()  # the slots whose values are intervals
    consumers: list[int] = field(default_factory=list)
    static: bool = False  # a shape query: its value is a number, not an interval

    @property
    def is_relu(self) -> bool:
        return self.key in RELU_KINDS

    def describe(self) -> str:
        """Returns how messages name the node: 'layer 1 (Tanh)' or 'torch.sigmoid', with the node's name."""
        if self.module is not None:
            return f"layer {self.target} ({type(self.module).__name__}), graph node {self.name!r}"
        return f"graph node {self.name!r} (a call of {self.target})"


@dataclass
class Graph:
    """nodes in topological order (nodes[0] the input); output: the index of the node the model returns."""

    nodes: list[Node]
    output: int
    # (parent or None for the model itself, child name, child) along every module node's path: the
    # structure the trace saw, checked on each use (a dict lookup per edge; the root is not held).
    edges: list[tuple[nn.Module | None, str, nn.Module]] = field(default_factory=list)


RELU_KINDS = (nn.ReLU, F.relu, torch.relu, torch.Tensor.relu)


def _size(x: Any, dim: int | None = None) -> Any:
    return x.shape if dim is None else x.shape[dim]


def _getattr(x: Any, name: str) -> Any:
    if name != "shape":
        raise UnsupportedLayerError(f"getattr(x, {name!r}) has no bound rule (only x.shape)")
    return x.shape


# Shape queries, evaluated on the interval's shape (Interval.shape) or on another static value.
STATIC = {
    torch.Tensor.size: _size,
    torch.Tensor.dim: lambda x: len(x.shape),
    getattr: _getattr,
    operator.getitem: operator.getitem,
}
DISPLAY.update({getattr: "getattr (x.shape)", operator.getitem: "operator.getitem (of a shape)"})


class _Tracer(fx.Tracer):
    """fx's tracer with every kind the bounds know by type as a leaf (Normalize, BatchNorm, ...)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m) in KINDS or super().is_leaf_module(m, qualname)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → {training: Graph}


def trace(model: nn.Module) -> Graph:
    """Returns the model's Graph (cached per model and mode while its submodules stay the same objects)."""
    graphs = _CACHE.setdefault(model, {})
    graph = graphs.get(model.training)
    if graph is None or not _still_valid(model, graph):
        graph = graphs[model.training] = _build(model)
    return graph


def _still_valid(model: nn.Module, graph: Graph) -> bool:
    """Returns whether every module node still names the module the model holds at its path."""
    return all((model if p is None else p)._modules.get(name) is child for p, name, child in graph.edges)


def _edges(model: nn.Module, nodes: list[Node]) -> list[tuple[nn.Module | None, str, nn.Module]]:
    """Returns the (parent, name, child) steps from the model to every module node (parent None: the model)."""
    edges = {}
    for node in nodes:
        if node.module is None or not node.target:
            continue
        parent = None
        for name in node.target.split("."):
            child = (model if parent is None else parent)._modules[name]
            edges[(id(parent), name)] = (parent, name, child)
            parent = child
    return list(edges.values())


def _build(model: nn.Module) -> Graph:
    """Returns a fresh Graph of `model`, or raises UnsupportedLayerError naming what cannot be traced."""
    if type(model) in KINDS:  # a single known layer: fx would trace into its forward, not keep it whole
        layer = Node("layer", type(model), "", model, (Ref(0),), {}, (0,), (0,))
        return mark_bounded(Graph([Node("input", None, "input", consumers=[1]), layer], 1))
    try:
        fx_graph = _Tracer().trace(model)
    except (fx.proxy.TraceError, TypeError, RuntimeError, NotImplementedError, ValueError, AttributeError) as err:
        raise UnsupportedLayerError(
            f"{type(model).__name__} cannot be traced by torch.fx ({type(err).__name__}: {err}); the bounds need a "
            "forward without data-dependent control flow"
        ) from None
    fx_nodes = list(fx_graph.nodes)
    out = next(n for n in fx_nodes if n.op == "output")
    if not isinstance(out.args[0], fx.Node):
        raise UnsupportedLayerError(f"{type(model).__name__} must return one tensor (the logits) to be bounded")
    keep = _ancestors(out.args[0])
    inputs = [n for n in fx_nodes if n.op == "placeholder"]
    if not inputs or inputs[0] not in keep:
        raise UnsupportedLayerError(f"{type(model).__name__}'s output does not depend on its input")
    index: dict[fx.Node, int] = {}
    nodes: list[Node] = []
    for n in fx_nodes:
        if n in keep:
            index[n] = len(nodes)
            nodes.append(_convert(model, n, index, first=not nodes))
    for i, node in enumerate(nodes):
        for j in node.inputs:
            nodes[j].consumers.append(i)
    graph = mark_bounded(Graph(nodes, index[out.args[0]], _edges(model, nodes)))
    _check_in_place(graph)
    return graph


def _ancestors(root: fx.Node) -> set[fx.Node]:
    """Returns root and every node it depends on."""
    seen, todo = set(), [root]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(n.all_input_nodes)
    return seen


def _convert(model: nn.Module, n: fx.Node, index: dict[fx.Node, int], first: bool) -> Node:
    """Returns the Node of fx node n, its fx inputs replaced by Ref(index)."""
    if n.op == "placeholder":
        if not first:
            raise UnsupportedLayerError(f"the bounds take models of one input; {n.name!r} is a second one")
        return Node(n.name, None, n.name)
    if n.op not in ("call_module", "call_function", "call_method"):
        raise UnsupportedLayerError(f"graph node {n.name!r} ({n.op} {n.target}) has no bound rule")
    slots: list[int] = []

    def sub(a: Any) -> Any:
        if isinstance(a, fx.Node):
            slots.append(index[a])
            return Ref(index[a])
        return a

    args, kwargs = fx.node.map_aggregate(n.args, sub), fx.node.map_aggregate(n.kwargs, sub)
    module = model.get_submodule(n.target) if n.op == "call_module" else None
    if module is not None:
        key, target = type(module), n.target
    elif n.op == "call_method":
        key = getattr(torch.Tensor, n.target, n.target)
        target = f"Tensor.{n.target}"
    else:
        key, target = n.target, kind_name(n.target)
    return Node(
        n.name, key, target, module, args, kwargs, tuple(dict.fromkeys(slots)), tuple(slots), static=key in STATIC
    )


def _check_in_place(graph: Graph) -> None:
    """Raises where an in-place op changes a value that a later node reads, or a BatchNorm runs twice."""
    seen: set[int] = set()
    for i, node in enumerate(graph.nodes):
        if isinstance(node.module, BATCHNORMS):
            if id(node.module) in seen:
                raise UnsupportedLayerError(f"{node.describe()}: a BatchNorm layer called twice has no bound rule")
            seen.add(id(node.module))
        in_place = getattr(node.module, "inplace", False) or node.kwargs.get("inplace", False) is True
        if in_place and node.inputs and any(c > i for c in graph.nodes[node.inputs[0]].consumers if c != i):
            raise UnsupportedLayerError(
                f"{node.describe()} works in place on a value that a later node reads: make it out of place"
            )


def mark_bounded(graph: Graph) -> Graph:
    """Returns graph with each node's `bounded` inputs set and static nodes checked (an interval never
    reaches a shape query's arithmetic, nor a static value a rule's interval slot)."""
    for node in graph.nodes[1:]:
        node.bounded = tuple(j for j in node.slots if not graph.nodes[j].static)
        if node.static and node.key is operator.getitem and node.bounded:
            raise UnsupportedLayerError(f"{node.describe()}: indexing a tensor has no bound rule")
        if not node.static and not node.bounded:
            raise UnsupportedLayerError(f"{node.describe()} reads no bounded value (a constant has no rule)")
    return graph


def require(graph: Graph, linear: bool = False) -> Graph:
    """Returns graph if every node has an interval rule (and a linear one if `linear`); else raises naming the first.

    Runs before any data is read: the message names the node, its target and the supported kinds.
    """
    columns = ("interval", "linear") if linear else ("interval",)
    for node in graph.nodes[1:]:
        if node.static:
            continue
        kind = KINDS.get(node.key)
        missing = [c for c in columns if kind is None or getattr(kind, c) is None]
        if missing:
            supported = sorted(kind_name(k) for k, v in KINDS.items() if all(getattr(v, c) for c in columns))
            raise UnsupportedLayerError(
                f"no {' and no '.join(m + ' rule' for m in missing)} for {node.describe()}; supported kinds: "
                f"{', '.join(supported + sorted(kind_name(k) for k in STATIC))}"
            )
    return graph
