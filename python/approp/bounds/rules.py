"""One interval rule per layer kind, behind one contract.

A rule is ``rule(layer, x: Interval, params: dict[str, ParamInterval]) -> Interval``
and must be sound: for every parameter in the box and every input in `x`, the
layer's output lies in the returned interval. `params` holds the boxes of the
layer's own parameters by local name ("weight", "bias"). Rules are filed in one
table, KINDS (key → Kind(interval, linear)), keyed by module class or, for graph
nodes that call a function or Tensor method (approp.bounds.graph_rules), by that
function; such a rule gets a `Call` (the call's resolved arguments) as `layer` and
the first bounded argument as `x`. RULES is the table's interval column as a dict.

Low precision (bf16 autocast): affine rules need nothing special (their
products accumulate in fp32 and every radius term is a sum of nonnegative
terms), but a rule that goes through the ends would round the radius away
(see approp.bounds.interval). The ReLU keeps ⟨c, r⟩ of stable-active units
bit for bit, gives dead ones ⟨0, 0⟩ and unstable ones ⟨(c + r)/2, (c + r)/2⟩
(`relu_keep_radius`); max-pool takes the fp32 ends that Interval forms from
a bf16 ⟨c, r⟩ and leaves its output in fp32 for the next affine rule;
Normalize and Flatten keep whichever form they get. fp32 intervals take the
end-based paths, which move less memory. What the precise ReLU and max-pool
cost an APP step in bf16: docs/results/bf16/README.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError
from ..layers import Normalize
from .interval import Interval, ParamInterval, is_low_precision

Rule = Callable[[Any, Interval, dict[str, ParamInterval]], Interval]


@dataclass
class Kind:
    """The rules of one node kind: interval (forward) and linear (backward); None where it has none."""

    interval: Any = None
    linear: Any = None


# The one table of node kinds, keyed by module type (call_module nodes) or by the function or
# Tensor method a call_function / call_method node targets. RULES and BACKWARD_RULES are its columns.
KINDS: dict[Any, Kind] = {}


class UnsupportedLayerError(TypeError, ConfigError):
    """A layer or graph node for which no rule is registered (a TypeError and a ConfigError)."""


class Column(MutableMapping):
    """One column of KINDS as a dict {key: rule}: only the keys whose rule in that column is set."""

    def __init__(self, column: str) -> None:
        self.column = column

    def __getitem__(self, key: Any) -> Any:
        rule = getattr(KINDS[key], self.column) if key in KINDS else None
        if rule is None:
            raise KeyError(key)
        return rule

    def __setitem__(self, key: Any, rule: Any) -> None:
        setattr(KINDS.setdefault(key, Kind()), self.column, rule)

    def __delitem__(self, key: Any) -> None:
        self[key]  # KeyError where unset
        setattr(KINDS[key], self.column, None)

    def __iter__(self) -> Iterator[Any]:
        return (key for key, kind in list(KINDS.items()) if getattr(kind, self.column) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


RULES = Column("interval")


def kind_name(key: Any) -> str:
    """Returns how messages name a node kind: a module class's name, or the function's dotted name."""
    if isinstance(key, type):
        return key.__name__
    if key in DISPLAY:
        return DISPLAY[key]
    if isinstance(key, str):  # a Tensor method that torch.Tensor does not have
        return f"Tensor.{key}"
    if getattr(key, "__qualname__", "").startswith("TensorBase."):
        return "Tensor." + key.__name__
    name = getattr(key, "__name__", str(key))
    module = getattr(key, "__module__", None)
    return f"{module}.{name}" if module else name


@dataclass
class Call:
    """What a function kind's rules get in place of a module: the call's arguments, values resolved.

    args/kwargs hold Intervals where the graph passes bounded values, numbers (or shapes) elsewhere.
    """

    fn: Any
    args: tuple
    kwargs: dict


# Display names of function and method kinds ("operator.add", "Tensor.view"), filed by their rules.
DISPLAY: dict[Any, str] = {}


def register_in(table: MutableMapping) -> Callable[..., Callable[[Any], Any]]:
    """Returns a `register(*kinds)` decorator that files a rule under each kind (layer class or function) in `table`."""

    def register(*kinds: Any) -> Callable[[Any], Any]:
        def deco(rule: Any) -> Any:
            for kind in kinds:
                table[kind] = rule
            return rule

        return deco

    return register


def find_rule(table: Mapping, layer: nn.Module, index: int | str, what: str) -> Any:
    """Returns the rule in `table` for `layer`'s exact class, or raises UnsupportedLayerError naming it."""
    rule = table.get(type(layer))
    if rule is None:
        supported = ", ".join(sorted(kind_name(k) for k in table))
        raise UnsupportedLayerError(f"no {what} for layer {index} ({type(layer).__name__}); supported: {supported}")
    return rule


register = register_in(RULES)  # register(*kinds): decorator for interval rules


def rule_for(layer: nn.Module, index: int | str = "?") -> Rule:
    """Returns the interval rule for `layer`'s exact class, or raises UnsupportedLayerError naming it."""
    return find_rule(RULES, layer, index, "interval rule")


def affine(x: Interval, w: ParamInterval, b: ParamInterval | None, op: Callable[..., torch.Tensor]) -> Interval:
    """Returns the midpoint-radius image of x under y = op(x, W, b) with W, b in boxes.

    y_c = op(x_c, W_c) + b_c
    y_r = |W_c|·x_r + W_r·(|x_c| + x_r) + b_r = op(x_r, |W_c| + W_r) + op(|x_c|, W_r) + b_r
    The two radius products share one call on inputs and weights stacked along
    the input-feature axis (dim 1 for both conv and linear). For W_r = λ|W_c|
    they fold into one: op((1+λ)·x_r + λ|x_c|, |W_c|). Where W_r is one value
    ρ_o per output unit (`const`, `quant`: w.per_output), op(|x_c|, W_r) is
    ρ_o times the sum of |x_c| over output o's window, the same window sum for
    every output channel: op(Σ_channels |x_c|, 1) with a one-channel all-ones
    weight, instead of a second full product (op sums over the input-feature
    axis and its window, as linear and conv with groups=1 do). Biases go into the
    calls, and the ½ of an interval held by its ends goes into the weights,
    so that activations are touched as few times as possible.
    """
    s, h = (x.lower + x.upper, 0.5) if x.has_bounds else (x.center, 1.0)  # center = h·s, radius = h·d
    s_abs = s if x.nonneg else s.abs()  # (B, C, *): a ReLU's output needs no abs
    bc = None if b is None else b.center
    br = None if b is None else b.radius
    yc = op(s, w.center * h if h != 1.0 else w.center, bc)
    w_abs = w.center.abs()
    if w.radius is None:
        yr = op(_diff(x), w_abs * h, br)
    elif w.rel is not None:
        lam = w.rel
        yr = op(_diff(x, s_abs, lam / (1 + lam)), w_abs * ((1 + lam) * h), br)
    elif w.per_output is not None:
        yr = op(_diff(x), (w_abs + w.radius) * h, br)
        ones = w.center.new_ones((1, 1, *w.center.shape[2:]))
        window = op(s_abs.sum(1, keepdim=True), ones, None)  # (B, 1, *out): Σ|x_c| over each output's inputs
        rho = (w.per_output * h).reshape(1, -1, *(1,) * (yr.dim() - 2)).to(yr.dtype)  # (1, C_out or 1, 1, …)
        yr = torch.addcmul(yr, window, rho)
    else:
        stacked_w = torch.cat([(w_abs + w.radius) * h, w.radius * h], dim=1)
        yr = op(_diff_stacked(x, s_abs), stacked_w, br)
    return Interval(yc, yr)


def _diff(x: Interval, plus: torch.Tensor | None = None, alpha: float = 1.0) -> torch.Tensor:
    """Returns d + alpha·plus, d = upper − lower (ends) or the radius; with `plus`, one new tensor."""
    if not x.has_bounds:
        return x.radius if plus is None else torch.add(x.radius, plus, alpha=alpha)
    d = x.upper - x.lower
    return d if plus is None else d.add_(plus, alpha=alpha)  # in place: addition's backward needs no input


def _diff_stacked(x: Interval, s_abs: torch.Tensor) -> torch.Tensor:
    """Returns cat([d, s_abs], dim=1), d as in _diff; from the ends d is formed inside the stack."""
    if not x.has_bounds:
        return torch.cat([x.radius, s_abs], dim=1)
    stacked = torch.cat([x.upper, s_abs], dim=1)
    stacked[:, : x.shape[1]].sub_(x.lower)  # upper − lower, in place: subtraction's backward needs no input
    return stacked


@register(nn.Linear)
def linear_rule(layer: nn.Linear, x: Interval, params: dict[str, ParamInterval]) -> Interval:
    return affine(x, params["weight"], params.get("bias"), F.linear)


@register(nn.Conv2d)
def conv2d_rule(layer: nn.Conv2d, x: Interval, params: dict[str, ParamInterval]) -> Interval:
    if layer.groups != 1 or layer.padding_mode != "zeros":
        raise UnsupportedLayerError(
            f"Conv2d with groups={layer.groups}, padding_mode={layer.padding_mode!r} "
            "has no interval rule (only groups=1 with zero padding)"
        )

    def op(inp: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(inp, weight, bias, layer.stride, layer.padding, layer.dilation)

    return affine(x, params["weight"], params.get("bias"), op)


@register(nn.ReLU)
def relu_rule(layer: nn.ReLU, x: Interval, params: dict[str, ParamInterval]) -> Interval:
    if x.has_bounds:
        return Interval.from_bounds(F.relu(x.lower), F.relu(x.upper), nonneg=True)
    if is_low_precision(x.center):
        return relu_keep_radius(x.center, x.radius)
    # The ends are fresh tensors here, so ReLU may run in place (autograd allows it:
    # subtraction's backward does not need its output): no extra allocation per end.
    lower = torch.sub(x.center, x.radius).relu_()
    upper = torch.add(x.center, x.radius).relu_()
    return Interval.from_bounds(lower, upper, nonneg=True)


def relu_keep_radius(c: torch.Tensor, r: torch.Tensor) -> Interval:
    """Returns relu over ⟨c, r⟩ in midpoint-radius form, never forming c − r.

    With q = relu(r − c): ⟨relu(c + q/2), relu(r − q/2)⟩. Stable-active units (c >= r)
    have q = 0 exactly and keep ⟨c, r⟩ bit for bit; unstable ones (|c| < r) get
    [0, c + r] = ⟨(c + r)/2, (c + r)/2⟩ from r − c, which has no cancellation there;
    dead ones (c <= −r) get ⟨0, 0⟩. Used for 16-bit intervals, where the ends c ± r
    would lose the radius. Only subtraction, addition and ReLU, because on a CPU bf16
    `where`/`minimum` (and their backward) are slower than this whole rule (docs/benchmarks.md).
    """
    q = (r - c).relu_()  # (same shape as c): 0 where stable-active
    return Interval(torch.add(c, q, alpha=0.5).relu_(), torch.sub(r, q, alpha=0.5).relu_(), nonneg=True)


@register(nn.MaxPool2d)
def maxpool_rule(layer: nn.MaxPool2d, x: Interval, params: dict[str, ParamInterval]) -> Interval:
    return Interval.from_bounds(layer(x.lower), layer(x.upper), x.nonneg)  # a maximum keeps the sign


@register(nn.Flatten)
def flatten_rule(layer: nn.Flatten, x: Interval, params: dict[str, ParamInterval]) -> Interval:
    return x.map_linear(layer)


@register(Normalize)
def normalize_rule(layer: Normalize, x: Interval, params: dict[str, ParamInterval]) -> Interval:
    # A positive diagonal affine map: monotone on the ends, or center maps and radius scales.
    if x.has_bounds:
        return x.map_monotone(layer)
    return Interval(layer(x.center), x.radius / layer.std)
