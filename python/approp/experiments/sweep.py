"""Hyperparameter sweeps scored on the validation split, never on test data.

    approp sweep configs/sweeps/app_recipe.toml --out runs/sweep

A sweep file::

    [sweep]            name, description, eval_eps (label such as "2/255": every variant is
                       scored at this ε, whatever it trained with), eval_lam (the λ of the
                       target box every variant is also verified over), val_n, pgd_steps
    [run.SECTION]      the RunConfig every variant starts from; data.val_split must be > 0
    [variants.KEY]     label, note, and RunConfig sections to override (train = {...}, ...)
    pairs (in [sweep]) [["A", "B"], ...]: variants to compare; OUT/pairs.md gives A − B per
                       measure with Newcombe's 95 % interval and says which are decided

Each variant trains into OUT/KEY (resuming per epoch like any run), then
OUT/KEY/val.json records clean, PGD and verified accuracy on the first `val_n`
held-out training images; a finished variant is skipped on the next call.
OUT/sweep.md and OUT/sweep.csv tabulate every variant with 95 % Wilson intervals.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import checkpoint as ckpt
from ..attacks import pgd_correct
from ..config import ConfigError, RunConfig, check_positive_int, read_toml
from ..data import Split, describe_copy, load_validation
from ..formatting import DASH, format_interval, pct
from ..metrics import clean_accuracy, verified_accuracy
from ..precision import full_precision
from ..rundir import comparable_config, read_history
from ..stats import intervals as stats
from .preset import AlgoSpec, _algo, parse_eps
from .tables import write_table

VAL = "val.json"


@dataclass(frozen=True)
class Variant:
    """One setting of the sweep: its key (folder), label, note and full training config."""

    key: str
    label: str
    note: str
    config: RunConfig


@dataclass(frozen=True)
class Sweep:
    """A sweep: variants scored at one ε on the first val_n validation images."""

    name: str
    description: str
    eval_eps_label: str
    val_n: int
    pgd_steps: int
    variants: tuple[Variant, ...]
    eval_lam: float | None = None
    pairs: tuple[tuple[str, str], ...] = ()

    @property
    def eval_eps(self) -> float:
        return parse_eps(self.eval_eps_label)


def load_sweep(
    path: Path | str, data_dir: str | None = None, overrides: dict[str, dict[str, Any]] | None = None
) -> Sweep:
    """Returns the Sweep in a TOML file; ConfigError on anything invalid (checked before any training).

    overrides: {section: {key: value}} applied last to every variant's config (`--set`).
    """
    path = Path(path)
    raw = read_toml(path, "sweep file")
    head = raw.get("sweep", {})
    base = RunConfig.from_dict(raw.get("run", {}))
    if data_dir is not None:
        base = base.replace(data={"data_dir": str(data_dir)})
    if base.data.val_split <= 0:
        raise ConfigError(f"{path}: a sweep is scored on held-out data; set [run.data] val_split > 0")
    table = raw.get("variants", {})
    variants = []
    for key in table:
        note = table[key].pop("note", "")
        spec: AlgoSpec = _algo(key, table, path)
        config = spec.apply(base).replace(**(overrides or {}))
        variants.append(Variant(key, spec.label, note, config))
    if not variants:
        raise ConfigError(f"{path}: a sweep needs at least one [variants.KEY]")
    unscored = [v.key for v in variants if v.config.data.val_split <= 0]
    if unscored:
        raise ConfigError(f"{path}: a sweep is scored on held-out data; data.val_split is 0 in {', '.join(unscored)}")
    for name in ("val_n", "pgd_steps"):
        check_positive_int(f"{path}: [sweep] {name}", head.get(name, 1))
    eval_lam = head.get("eval_lam")
    if eval_lam is not None and not (isinstance(eval_lam, (int, float)) and eval_lam >= 0):
        raise ConfigError(f"{path}: [sweep] eval_lam must be a number >= 0; got {eval_lam!r}")
    sweep = Sweep(
        head.get("name", path.stem),
        head.get("description", ""),
        str(head.get("eval_eps", "2/255")),
        head.get("val_n", 2000),
        head.get("pgd_steps", 20),
        tuple(variants),
        None if eval_lam is None else float(eval_lam),
        _pairs(head.get("pairs", []), variants, path),
    )
    sweep.eval_eps  # noqa: B018  (the property validates the label)
    return sweep


def _pairs(raw: Any, variants: list[Variant], path: Path) -> tuple[tuple[str, str], ...]:
    """Returns the [sweep] pairs as (A, B) keys; ConfigError unless each names two variants of the file."""
    keys = {v.key for v in variants}
    if not isinstance(raw, list) or not all(isinstance(p, list) and len(p) == 2 and set(p) <= keys for p in raw):
        raise ConfigError(
            f"{path}: [sweep] pairs must be a list of [A, B] variant keys out of {sorted(keys)}; got {raw!r}"
        )
    return tuple((a, b) for a, b in raw)


def score_variant(model: torch.nn.Module, cfg: RunConfig, sweep: Sweep) -> dict[str, Any]:
    """Returns clean, PGD and verified accuracy of a trained model on the first val_n validation images."""
    return score_validation(model, cfg, sweep.val_n, sweep.eval_eps, sweep.pgd_steps, sweep.eval_lam)


@full_precision()
def score_validation(
    model: torch.nn.Module, cfg: RunConfig, n: int, eps: float, pgd_steps: int, eval_lam: float | None = None
) -> dict[str, Any]:
    """Returns {n, eps, clean_acc, pgd_acc, verified_acc[, verified_target_acc]} of a trained model
    on the first n images of cfg's validation split (held-out training images, never test data):
    PGD-`pgd_steps` and verified accuracy (over cfg's parameter box) at ε = eps, and where eval_lam
    is given also verified over cfg's radius kind at λ = eval_lam. Scored in fp32 whatever the
    training precision."""
    val = load_validation(cfg.data, cfg.train.device).take(n)
    bs = cfg.data.eval_batch_size
    return {
        "n": len(val),
        "eps": eps,
        "clean_acc": clean_accuracy(model, val, bs),
        "pgd_acc": pgd_correct(model, val, eps, steps=pgd_steps, batch_size=bs).float().mean().item(),
        "verified_acc": verified_accuracy(model, val, eps, cfg.radius, batch_size=bs),
        **_target_verified(model, cfg, eps, eval_lam, val),
    }


def _validation(cfg: RunConfig, sweep: Sweep) -> Split:
    """Returns the first val_n validation images of a variant, on its device."""
    return load_validation(cfg.data, cfg.train.device).take(sweep.val_n)


def target_verified(model: torch.nn.Module, cfg: RunConfig, sweep: Sweep, val: Split) -> dict[str, float]:
    """Returns {"verified_target_acc": …}: verified accuracy at the sweep's ε over the variant's radius
    kind at the sweep's eval_lam, so variants that trained with another ε or λ are verified over the
    same box ({} where the sweep sets no eval_lam)."""
    return _target_verified(model, cfg, sweep.eval_eps, sweep.eval_lam, val)


def _target_verified(
    model: torch.nn.Module, cfg: RunConfig, eps: float, lam: float | None, val: Split
) -> dict[str, float]:
    """Returns {"verified_target_acc": …} at ε over cfg's radius kind at λ = lam ({} where lam is None)."""
    if lam is None:
        return {}
    return {
        "verified_target_acc": verified_accuracy(
            model, val, eps, cfg.radius, lam=lam, batch_size=cfg.data.eval_batch_size
        )
    }


def run_sweep(sweep: Sweep, out: Path, only: str | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Returns each variant's row after training and scoring it (finished variants are read back).

    only: comma-separated globs over variant keys; the others are read back if finished, not run.
    """
    from ..train import fit

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for v in sweep.variants:
        if only is not None and not any(fnmatch.fnmatch(v.key, g) for g in only.split(",")):
            continue
        folder = out / v.key
        done = folder / VAL
        if done.is_file() and _same_config(json.loads(done.read_text()).get("config"), v.config):
            _complete_scores(v, folder, sweep)
            continue
        result = fit(v.config, folder, progress=progress)
        scores = score_variant(result.model, v.config, sweep)
        done.write_text(json.dumps({"config": v.config.to_dict(), **scores}, indent=2))
    rows = [_row(v, out / v.key) for v in sweep.variants]
    write_sweep_table(sweep, rows, out)
    if sweep.pairs:
        write_pairs_table(sweep, rows, out)
    return rows


def _same_config(recorded: dict[str, Any] | None, cfg: RunConfig) -> bool:
    """Returns whether a scored variant's recorded config is cfg (fields added since at their neutral value)."""
    return recorded is not None and comparable_config(recorded) == comparable_config(cfg.to_dict())


def _complete_scores(v: Variant, folder: Path, sweep: Sweep) -> None:
    """Adds the target-box verified accuracy to a finished variant scored before it was asked for."""
    scores = json.loads((folder / VAL).read_text())
    if sweep.eval_lam is None or "verified_target_acc" in scores:
        return
    model, _ = ckpt.load_model(folder)
    scores.update(target_verified(model, v.config, sweep, _validation(v.config, sweep)))
    (folder / VAL).write_text(json.dumps(scores, indent=2))


def _row(v: Variant, folder: Path) -> dict[str, Any]:
    path = folder / VAL
    scores = json.loads(path.read_text()) if path.is_file() else {}
    return {"key": v.key, "label": v.label, "note": v.note, "scores": scores, "epochs": read_history(folder)}


def write_sweep_table(sweep: Sweep, rows: list[dict[str, Any]], out: Path) -> tuple[Path, Path]:
    """Returns the (md, csv) paths of the sweep's table: validation accuracies with 95 % intervals."""
    table = []
    for r in rows:
        s, ep = r["scores"], r["epochs"]
        n = s.get("n", 0)
        cell = lambda key: stats.from_share(s[key], n) if key in s else None  # noqa: B023  (called within this iteration)
        table.append(
            {
                "variant": r["key"],
                "what changed": r["label"] + (f" ({r['note']})" if r["note"] else ""),
                "val clean": cell("clean_acc"),
                "val PGD": cell("pgd_acc"),
                "val verified (own box)": cell("verified_acc"),
                "val verified (target box)": cell("verified_target_acc"),
                "clean by epoch": " ".join(pct(e["clean_acc"], 0) for e in ep) or DASH,
                "train s": f"{sum(e['train_seconds'] for e in ep):.0f}" if ep else DASH,
            }
        )
    n = next((r["scores"]["n"] for r in rows if r["scores"]), sweep.val_n)
    data_dir = sweep.variants[0].config.data.data_dir
    caption = (
        f"{sweep.description}\n\nData: {describe_copy(data_dir)}.\n\n"
        f"Accuracy in % with 95 % Wilson intervals on the first {n} validation "
        f"images (held-out training images, never test data), at ε = {sweep.eval_eps_label} on the pixel "
        "scale whatever ε the variant trained with; PGD-"
        f"{sweep.pgd_steps}; verified: interval bounds over the variant's own parameter box and ball, and over "
        f"the target box (the variant's radius kind at λ = {sweep.eval_lam}, ball at ε = {sweep.eval_eps_label}). "
        "'clean by epoch': clean accuracy (%) on all validation images after each epoch."
    )
    return write_table(table, Path(out) / "sweep", caption)


class PointsDifference(stats.Estimate):
    """A difference of two shares in percentage points with its 95 % interval, shown as '+1.2 [-0.8, +3.1]'."""

    def __str__(self) -> str:
        return format_interval(self.value, self.lower, self.upper, scale=1.0, signed=True)


PAIRED = (
    ("clean_acc", "val clean"),
    ("pgd_acc", "val PGD"),
    ("verified_acc", "val verified (own box)"),
    ("verified_target_acc", "val verified (target box)"),
)


def write_pairs_table(sweep: Sweep, rows: list[dict[str, Any]], out: Path) -> tuple[Path, Path]:
    """Returns the (md, csv) paths of OUT/pairs: A − B per measure for the sweep's pairs of scored variants."""
    by_key = {r["key"]: r["scores"] for r in rows}
    table = []
    for a, b in sweep.pairs:
        sa, sb = by_key.get(a, {}), by_key.get(b, {})
        for key, measure in PAIRED:
            if key in sa and key in sb:
                d, lo, hi = stats.difference(stats.from_share(sa[key], sa["n"]), stats.from_share(sb[key], sb["n"]))
                verdict = "undecided" if lo <= 0 <= hi else f"{a if d > 0 else b} higher"
                table.append(
                    {
                        "A": a,
                        "B": b,
                        "measure": measure,
                        "A − B (pp)": PointsDifference(100 * d, 100 * lo, 100 * hi),
                        "verdict": verdict,
                    }
                )
    caption = (
        f"{sweep.description}\n\nPaired variants on the same first {sweep.val_n} validation images: A − B in "
        "percentage points with Newcombe's hybrid score 95 % interval (conservative for paired points); "
        "'undecided' where the interval contains 0."
    )
    return write_table(table, Path(out) / "pairs", caption)
