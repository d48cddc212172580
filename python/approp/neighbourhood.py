"""Neighbourhood robustness: networks sampled in the parameter box of the midpoint network.

APP certifies the whole box B∞(θ, r(θ)); this measures it empirically. K
networks are drawn per mode — `uniform` (every parameter uniform in its
interval) and `corner` (every parameter at its lower or upper end, with equal
chance; the vertices are where interval bounds are tight) — and each is
scored by clean and PGD accuracy on the same points. Every sample has its own
seed (seed, mode, index), so an interrupted run resumes sample by sample.
Sampled networks run in eval mode: BatchNorm's γ, β are sampled like every
parameter, its running statistics are the midpoint network's.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .attacks.pgd import pgd_correct
from .boxes import Box, SampleMode, sample_in_box
from .config import RadiusConfig
from .data import Split
from .metrics import clean_accuracy
from .precision import full_precision
from .radius import parameter_box

MODES: tuple[SampleMode, ...] = ("uniform", "corner")


@dataclass(frozen=True)
class NeighbourSample:
    """One sampled network's accuracies."""

    mode: SampleMode
    index: int
    clean_acc: float
    pgd_acc: float


def _sample_seed(seed: int, mode: SampleMode, index: int) -> int:
    return seed * 1_000_003 + 2 * index + MODES.index(mode)


def sample_network(model: nn.Module, box: Box, mode: SampleMode, index: int, seed: int = 0) -> nn.Module:
    """Returns a copy of `model` whose parameters are sample `index` of `mode` in the box."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(_sample_seed(seed, mode, index))
    params = sample_in_box(box, mode, gen)
    net = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(params[name])
    return net.eval()


@full_precision()
def neighbourhood(
    model: nn.Module,
    split: Split,
    radius: RadiusConfig,
    eps: float,
    k: int,
    lam: float | None = None,
    pgd_steps: int = 20,
    seed: int = 0,
    batch_size: int = 500,
    done: list[NeighbourSample] | None = None,
    on_sample: Callable[[NeighbourSample], None] | None = None,
) -> list[NeighbourSample]:
    """Returns k samples per mode with clean and PGD accuracy; `done` holds samples already scored."""
    box = parameter_box(model, radius, lam)
    samples = list(done or [])
    have = {(s.mode, s.index) for s in samples}
    for mode in MODES:
        for i in range(k):
            if (mode, i) in have:
                continue
            net = sample_network(model, box, mode, i, seed)
            robust = pgd_correct(net, split, eps, steps=pgd_steps, batch_size=batch_size, seed=seed)
            s = NeighbourSample(
                mode, i, clean_accuracy(net, split, batch_size), robust.float().mean().item() if len(robust) else 0.0
            )
            samples.append(s)
            if on_sample is not None:
                on_sample(s)
    return samples


def summarise(samples: list[NeighbourSample]) -> dict[str, dict[str, dict[str, float]]]:
    """Returns {mode: {"clean_acc"|"pgd_acc": {mean, min, max, spread, std}}} (spread = max − min)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for mode in MODES:
        rows = [s for s in samples if s.mode == mode]
        if not rows:
            continue
        out[mode] = {}
        for metric in ("clean_acc", "pgd_acc"):
            vals = [getattr(s, metric) for s in rows]
            out[mode][metric] = {
                "mean": statistics.fmean(vals),
                "min": min(vals),
                "max": max(vals),
                "spread": max(vals) - min(vals),
                "std": statistics.pstdev(vals),
            }
    return out


def samples_to_json(samples: list[NeighbourSample]) -> list[dict]:
    """Returns the samples as JSON-ready dicts."""
    return [asdict(s) for s in samples]


def samples_from_json(raw: list[dict]) -> list[NeighbourSample]:
    """Returns samples saved by `samples_to_json`."""
    return [NeighbourSample(**r) for r in raw]
