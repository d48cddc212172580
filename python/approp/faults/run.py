"""`approp faults`: accuracy under random bit errors, their statistical certificate, and the bit-flip attack.

    from approp.faults.run import FaultsConfig, run_faults
    result = run_faults(model, points, FaultsConfig(ber=(1e-5, 1e-4, 1e-3), bfa=True), Path("out"))

Stages, each written to OUT/faults.json atomically when it finishes (a rerun with the same
settings skips what is there; other settings start over):

- ber:p — `draws` networks with every stored weight bit flipped with probability p; the
  correctness matrix (draws × points) gives the accuracy and its crossed-bootstrap interval
  over draws and points (approp.stats.intervals.crossed_bootstrap);
- cert:p — with `statistical` > 0, per point the sequential Clopper–Pearson test of
  p(x) = P(the faulty network misclassifies x) ≤ p0 at confidence 1 − δ jointly over the
  points (approp.certify.statistical: rounds, δ split, decisions), networks drawn afresh;
- bfa — the progressive bit search (approp.faults.bits.bit_flip_attack) on the first
  `bfa_batch` points until the accuracy on all points is at most `chance`, or `bfa_cap` flips;
- bfa_points — per point (the first `bfa_points` correctly classified), the same search on that
  point alone until its prediction changes, or `bfa_point_cap` flips.

faults.md / faults.csv tabulate them and faults.png plots accuracy against p and along the attack.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..certify.sources import Points
from ..certify.statistical import PointState, StatisticalConfig, dataset_statement, decide, round_size
from ..config import ConfigError, check_positive_int
from ..rundir import atomic_write
from ..stats.intervals import crossed_bootstrap, wilson
from .bits import Int8Store, bit_flip_attack, margins, random_flips

RESULTS = "faults.json"


@dataclass(frozen=True)
class FaultsConfig:
    """Options of `approp faults` (defaults in brackets).

    ber: bit error rates p [(1e-5, 1e-4, 1e-3)]; draws: networks per p for the accuracy [20];
    statistical: most networks per point of the certificate p(x) ≤ p0 (0: skip) [0]; p0 [0.05];
    delta: jointly over the points [1e-3]; bfa: run the bit-flip attack [False]; bfa_batch: points
    the attack's loss uses [128]; bfa_cap: most flips [100]; chance: the accuracy that ends the
    attack [0.11]; bfa_points: points attacked one by one (0: skip) [100]; bfa_point_cap [20]; seed [0].
    """

    ber: tuple[float, ...] = (1e-5, 1e-4, 1e-3)
    draws: int = 20
    statistical: int = 0
    p0: float = 0.05
    delta: float = 1e-3
    bfa: bool = False
    bfa_batch: int = 128
    bfa_cap: int = 100
    chance: float = 0.11
    bfa_points: int = 100
    bfa_point_cap: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ber", tuple(float(p) for p in self.ber))
        for p in self.ber:
            if not math.isfinite(p) or not 0 < p < 1:
                raise ConfigError(f"bit error rates must be in (0, 1); got {p!r}")
        for name in ("draws", "bfa_batch", "bfa_cap", "bfa_point_cap"):
            check_positive_int(f"faults.{name}", getattr(self, name))
        for name in ("statistical", "bfa_points"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"faults.{name} must be an integer >= 0; got {getattr(self, name)!r}")
        if self.statistical:
            StatisticalConfig(samples=self.statistical, delta=self.delta, p0=self.p0)  # validates them
        if not 0 <= self.chance <= 1:
            raise ConfigError(f"faults.chance must be in [0, 1]; got {self.chance!r}")


def _write(path: Path, text: str) -> None:
    atomic_write(path, text)


def ber_accuracy(store: Int8Store, x: torch.Tensor, y: torch.Tensor, p: float, draws: int, seed: int) -> dict:
    """Returns accuracy under bit error rate p: mean over draws × points with its crossed-bootstrap interval."""
    gen = torch.Generator().manual_seed(seed)
    clean = store.stored()
    rows, flipped = [], 0
    for _ in range(draws):
        qs, k = random_flips(clean, p, gen)
        store.load(qs)
        rows.append(margins(store.model, x, y) > 0)
        flipped += k
    store.load(clean)
    matrix = torch.stack(rows).double()  # (draws, N): 1 where the faulty network is correct
    lower, upper = crossed_bootstrap(matrix, seed=seed)
    per_draw = matrix.mean(1)
    return {
        "p": p,
        "draws": draws,
        "n": len(y),
        "acc": matrix.mean().item(),
        "lower": lower,
        "upper": upper,
        "acc_min_draw": per_draw.min().item(),
        "bits_flipped_mean": flipped / draws,
    }


def ber_certificate(store: Int8Store, x: torch.Tensor, y: torch.Tensor, p: float, cfg: FaultsConfig) -> dict:
    """Returns the sequential Clopper–Pearson certificates p(x) ≤ p0 under bit error rate p (see the module)."""
    scfg = StatisticalConfig(samples=cfg.statistical, delta=cfg.delta, p0=cfg.p0, seed=cfg.seed)
    points = [PointState() for _ in range(len(y))]
    delta_point = scfg.delta / max(len(points), 1)
    clean, k = store.stored(), 0
    while any(pt.open(scfg.samples) for pt in points):
        k += 1
        idx = [i for i, pt in enumerate(points) if pt.open(scfg.samples)]
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + k)
        draws = min(round_size(scfg, k), scfg.samples - points[idx[0]].samples)
        for _ in range(draws):  # one faulty network serves every open point (each point's draws stay i.i.d.)
            store.load(random_flips(clean, p, gen)[0])
            m = margins(store.model, x[idx], y[idx])
            for j, i in enumerate(idx):
                points[i].samples += 1
                points[i].failures += int(m[j] <= 0)
                points[i].min_margin = min(points[i].min_margin, m[j].item())
        decide(points, idx, k, delta_point, scfg.p0)
    store.load(clean)
    statement = dataset_statement(points, scfg)
    return {
        "p": p,
        **{
            key: statement[key]
            for key in ("points", "delta", "p0", "certified", "refuted", "undecided", "samples_mean")
        },
        "certified_k": sum(pt.decision == "certified" for pt in points),
    }


def bfa_curve(store: Int8Store, x: torch.Tensor, y: torch.Tensor, cfg: FaultsConfig) -> dict:
    """Returns the attack's flips and the accuracy on all points before and after each flip."""
    clean = store.stored()
    xa, ya = x[: cfg.bfa_batch], y[: cfg.bfa_batch]
    accs = [float((margins(store.model, x, y) > 0).double().mean())]
    flips: list[tuple[str, int, int]] = []
    while len(flips) < cfg.bfa_cap and accs[-1] > cfg.chance:  # one flip at a time: accuracy after each
        step = bit_flip_attack(store, xa, ya, 1, lambda s: False)
        if not step:
            break
        flips += step
        accs.append(float((margins(store.model, x, y) > 0).double().mean()))
    store.load(clean)
    reached = accs[-1] <= cfg.chance
    return {
        "n": len(y),
        "batch": len(ya),
        "cap": cfg.bfa_cap,
        "chance": cfg.chance,
        "acc": accs,
        "flips": [list(f) for f in flips],
        "flips_to_chance": len(flips) if reached else None,
    }


def bfa_per_point(store: Int8Store, x: torch.Tensor, y: torch.Tensor, cfg: FaultsConfig) -> dict:
    """Returns per attacked point the flips that changed its prediction (None: not within bfa_point_cap)."""
    clean = store.stored()
    correct = (margins(store.model, x, y) > 0).nonzero().flatten()[: cfg.bfa_points].tolist()
    needed: list[int | None] = []
    for i in correct:
        xi, yi = x[i : i + 1], y[i : i + 1]
        flips = bit_flip_attack(
            store, xi, yi, cfg.bfa_point_cap, lambda s, xi=xi, yi=yi: bool(margins(s.model, xi, yi)[0] <= 0)
        )
        changed = bool(margins(store.model, xi, yi)[0] <= 0)
        needed.append(len(flips) if changed else None)
        store.load(clean)
    return {"points": correct, "cap": cfg.bfa_point_cap, "flips": needed}


def _stages(cfg: FaultsConfig) -> list[str]:
    names = [f"ber:{p:g}" for p in cfg.ber] + ([f"cert:{p:g}" for p in cfg.ber] if cfg.statistical else [])
    return names + (["bfa"] + (["bfa_points"] if cfg.bfa_points else []) if cfg.bfa else [])


def _run_stage(name: str, store: Int8Store, x: torch.Tensor, y: torch.Tensor, cfg: FaultsConfig) -> dict:
    kind, _, value = name.partition(":")
    if kind == "ber":
        return ber_accuracy(store, x, y, float(value), cfg.draws, cfg.seed)
    if kind == "cert":
        return ber_certificate(store, x, y, float(value), cfg)
    return bfa_curve(store, x, y, cfg) if kind == "bfa" else bfa_per_point(store, x, y, cfg)


def run_faults(
    model: nn.Module, points: Points, cfg: FaultsConfig, out: Path, label: str = "", on_stage=None
) -> dict[str, Any]:
    """Returns the results of every stage after running those not yet in OUT/faults.json (written after each)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {**asdict(cfg), "ber": list(cfg.ber), "n": len(points.y), "data": points.source, "model": label}
    path = out / RESULTS
    result = json.loads(path.read_text()) if path.exists() else {}
    if result.get("settings") != settings:
        result = {"settings": settings, "stages": {}}
    store = Int8Store(model.eval())
    x, y = points.x, points.y
    result["clean_int8_acc"] = float((margins(store.model, x, y) > 0).double().mean())
    for name in _stages(cfg):
        if name not in result["stages"]:
            result["stages"][name] = _run_stage(name, store, x, y, cfg)
            _write(path, json.dumps(result, indent=1))
        if on_stage is not None:
            on_stage(name)
    _write(path, json.dumps(result, indent=1))
    return result


def flips_summary(per_point: dict) -> dict[str, Any]:
    """Returns the median flips per attacked point (None when most were not flipped within the cap) and the share
    changed within 1, 3 and the cap flips, as Wilson proportions."""
    flips = per_point["flips"]
    n = len(flips)
    done = sorted(f for f in flips if f is not None)
    median = done[(n - 1) // 2] if n and len(done) > (n - 1) // 2 else None
    within = {k: wilson(sum(f is not None and f <= k for f in flips), n) for k in (1, 3, per_point["cap"])}
    return {"n": n, "median": median, "within": within}
