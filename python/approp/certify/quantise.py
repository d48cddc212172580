"""Quantisation certificates: predictions that no round-to-nearest weight quantisation can change.

Weight-only symmetric quantisation to `bits` bits (biases and activations stay float):
every weight tensor θ (C_out, …) is replaced by round(θ/s)·s, clamped to the signed grid,
with one step s per output channel or per tensor (approp.radius.quant_scale, PyTorch's
observer rule). Each weight then moves by at most s/2, so the box of radius kind "quant"
(λ = 1: |δ| ≤ s/2 per weight, slightly outward-rounded) holds the quantised network, and
every other rounding of the weights to the same grid.

A point is certified *unchanged* when the bounds over that box keep the float network's
own prediction, and certified *correct* when they keep the true label. The real quantised
network comes from PyTorch's own primitives (torch.ao.quantization observers for s,
torch.fake_quantize_per_channel_affine / _per_tensor_affine for the weights), so the
certificate can be checked against it: every certified point must keep its prediction.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver

from ..bounds.verify import Method, verified_by
from ..config import ConfigError, RadiusConfig
from ..radius import quant_levels

_SPEC = re.compile(r"^int([2-8])(?::(channel|tensor))?$")


@dataclass(frozen=True)
class QuantSpec:
    """Weight-only symmetric quantisation: bits (2 … 8), per output channel or per tensor."""

    bits: int = 8
    per_channel: bool = True

    @classmethod
    def parse(cls, text: str) -> "QuantSpec":
        """Returns the spec of 'int8', 'int4', … with an optional ':channel' (default) or ':tensor'."""
        m = _SPEC.match(text.strip())
        if m is None:
            raise ConfigError(f"quantisation must be int2 … int8, optionally ':channel' or ':tensor'; got {text!r}")
        return cls(int(m.group(1)), m.group(2) != "tensor")

    @property
    def name(self) -> str:
        """Returns e.g. 'int8:channel'."""
        return f"int{self.bits}:{'channel' if self.per_channel else 'tensor'}"

    def radius(self, lam: float = 1.0) -> RadiusConfig:
        """Returns the box of every rounding to this grid (lam = 1: half a step per weight)."""
        return RadiusConfig(kind="quant", lam=lam, bits=self.bits, per_channel=self.per_channel,
                            perturb_biases=False)


def quantise_weight(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Returns w (C_out, …) fake-quantised by PyTorch: observer step s, round to nearest, clamp, times s."""
    q_min, q_max = quant_levels(spec.bits)
    if spec.per_channel:
        obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                       quant_min=q_min, quant_max=q_max)
    else:
        obs = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=q_min, quant_max=q_max)
    obs = obs.to(w.device)
    obs(w.detach().float())
    scale, zero = obs.calculate_qparams()
    if spec.per_channel:
        return torch.fake_quantize_per_channel_affine(w.detach().float(), scale.float(), zero.int(), 0, q_min, q_max)
    return torch.fake_quantize_per_tensor_affine(w.detach().float(), scale.float().item(), int(zero.item()),
                                                 q_min, q_max)


def quantised_model(model: nn.Module, spec: QuantSpec) -> nn.Module:
    """Returns a copy of the model with every weight (parameters of ≥ 2 dims) really quantised."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for _, p in out.named_parameters():
            if p.dim() >= 2:
                p.copy_(quantise_weight(p, spec))
    return out.eval()


@torch.no_grad()
def predictions(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Returns argmax predictions (N,) of the model on x (N, C, H, W)."""
    return torch.cat([model(x[i: i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def certified_under(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, spec: QuantSpec, eps: float = 0.0,
                    method: Method = "best", batch_size: int = 250) -> torch.Tensor:
    """Returns the bool mask (N,) of points whose `labels` no rounding of the weights to the grid can change."""
    model.eval()
    radius = spec.radius()
    out = [verified_by(model, x[i: i + batch_size], labels[i: i + batch_size], eps, radius, method=method)
           for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def quant_certificate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: QuantSpec,
                      method: Method = "best", batch_size: int = 250) -> dict[str, object]:
    """Returns per point (lists of bools) and in counts: certified unchanged / correct, and what the real
    quantised network does (correct, prediction kept)."""
    pred = predictions(model, x)
    real = predictions(quantised_model(model, spec), x)
    unchanged = certified_under(model, x, pred, spec, method=method, batch_size=batch_size)
    correct = unchanged & (pred == y)  # certified correct = certified unchanged on a correct point
    return {
        "spec": spec.name, "bits": spec.bits, "per_channel": spec.per_channel, "n": len(x),
        "certified_unchanged": int(unchanged.sum()), "certified_correct": int(correct.sum()),
        "float_correct": int((pred == y).sum()), "quantised_correct": int((real == y).sum()),
        "kept": int((real == pred).sum()),
        "violations": int((unchanged & (real != pred)).sum()),  # must be 0: a certified point that changed
    }
