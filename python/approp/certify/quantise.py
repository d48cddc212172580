"""Quantisation certificates: predictions that no round-to-nearest weight quantisation can change.

Weight-only symmetric quantisation to `bits` bits (biases and activations stay float):
every weight tensor θ (C_out, …) is replaced by round(θ/s)·s, clamped to the signed grid,
with one step s per output channel or per tensor (approp.radius.quant_scale). Two grids,
named in every spec and result:

- deployment (`int8`, the default): integers in [−127, 127], s = max|θ|/127 — TensorRT,
  ONNX Runtime's symmetric weights, TFLite/LiteRT and the bit-flip literature;
- PyTorch's observer (`int8:torch`): integers in [−128, 127], s = max|θ|/127.5.

`:tensor` takes one step per tensor instead of one per output channel; int2 … int8 alike.
Each weight then moves by at most s/2, so the closed box of radius kind "quant" (λ = 1:
|δ| ≤ s/2 per weight, slightly outward-rounded) holds the quantised network whatever rule
breaks ties (half to even as TensorRT and torch.round, half away from zero as C's round),
and every other rounding of the weights to the same grid.

A point is certified *unchanged* when the bounds over that box keep the float network's
own prediction, and certified *correct* when they keep the true label. The real quantised
network comes from PyTorch's own primitives (torch.ao.quantization observers with the
grid's quant_min/quant_max for s, torch.fake_quantize_per_channel_affine /
_per_tensor_affine for the weights), so the certificate can be checked against it: every
certified point must keep its prediction (approp.certify.deploy checks it in ONNX Runtime
and against a quantiser written without torch.ao).
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

_SPEC = re.compile(r"^int([2-8])((?::(?:channel|tensor|torch|deploy))*)$")


@dataclass(frozen=True)
class QuantSpec:
    """Weight-only symmetric quantisation: bits (2 … 8), per output channel or per tensor, and the grid
    (restricted: the deployment grid [−(2^(bits−1)−1), 2^(bits−1)−1]; else PyTorch's [−2^(bits−1), 2^(bits−1)−1])."""

    bits: int = 8
    per_channel: bool = True
    restricted: bool = True

    @classmethod
    def parse(cls, text: str) -> QuantSpec:
        """Returns the spec of 'int8', 'int4', … with optional ':channel' (default) or ':tensor' and ':deploy'
        (default) or ':torch', in any order."""
        m = _SPEC.match(text.strip())
        opts = m.group(2).split(":")[1:] if m else []
        if (
            m is None
            or len(set(opts)) < len(opts)
            or {"channel", "tensor"} <= set(opts)
            or {"torch", "deploy"} <= set(opts)
        ):
            raise ConfigError(
                "quantisation must be int2 … int8, optionally ':tensor' (one step per tensor; "
                f"default per channel) and ':torch' (PyTorch's grid; default the deployment grid); "
                f"got {text!r}"
            )
        return cls(int(m.group(1)), "tensor" not in opts, "torch" not in opts)

    @property
    def name(self) -> str:
        """Returns the canonical name: 'int8' (deployment grid, per channel), 'int8:tensor', 'int8:torch', …"""
        return f"int{self.bits}" + ("" if self.per_channel else ":tensor") + ("" if self.restricted else ":torch")

    @property
    def levels(self) -> tuple[int, int]:
        """Returns (q_min, q_max) of the integer grid."""
        return quant_levels(self.bits, self.restricted)

    def radius(self, lam: float = 1.0) -> RadiusConfig:
        """Returns the box of every rounding to this grid (lam = 1: half a step per weight)."""
        return RadiusConfig(
            kind="quant",
            lam=lam,
            bits=self.bits,
            per_channel=self.per_channel,
            restricted=True if self.restricted else None,
            perturb_biases=False,
        )


def result_label(entry: dict[str, object]) -> str:
    """Returns the canonical spec name of a quant_certificate result; results written before the grids were
    named ('int8:channel', no 'grid' key) were PyTorch's grid and come back as 'int8:torch'."""
    if "grid" in entry:
        return str(entry["spec"])
    bits, _, layout = str(entry["spec"]).partition(":")
    return bits + (":tensor" if layout == "tensor" else "") + ":torch"


def quantise_weight(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Returns w (C_out, …) fake-quantised by PyTorch: observer step s, round to nearest, clamp, times s."""
    q_min, q_max = spec.levels
    if spec.per_channel:
        obs = PerChannelMinMaxObserver(
            ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=q_min, quant_max=q_max
        )
    else:
        obs = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=q_min, quant_max=q_max)
    obs = obs.to(w.device)
    obs(w.detach().float())
    scale, zero = obs.calculate_qparams()
    if spec.per_channel:
        return torch.fake_quantize_per_channel_affine(w.detach().float(), scale.float(), zero.int(), 0, q_min, q_max)
    return torch.fake_quantize_per_tensor_affine(
        w.detach().float(), scale.float().item(), int(zero.item()), q_min, q_max
    )


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
    return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def certified_under(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    spec: QuantSpec,
    eps: float = 0.0,
    method: Method = "best",
    batch_size: int = 250,
) -> torch.Tensor:
    """Returns the bool mask (N,) of points whose `labels` no rounding of the weights to the grid can change."""
    model.eval()
    radius = spec.radius()
    out = [
        verified_by(model, x[i : i + batch_size], labels[i : i + batch_size], eps, radius, method=method)
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out)


def quant_certificate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: QuantSpec, method: Method = "best", batch_size: int = 250
) -> dict[str, object]:
    """Returns per point (lists of bools) and in counts: certified unchanged / correct, and what the real
    quantised network does (correct, prediction kept)."""
    pred = predictions(model, x)
    real = predictions(quantised_model(model, spec), x)
    unchanged = certified_under(model, x, pred, spec, method=method, batch_size=batch_size)
    correct = unchanged & (pred == y)  # certified correct = certified unchanged on a correct point
    return {
        "spec": spec.name,
        "bits": spec.bits,
        "per_channel": spec.per_channel,
        "grid": list(spec.levels),
        "n": len(x),
        "certified_unchanged": int(unchanged.sum()),
        "certified_correct": int(correct.sum()),
        "float_correct": int((pred == y).sum()),
        "quantised_correct": int((real == y).sum()),
        "kept": int((real == pred).sum()),
        "violations": int((unchanged & (real != pred)).sum()),  # must be 0: a certified point that changed
        "certified": unchanged.tolist(),  # per point: certified unchanged
    }
