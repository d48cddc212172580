"""Interval propagation through a network, layer by layer.

`interval_bounds(model, x, eps, radius)` returns an Interval holding lower
and upper logit bounds valid for every parameter vector in the box
B∞(θ, r(θ)) and every input in B∞(x, ε) ∩ [0, 1].

A `BoundsRecord` passed as `record` collects, on the same pass, the interval
entering the first layer with parameters and the interval entering every
ReLU (the pre-activation bounds the warm-up regularisers read); without one
the walk does no extra work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import RadiusConfig
from ..radius import is_perturbed, radius_of
from .interval import Interval, ParamInterval, input_ball
from .rules import rule_for


def layers_of(model: nn.Module) -> nn.Sequential:
    """Returns the flat layer sequence of `model` (its `.layers`, or the model itself)."""
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

    def see(self, layer: nn.Module, x: Interval) -> None:
        """Files x, the interval entering `layer`, where the record wants it."""
        if isinstance(layer, nn.ReLU):
            self.pre_relu.append(x)
        elif self.first is None and next(layer.parameters(recurse=False), None) is not None:
            self.first = x


def layer_params(
    layer: nn.Module, radius: RadiusConfig | None, lam: float | None = None
) -> dict[str, ParamInterval]:
    """Returns the boxes of a layer's own parameters, {local name: ParamInterval}."""
    lam = (radius.lam if lam is None else lam) if radius is not None else 0.0
    boxes = {}
    for name, p in layer.named_parameters(recurse=False):
        if radius is None or lam == 0 or not is_perturbed(p, radius):
            boxes[name] = ParamInterval(p)
        elif radius.kind == "abs" and p.dim() >= 2:
            boxes[name] = ParamInterval(p, radius_of(p, radius, lam), rel=lam)
        else:
            boxes[name] = ParamInterval(p, radius_of(p, radius, lam))
    return boxes


def propagate(
    layers: nn.Sequential,
    x: Interval,
    radius: RadiusConfig | None,
    lam: float | None = None,
    record: BoundsRecord | None = None,
) -> Interval:
    """Returns the interval image of `x` through `layers` over their parameter box.

    record: if given, collects the intervals entering the first parametrised
    layer and every ReLU on the way (no second pass).
    """
    for index, layer in enumerate(layers):
        rule = rule_for(layer, index)
        if record is not None:
            record.see(layer, x)
        x = rule(layer, x, layer_params(layer, radius, lam))
    return x


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
    return propagate(layers_of(model), input_ball(x, eps), radius, lam, record)
