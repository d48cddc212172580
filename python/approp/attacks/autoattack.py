"""AutoAttack (Croce & Hein 2020), standard version, L∞, through the `pyautoattack` package.

The standard version runs the cascade APGD-CE → APGD-T (9 targets) → FAB-T
(9 targets) → Square (5000 queries), each attack only on the points that all
earlier ones left correctly classified. The package reports only the final
result, so the cascade is driven here one attack at a time with the
package's own configured attack objects (`AutoAttack(version="standard")`
with `attacks_to_run` narrowed to one name, as the package's own
`run_standard_evaluation_individual` does). That keeps the robust accuracy
after each attack, and lets a caller save the robust mask between attacks
and resume after an interruption.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import check_eps

STANDARD_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")


@dataclass
class CascadeState:
    """Progress of one cascade: robust mask (N,) and robust accuracy after each attack done."""

    robust: torch.Tensor
    done: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        """Returns a JSON-serialisable copy (mask as a list of 0/1)."""
        return {"robust": self.robust.to(torch.uint8).tolist(), "done": dict(self.done)}

    @classmethod
    def from_json(cls, raw: dict, device: torch.device | str) -> CascadeState:
        """Returns the state saved by `to_json`, with the mask on `device`."""
        return cls(torch.tensor(raw["robust"], dtype=torch.bool, device=device), dict(raw["done"]))


@dataclass(frozen=True)
class AutoAttackResult:
    """Robust accuracy after the whole cascade and after each attack ('clean' first); robust: the
    points still correctly classified after the whole cascade, a bool mask (N,)."""

    robust_acc: float
    cascade: dict[str, float]
    n: int
    robust: torch.Tensor


def _make_adversary(model: nn.Module, eps: float, device: torch.device, seed: int):
    from pyautoattack import AutoAttack  # imported late: only this stage needs it

    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    adversary = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=seed, device=device)
    adversary.verbose = False
    return adversary


def autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    batch_size: int = 250,
    seed: int = 0,
    state: CascadeState | None = None,
    on_attack_done: Callable[[str, CascadeState], None] | None = None,
) -> AutoAttackResult:
    """Returns AutoAttack's robust accuracy on (x (N, C, H, W) in [0, 1], y (N,)) and its cascade.

    `state` resumes a cascade; `on_attack_done(name, state)` runs after each attack
    (a caller saves the state there).
    """
    check_eps(eps)
    model.eval()
    device = x.device
    n = len(y)
    if state is None:
        with torch.no_grad():
            robust = torch.cat(
                [model(xb).argmax(1) == yb for xb, yb in zip(x.split(batch_size), y.split(batch_size))]
            )  # (N,)
        state = CascadeState(robust, {"clean": robust.float().mean().item() if n else 0.0})
        if on_attack_done is not None:
            on_attack_done("clean", state)
    adversary = _make_adversary(model, eps, device, seed)
    for name in STANDARD_ATTACKS:
        if name in state.done:
            continue
        idx = state.robust.nonzero().flatten()  # indices still robust
        if len(idx) > 0 and eps > 0:
            adversary.attacks_to_run = [name]
            _, y_adv = adversary.run_standard_evaluation(x[idx], y[idx], batch_size=batch_size)
            state.robust[idx] = y_adv == y[idx]
        state.done[name] = state.robust.float().mean().item() if n else 0.0
        if on_attack_done is not None:
            on_attack_done(name, state)
    return AutoAttackResult(state.done[STANDARD_ATTACKS[-1]], dict(state.done), n, state.robust.clone())
