"""Bit errors in int8 weights: the stored network, random bit flips, and the progressive bit-flip attack.

The stored network (Int8Store) holds every weight tensor (parameters of ≥ 2 dims) as int8
integers in two's complement on the deployment grid (per output channel, [−127, 127],
s = max|w|/127; approp.certify.deploy.integer_weights, ties to even) with its float steps;
biases and BatchNorm stay float, as in weight-only deployment. A copy of the float model
runs whatever integers are stored (weights q·s), so everything here needs forward passes
and gradients only and works for any nn.Module.

- random_flips: each of the 8 stored bits of every weight flips independently with
  probability p (the low-voltage memory fault model); a flipped sign bit moves q by ∓128.
- bit_flip_attack: Rakin, He, Fan 2019 ("Bit-Flip Attack", ICCV), progressive bit search: per
  step, in every layer the bit whose flip raises the attack loss most to first order
  (∂L/∂w · s · Δq, Δq = ±2^i, ∓128 for the sign bit) is flipped on trial and the loss
  evaluated; the layer whose trial raised the loss most keeps its flip. Repeat.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..certify.deploy import integer_weights
from ..certify.quantise import QuantSpec

DEPLOYED_INT8 = QuantSpec()  # int8, per output channel, the deployment grid [−127, 127]

BIT_VALUES = torch.tensor([1, 2, 4, 8, 16, 32, 64, -128], dtype=torch.float32)  # two's complement bit weights


@dataclass
class StoredLayer:
    """One weight tensor as stored: integers q (int8, shape of the weight), steps s broadcastable to it."""

    name: str
    param: nn.Parameter
    q: torch.Tensor
    scale: torch.Tensor


class Int8Store:
    """Returns nothing; holds a float copy of `model` whose weights are the stored int8 integers times their steps."""

    def __init__(self, model: nn.Module, spec: QuantSpec = DEPLOYED_INT8) -> None:
        self.model = copy.deepcopy(model).eval()
        self.spec = spec
        self.layers: list[StoredLayer] = []
        for name, p in self.model.named_parameters():
            p.requires_grad_(False)
            if p.dim() >= 2:
                q, s = integer_weights(p, spec)
                view = s.view(-1, *([1] * (p.dim() - 1))) if spec.per_channel else s
                self.layers.append(StoredLayer(name, p, q, view.to(p.device)))
        if not self.layers:
            raise ValueError("the model has no weight tensor (no parameter with 2 or more dimensions)")
        self.load([layer.q for layer in self.layers])

    def stored(self) -> list[torch.Tensor]:
        """Returns the stored integers of every layer (int8 tensors, not copies)."""
        return [layer.q for layer in self.layers]

    def load(self, qs: list[torch.Tensor]) -> None:
        """Stores the integers qs (one int8 tensor per layer) and writes q·s into the float model's weights."""
        with torch.no_grad():
            for layer, q in zip(self.layers, qs):
                layer.q = q
                layer.param.copy_(q.float() * layer.scale)

    def bits(self) -> int:
        """Returns the number of stored weight bits (8 per weight)."""
        return 8 * sum(layer.q.numel() for layer in self.layers)


def flip_bits(q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Returns q (int8) with the bits set in mask (uint8, same shape) flipped in its two's complement storage."""
    return torch.bitwise_xor(q.view(torch.uint8), mask).view(torch.int8)


def _distinct_positions(total: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """Returns k distinct positions (long) uniform among the k-subsets of range(total).

    The first k distinct values of an i.i.d. uniform sequence form a uniform k-subset (by symmetry);
    each batch draws only as many as are still missing, so it never overshoots.
    """
    chosen = torch.zeros(0, dtype=torch.long)
    while len(chosen) < k:
        new = torch.randint(total, (k - len(chosen),), generator=gen)
        chosen = torch.cat([chosen, new[~torch.isin(new, chosen)].unique()])
    return chosen


def random_flips(qs: list[torch.Tensor], p: float, gen: torch.Generator) -> tuple[list[torch.Tensor], int]:
    """Returns (the integers with every stored bit flipped independently with probability p, bits flipped).

    Independent flips of B bits with probability p each are exactly: K ~ Binomial(B, p) flips at a
    uniformly random K-subset of the bits; drawn that way the cost scales with K, not B.
    """
    sizes = [q.numel() for q in qs]
    total = 8 * sum(sizes)
    k = int(
        torch.binomial(
            torch.tensor(float(total), dtype=torch.float64), torch.tensor(p, dtype=torch.float64), generator=gen
        )
    )
    positions = _distinct_positions(total, k, gen)
    bit, flat = positions // sum(sizes), positions % sum(sizes)  # bit plane, weight index over all layers
    out, start = [], 0
    for q, size in zip(qs, sizes):
        inside = (flat >= start) & (flat < start + size)
        mask = torch.zeros(size, dtype=torch.int32)
        mask.index_put_((flat[inside] - start,), (1 << bit[inside]).to(torch.int32), accumulate=True)
        out.append(flip_bits(q, mask.to(torch.uint8).view(q.shape).to(q.device)))
        start += size
    return out, k


@torch.no_grad()
def margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Returns z_y − max_{j≠y} z_j (N,) of the model on x (N, …) with labels y (N,); ≤ 0 is misclassified."""
    out = []
    for i in range(0, len(x), batch_size):
        z = model(x[i : i + batch_size]).float()
        zy = z.gather(1, y[i : i + batch_size, None]).squeeze(1)
        other = z.scatter(1, y[i : i + batch_size, None], float("-inf")).amax(1)
        out.append(zy - other)
    return torch.cat(out) if out else torch.zeros(0)


def _best_bit(q: torch.Tensor, grad: torch.Tensor, scale: torch.Tensor) -> tuple[float, int, int]:
    """Returns (first-order loss gain, flat index, bit) of the single bit flip of q that raises the loss most."""
    u = q.view(torch.uint8).to(torch.int32)
    bits = torch.stack([(u >> i) & 1 for i in range(8)])  # (8, *q.shape): the stored bits
    delta_q = (1 - 2 * bits).float() * BIT_VALUES.view(8, *([1] * q.dim())).to(q.device)
    gain = (grad * scale).unsqueeze(0) * delta_q  # (8, *q.shape): ∂L/∂w · Δw
    best = int(gain.flatten().argmax())
    bit, index = divmod(best, q.numel())
    return float(gain.flatten()[best]), index, bit


def _flipped(q: torch.Tensor, index: int, bit: int) -> torch.Tensor:
    """Returns a copy of q with one stored bit flipped (index into the flattened tensor)."""
    mask = torch.zeros(q.numel(), dtype=torch.uint8, device=q.device)
    mask[index] = 1 << bit
    return flip_bits(q, mask.view(q.shape))


def bit_flip_attack(
    store: Int8Store, x: torch.Tensor, y: torch.Tensor, max_flips: int, done: Callable[[Int8Store], bool]
) -> list[tuple[str, int, int]]:
    """Returns the flips (layer name, flat index, bit) of the progressive bit search on (x, y), in order.

    Stops after the flip at which done(store) is true, or at max_flips; the store keeps the flips
    (reload store.stored() from a copy to undo them).
    """
    flips: list[tuple[str, int, int]] = []
    while len(flips) < max_flips and not done(store):
        params = [layer.param for layer in store.layers]
        for p in params:
            p.requires_grad_(True)
        loss = F.cross_entropy(store.model(x), y)
        grads = torch.autograd.grad(loss, params)
        for p in params:
            p.requires_grad_(False)
        qs = store.stored()
        best = (-float("inf"), -1, 0, 0)  # (trial loss, layer, index, bit)
        for li, (layer, g) in enumerate(zip(store.layers, grads)):
            gain, index, bit = _best_bit(layer.q, g, layer.scale)
            if gain <= 0:
                continue
            trial = list(qs)
            trial[li] = _flipped(layer.q, index, bit)
            store.load(trial)
            with torch.no_grad():
                trial_loss = float(F.cross_entropy(store.model(x), y))
            store.load(qs)
            if trial_loss > best[0]:
                best = (trial_loss, li, index, bit)
        if best[1] < 0:  # no bit raises the loss to first order: the search is stuck
            break
        _, li, index, bit = best
        qs = list(qs)
        qs[li] = _flipped(qs[li], index, bit)
        store.load(qs)
        flips.append((store.layers[li].name, index, bit))
    return flips
