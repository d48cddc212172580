"""`approp validate`: score a trained run on its own validation split, to choose between runs.

    approp validate runs/fronts/cells/eps2over255-app_k095/run --n 2000

The images are the run's held-out training images (the last `data.val_split` of the training
set, the first n of them), never test data, scored exactly as a sweep scores its variants
(approp.experiments.sweep.score_validation): clean, PGD-20 and verified accuracy (interval
bounds over the run's own parameter box and input ball) at the run's ε, in fp32. RUN/val.json
receives the scores, their 95 % Wilson intervals, the run's config and the checkpoint scored,
written atomically (a sweep's variant folder keeps the layout its own val.json has).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import checkpoint as ckpt
from ..config import ConfigError, check_eps, check_positive_int, load_run_config
from ..rundir import atomic_json
from ..stats import intervals as stats
from .sweep import VAL, score_validation

SHARES = ("clean_acc", "pgd_acc", "verified_acc", "verified_target_acc")


def validate_run(
    run_dir: Path | str,
    n: int = 2000,
    eps: float | None = None,
    pgd_steps: int = 20,
    lam: float | None = None,
    data_dir: str | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Returns the validation scores of a trained run after writing them to RUN/val.json.

    n: first n validation images; eps: input radius (default: the run's training ε);
    lam: also verify over the run's radius kind at this λ (verified_target_acc);
    data_dir / device: where the CIFAR-10 copy lies and where to score (default: the run's).
    ConfigError where the run holds out no validation images or has no config.
    """
    run_dir = Path(run_dir)
    check_positive_int("--n", n)
    check_positive_int("--pgd-steps", pgd_steps)
    if eps is not None:
        check_eps(eps, "--eps")
    recorded = load_run_config(run_dir / "config.toml")
    if recorded.data.val_split <= 0:
        raise ConfigError(
            f"{run_dir} held out no validation images (data.val_split = 0): it cannot be scored "
            "on validation; train it with --val-split N"
        )
    cfg = recorded.replace(data={"data_dir": data_dir} if data_dir else {}, train={"device": device} if device else {})
    model, meta = ckpt.load_model(run_dir, cfg.train.device, expect=cfg.model)
    scores = score_validation(model, cfg, n, cfg.train.eps if eps is None else eps, pgd_steps, lam)
    intervals = {key: _interval(stats.from_share(scores[key], scores["n"])) for key in SHARES if key in scores}
    result = {
        "config": recorded.to_dict(),
        **scores,
        "pgd_steps": pgd_steps,
        "intervals": intervals,
        "checkpoint": {"epoch": meta.get("epoch"), "sha256": meta.get("sha256")},
        "images": f"validation split: the first {scores['n']} of the last {cfg.data.val_split} training images",
    }
    atomic_json(run_dir / VAL, result)
    return result


def _interval(p: stats.Proportion) -> dict[str, float | int]:
    return {"k": p.k, "n": p.n, "value": p.value, "lower": p.lower, "upper": p.upper}


def summary_line(result: dict[str, Any]) -> dict[str, str]:
    """Returns each share of a validate_run result as 'v [lo, hi]' in %."""
    return {key: stats.format_pct(v["value"], v["lower"], v["upper"]) for key, v in result["intervals"].items()}
