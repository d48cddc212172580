"""Intervals in midpoint-radius form (Rump): ⟨c, r⟩ = [c - r, c + r], r >= 0."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Interval:
    """A box of tensors: center and radius of the same shape, radius >= 0."""

    center: torch.Tensor
    radius: torch.Tensor

    @property
    def lower(self) -> torch.Tensor:
        return self.center - self.radius

    @property
    def upper(self) -> torch.Tensor:
        return self.center + self.radius

    @classmethod
    def from_bounds(cls, lower: torch.Tensor, upper: torch.Tensor) -> "Interval":
        """Returns the interval [lower, upper] in midpoint-radius form."""
        return cls((upper + lower) / 2, (upper - lower) / 2)

    def map_monotone(self, fn) -> "Interval":
        """Returns fn applied to both ends; sound for any elementwise nondecreasing fn."""
        return Interval.from_bounds(fn(self.lower), fn(self.upper))


@dataclass
class ParamInterval:
    """A parameter's box ⟨center, radius⟩.

    radius is None when the parameter is not perturbed. `rel` is set when the
    radius is exactly rel·|center| (the `abs` kind), which lets affine rules
    use two products instead of three.
    """

    center: torch.Tensor
    radius: torch.Tensor | None = None
    rel: float | None = None


def input_ball(x: torch.Tensor, eps: float) -> Interval:
    """Returns B∞(x, ε) ∩ [0, 1] for images x in [0, 1] (x is clipped first)."""
    x = x.clamp(0.0, 1.0)
    if eps == 0:
        return Interval(x, torch.zeros_like(x))
    return Interval.from_bounds((x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0))
