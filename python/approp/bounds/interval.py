"""Intervals of tensors, held in whichever form the last rule produced.

Affine rules compute in midpoint-radius form (Rump): ⟨c, r⟩ = [c − r, c + r];
monotone rules (ReLU, max-pool) compute on the ends [lower, upper]. An
Interval stores the form it was built from and derives the other on first
use (then caches it), so a chain affine → ReLU → pool → affine converts once
per layer instead of after every rule: on a CPU the bound pass is bound by
memory traffic of these elementwise conversions, not by the convolutions.

Low precision (bf16 autocast in training). With 8 bits of mantissa, c ± r for
c ≈ 1, r ≈ 0.01 rounds away about half of r, and the radius recovered from
such ends, (upper − lower)/2, is off by as much. So the ends of a
low-precision ⟨c, r⟩ are formed in fp32 (where c − r of two bf16 numbers is
exact or nearly so), and the rules that would go through the ends keep the
midpoint-radius form wherever the arithmetic allows (approp.bounds.rules).
fp32 intervals take exactly the paths they always took: the precision-keeping
forms cost memory traffic there and gain nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..precision import LOW_PRECISION


def is_low_precision(t: torch.Tensor) -> bool:
    """Returns whether t is a 16-bit float (its ends c ± r would lose the radius)."""
    return t.dtype in LOW_PRECISION


class Interval:
    """A box of tensors of one shape: ⟨center, radius⟩ or [lower, upper], radius >= 0."""

    __slots__ = ("_center", "_radius", "_lower", "_upper", "nonneg")

    def __init__(self, center: torch.Tensor, radius: torch.Tensor, nonneg: bool = False) -> None:
        self._center, self._radius = center, radius
        self._lower = self._upper = None
        self.nonneg = nonneg  # True only where the lower end is known to be >= 0 (a ReLU's output)

    @classmethod
    def from_bounds(cls, lower: torch.Tensor, upper: torch.Tensor, nonneg: bool = False) -> Interval:
        """Returns the interval [lower, upper] (lower <= upper elementwise); nonneg: lower >= 0 is known."""
        iv = cls.__new__(cls)
        iv._center = iv._radius = None
        iv._lower, iv._upper = lower, upper
        iv.nonneg = nonneg
        return iv

    @property
    def has_bounds(self) -> bool:
        """True when the ends are stored (not derived from center and radius)."""
        return self._lower is not None

    @property
    def shape(self) -> torch.Size:
        """Returns the shape of the tensors the interval bounds."""
        return (self._lower if self._center is None else self._center).shape

    @property
    def center(self) -> torch.Tensor:
        if self._center is None:
            self._center = (self._lower + self._upper) * 0.5
        return self._center

    @property
    def radius(self) -> torch.Tensor:
        if self._radius is None:
            self._radius = (self._upper - self._lower) * 0.5
        return self._radius

    @property
    def lower(self) -> torch.Tensor:
        """Returns the lower end; from a low-precision ⟨c, r⟩ it is formed (and kept) in fp32."""
        if self._lower is None:
            c, r = self._fp32_form()
            self._lower = c - r
        return self._lower

    @property
    def upper(self) -> torch.Tensor:
        """Returns the upper end; from a low-precision ⟨c, r⟩ it is formed (and kept) in fp32."""
        if self._upper is None:
            c, r = self._fp32_form()
            self._upper = c + r
        return self._upper

    def _fp32_form(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (center, radius), upcast to fp32 when they are 16-bit floats."""
        if is_low_precision(self._center):
            return self._center.float(), self._radius.float()
        return self._center, self._radius

    def map_monotone(self, fn) -> Interval:
        """Returns fn applied to both ends; sound for any elementwise nondecreasing fn."""
        return Interval.from_bounds(fn(self.lower), fn(self.upper))

    def map_linear(self, fn) -> Interval:
        """Returns the image under a linear map that keeps each coordinate (reshape, permute)."""
        if self.has_bounds:
            return Interval.from_bounds(fn(self._lower), fn(self._upper), self.nonneg)
        return Interval(fn(self._center), fn(self._radius), self.nonneg)


@dataclass
class ParamInterval:
    """A parameter's box ⟨center, radius⟩.

    radius is None when the parameter is not perturbed. `rel` is set when the
    radius is exactly rel·|center| (the `abs` kind), which lets affine rules
    use two products instead of three. `per_output` is set when every entry of
    an output unit has the same radius (the `const` kind, `quant` weights):
    radius == per_output.expand_as(center), per_output (C_out, 1, …) or (1, …, 1),
    which turns the affine rules' third product into a sum over one channel.
    """

    center: torch.Tensor
    radius: torch.Tensor | None = None
    rel: float | None = None
    per_output: torch.Tensor | None = None


def input_ball(x: torch.Tensor, eps: float) -> Interval:
    """Returns B∞(x, ε) ∩ [0, 1] for images x in [0, 1] (x is clipped first)."""
    x = x.clamp(0.0, 1.0)
    if eps == 0:
        return Interval(x, torch.zeros_like(x))
    return Interval.from_bounds((x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0))
