"""Interval propagation through a network's graph, node by node.

`interval_bounds(model, x, eps, radius)` returns an Interval holding lower
and upper logit bounds valid for every parameter vector in the box
B∞(θ, r(θ)) and every input in B∞(x, ε) ∩ [0, 1].

The network is traced once (approp.bounds.graph) and every node's rule is
applied in topological order; a value is dropped as soon as its last
consumer has read it, so a chain network holds one interval at a time, as a
layer walk does. A chain (nn.Sequential, or CNN4's `.layers`) is just a graph
whose node k + 1 reads node k.

A `BoundsRecord` passed as `record` collects, on the same pass, the interval
entering the first layer with parameters and the interval entering every
ReLU (the pre-activation bounds the warm-up regularisers read); without one
the walk does no extra work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from ..config import RadiusConfig
from ..radius import is_perturbed, radius_of, radius_per_output
from . import graph_rules  # noqa: F401  (files the function kinds' rules in the table)
from .graph import STATIC, Graph, Node, Ref, require, trace
from .interval import Interval, ParamInterval, input_ball
from .rules import RULES, Call


def layers_of(model: nn.Module) -> nn.Sequential:
    """Returns the flat layer sequence of `model` (its `.layers`, or the model itself).

    Not used by the bounds, which trace any module (approp.bounds.graph); kept for callers that
    need a chain network's layer list (approp.certify.sources).
    """
    layers = getattr(model, "layers", model)
    if not isinstance(layers, nn.Sequential):
        raise TypeError(
            f"{type(model).__name__} is not a flat network: interval bounds need an "
            "nn.Sequential or a module with a `.layers` nn.Sequential"
        )
    return layers


@dataclass
class BoundsRecord:
    """The intervals one propagation passed through, kept for the warm-up regularisers.

    first: the interval entering the first layer with parameters (after the
        model's own normalisation: the input box on the scale the network sees).
    pre_relu: the interval entering each ReLU, in layer order (pre-activation bounds).
    The intervals are part of the autograd graph: a loss on them trains the network.
    """

    first: Interval | None = None
    pre_relu: list[Interval] = field(default_factory=list)

    def see(self, node: Node, x: Interval) -> None:
        """Files x, the interval entering graph node `node`, where the record wants it."""
        if node.is_relu:
            self.pre_relu.append(x)
        elif (
            self.first is None
            and node.module is not None
            and next(node.module.parameters(recurse=False), None) is not None
        ):
            self.first = x


def layer_params(layer: nn.Module, radius: RadiusConfig | None, lam: float | None = None) -> dict[str, ParamInterval]:
    """Returns the boxes of a layer's own parameters, {local name: ParamInterval}."""
    lam = (radius.lam if lam is None else lam) if radius is not None else 0.0
    boxes = {}
    for name, p in layer.named_parameters(recurse=False):
        if radius is None or lam == 0 or not is_perturbed(p, radius):
            boxes[name] = ParamInterval(p)
        elif radius.kind == "abs" and p.dim() >= 2:
            boxes[name] = ParamInterval(p, radius_of(p, radius, lam), rel=lam)
        else:
            boxes[name] = ParamInterval(p, radius_of(p, radius, lam), per_output=radius_per_output(p, radius, lam))
    return boxes


def resolve(args: Any, values: list) -> Any:
    """Returns args (nested tuples, lists, dicts) with every Ref slot replaced by its node's value."""
    return fx.node.map_aggregate(args, lambda a: values[a] if isinstance(a, Ref) else a)


def evaluate(
    graph: Graph,
    x: Interval,
    radius: RadiusConfig | None,
    lam: float | None = None,
    record: BoundsRecord | None = None,
    keep: bool = False,
    stop: int | None = None,
    on_node: Any = None,
) -> tuple[list, list[dict[str, ParamInterval]]]:
    """Returns (values, boxes): every node's interval (or shape value) and parameter boxes, node by node.

    x: the input node's interval. stop: evaluate nodes before this index only. keep: keep every
    value (the linear pass reads them all); otherwise a value is dropped after its last consumer
    (the returned list then holds the output, and the inputs of node `stop`). on_node(i, values,
    boxes): called after each node (the crown refinement of approp.bounds.linear hooks in there).
    """
    nodes = graph.nodes
    stop = len(nodes) if stop is None else stop
    values: list = [None] * len(nodes)
    boxes: list[dict[str, ParamInterval]] = [{} for _ in nodes]
    values[0] = x
    remaining = [len(n.consumers) for n in nodes]
    for i in range(1, stop):
        node = nodes[i]
        args, kwargs = resolve(node.args, values), resolve(node.kwargs, values)
        if node.static:
            values[i] = STATIC[node.key](*args, **kwargs)
        else:
            inp = values[node.bounded[0]]
            if record is not None:
                record.see(node, inp)
            boxes[i] = {} if node.module is None else layer_params(node.module, radius, lam)
            layer = node.module if node.module is not None else Call(node.key, args, kwargs)
            values[i] = RULES[node.key](layer, inp, boxes[i])
        if on_node is not None:
            on_node(i, values, boxes)
        if not keep:
            for j in set(node.inputs):
                remaining[j] -= 1
                if remaining[j] == 0 and j != graph.output:
                    values[j] = None
    return values, boxes


def propagate(
    layers: nn.Module,
    x: Interval,
    radius: RadiusConfig | None,
    lam: float | None = None,
    record: BoundsRecord | None = None,
) -> Interval:
    """Returns the interval image of `x` through the network `layers` (any traceable module) over its box.

    record: if given, collects the intervals entering the first parametrised
    layer and every ReLU on the way (no second pass).
    """
    graph = require(trace(layers))
    return evaluate(graph, x, radius, lam, record)[0][graph.output]


def interval_bounds(
    model: nn.Module,
    x: torch.Tensor,
    eps: float,
    radius: RadiusConfig | None = None,
    lam: float | None = None,
    record: BoundsRecord | None = None,
) -> Interval:
    """Returns the logit interval (B, K) over B∞(x, ε) and the parameter box.

    x: images (B, C, H, W) in [0, 1]; eps >= 0 on the pixel scale.
    radius: the box's radius function; None perturbs no parameter.
    lam: overrides radius.lam (used by the ε/λ ramp during training).
    record: collects the pre-activation intervals on the way (see BoundsRecord).
    At eps = 0 and lam = 0 the interval collapses to the forward pass.
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0; got {eps}")
    if lam is not None and lam < 0:
        raise ValueError(f"lam must be >= 0; got {lam}")
    graph = require(trace(model))  # an unsupported node is named before any work
    return evaluate(graph, input_ball(x, eps), radius, lam, record)[0][graph.output]
