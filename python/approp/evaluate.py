"""The evaluation suite of a trained run: clean, PGD, AutoAttack, verified, neighbourhood, parameter attack.

    from approp.evaluate import EvalConfig, Evaluator
    results = Evaluator("runs/app", EvalConfig(n=1000, neighbourhood=8)).run()

Stages run in that order on the same first `n` test points. After each stage
(and inside the long ones: after each AutoAttack attack, each sampled
network, each λ) the state is written to RUN_DIR/eval_state.json, so an
interrupted evaluation resumes where it stopped; a state written for another
checkpoint or other options is ignored. At the end RUN_DIR/eval.json holds
all results and report.md gains (or has replaced) an "Evaluation" section.
Every input is checked — checkpoint, architecture, ε, options, data — before
anything is written.

Beside each accuracy, eval.json keeps its per-point outcomes (approp.outcomes):
results["outcomes"][name] marks the points counted by clean, pgd, autoattack (on
its own first k points), verified, verified_crown, verified_best and, per λ,
"after:λ" (correct after the parameter attack). Two models scored on the same
points are then compared with the paired interval (approp.stats.paired).
Evaluations made before the outcomes were kept get them with
`Evaluator(..., add_outcomes=("clean", "pgd"))` (`approp evaluate RUN --add-outcomes
clean,pgd`, or `all`): each named finished stage runs again with the same options and
its outcomes are added only where it reproduces the stored numbers exactly.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from . import checkpoint as ckpt
from .attacks import CascadeState, autoattack, parameter_attack, pgd_correct
from .attacks.parameter import ParamAttackRow
from .certify.run import CertifyConfig, certify_model
from .certify.sources import Points
from .certify.statistical import StatisticalConfig, max_rounds
from .certify.statistical_plot import plot_statistical
from .certify.statistical_views import run_statistical
from .config import ConfigError, RunConfig, check_eps, check_positive_int
from .data import Split, load_cifar10, to_float
from .eval_report import write_eval_report
from .faults.report import write_faults_report
from .faults.run import FaultsConfig, run_faults
from .metrics import clean_correct, share, verified_correct
from .neighbourhood import neighbourhood, samples_from_json, samples_to_json, summarise
from .outcomes import OutcomesError, encode
from .precision import full_precision
from .progress import StageBar as _StageBar
from .rundir import CONFIG, STATISTICAL_PLOT, atomic_json, atomic_write, results_key
from .rundir import EVAL_PARAM_STATE as PARAM_STATE
from .rundir import EVAL_RESULTS as RESULTS
from .rundir import EVAL_STATE as STATE

STAGES = ("clean", "pgd", "autoattack", "verified", "neighbourhood", "param_attack", "statistical", "certify", "faults")
STATISTICAL_KEYS = ("statistical", "delta", "p0")  # left out of the resume key while the stage is off
CERTIFY_KEYS = ("certify", "quant")  # the same for the certificates
FAULTS_KEYS = ("faults", "faults_bfa")  # and for the bit errors
OUTCOME_STAGES = ("clean", "pgd", "autoattack", "verified", "param_attack")  # the stages that keep outcomes


@dataclass(frozen=True)
class EvalConfig:
    """Options of an evaluation (defaults in brackets).

    eps: L∞ input radius [None: the run's training ε]; n: first n test points [1000];
    pgd_steps / pgd_restarts: PGD with step 2.5·ε/steps [20 / 1];
    autoattack: run AutoAttack standard L∞ [True]; autoattack_n: on the first k of the n
        points only (it costs seconds per robust point on a CPU) [None: all n];
    verified: bound-based accuracy [True];
    neighbourhood: K sampled networks per mode, 0 skips [0];
    param_attack: the λ of the parameter attack, empty skips [0.02 … 0.1];
    param_attack_steps: ascent steps per λ [20]; batch_size [500]; seed [0];
    statistical: most draws per point of the statistical certificates (approp.certify.statistical), 0 skips [0];
    delta / p0: they certify p ≤ p0 with confidence 1 − delta jointly over the n points [1e-3 / 0.01];
    certify: λ of the certified-λ curve (approp.certify.run, with λ* per point), empty skips [()];
    quant: quantisation certificates, e.g. ("int8", "int4") [()];
    faults: bit error rates of the int8 weights (approp.faults, written to RUN_DIR/faults/), empty skips [()];
    faults_bfa: the bit-flip attack as well [False].
    """

    eps: float | None = None
    n: int = 1000
    pgd_steps: int = 20
    pgd_restarts: int = 1
    autoattack: bool = True
    autoattack_n: int | None = None
    verified: bool = True
    neighbourhood: int = 0
    param_attack: tuple[float, ...] = (0.02, 0.04, 0.06, 0.08, 0.1)
    param_attack_steps: int = 20
    batch_size: int = 500
    seed: int = 0
    statistical: int = 0
    delta: float = 1e-3
    p0: float = 0.01
    certify: tuple[float, ...] = ()
    quant: tuple[str, ...] = ()
    faults: tuple[float, ...] = ()
    faults_bfa: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "certify", tuple(self.certify))
        object.__setattr__(self, "faults", tuple(self.faults))
        FaultsConfig(ber=self.faults, bfa=self.faults_bfa)  # validates both
        object.__setattr__(self, "quant", tuple(self.quant))
        if self.certify or self.quant:
            CertifyConfig(lams=self.certify, quant=self.quant)  # validates both
        if self.eps is not None:
            check_eps(self.eps, "eval.eps")
        for name in ("n", "pgd_steps", "pgd_restarts", "param_attack_steps", "batch_size"):
            check_positive_int(f"eval.{name}", getattr(self, name))
        check_positive_int("eval.autoattack_n", self.autoattack_n, allow_none=True)
        if not isinstance(self.neighbourhood, int) or self.neighbourhood < 0:
            raise ConfigError(f"eval.neighbourhood must be an integer >= 0; got {self.neighbourhood!r}")
        if not isinstance(self.statistical, int) or isinstance(self.statistical, bool) or self.statistical < 0:
            raise ConfigError(f"eval.statistical must be an integer >= 0; got {self.statistical!r}")
        for name in ("delta", "p0"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 < value < 1:
                raise ConfigError(f"eval.{name} must be in (0, 1); got {value!r}")
        object.__setattr__(self, "param_attack", tuple(self.param_attack))
        for lam in self.param_attack:
            if not isinstance(lam, (int, float)) or not math.isfinite(lam) or not 0 <= lam < 1:
                raise ConfigError(f"eval.param_attack values must be in [0, 1); got {lam!r}")

    def stages(self) -> tuple[str, ...]:
        """Returns the names of the stages these options run, in order."""
        off = {
            "autoattack": not self.autoattack,
            "verified": not self.verified,
            "neighbourhood": self.neighbourhood == 0,
            "param_attack": not self.param_attack,
            "statistical": self.statistical == 0,
            "certify": not (self.certify or self.quant),
            "faults": not (self.faults or self.faults_bfa),
        }
        return tuple(s for s in STAGES if not off.get(s, False))


def parse_lams(text: str, option: str = "--param-attack") -> tuple[float, ...]:
    """Returns the numbers of a comma-separated list ("" gives none); ConfigError naming --option on a bad item."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{option} must be comma-separated numbers; got {text!r}") from None


def after_key(lam: float) -> str:
    """Returns the outcomes' name of the points correct after the parameter attack at λ ("after:0.02")."""
    return f"after:{lam:g}"


def merge_stage(out: dict[str, Any], stage: dict[str, Any]) -> None:
    """Adds one stage's results to `out`; its per-point outcomes join out["outcomes"]."""
    for key, value in stage.items():
        if key == "outcomes":
            out.setdefault("outcomes", {}).update(value)
        else:
            out[key] = value


def _brief(result: dict[str, Any]) -> str:
    """Returns a stage's results in one line, cut to 300 characters."""
    text = json.dumps(result)
    return text if len(text) <= 300 else text[:297] + "..."


def _expected_model(run_dir: Path):
    """Returns the ModelConfig the run's config.toml names, or None where there is none."""
    path = run_dir / CONFIG
    return RunConfig.load(path).model if path.is_file() else None


class Evaluator:
    """Runs the evaluation stages of one run directory, resumably; see the module docstring."""

    def __init__(
        self,
        run_dir: Path | str,
        cfg: EvalConfig | None = None,
        data_dir: str | os.PathLike | None = None,
        device: str = "cpu",
        progress: bool = True,
        add_outcomes: Iterable[str] = (),
    ) -> None:
        """add_outcomes: the finished stages (of OUTCOME_STAGES) to run again for the per-point outcomes
        they lack (module docstring)."""
        self.run_dir = Path(run_dir)
        self.cfg = cfg or EvalConfig()
        if not self.run_dir.is_dir():
            raise ckpt.CheckpointError(f"{self.run_dir} is not a directory: no checkpoint to evaluate")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("device is 'cuda' but no CUDA device is available; use --device cpu")
        self.model, self.meta = ckpt.load_model(self.run_dir, device, expect=_expected_model(self.run_dir))
        self.model.eval()
        self.eps = float(self.meta["eps"] if self.cfg.eps is None else self.cfg.eps)
        check_eps(self.eps, "eps")
        self.radius = ckpt.radius_from_meta(self.meta)
        self.test = Split(*load_cifar10(data_dir, train=False)).take(self.cfg.n).to(device)
        self.device = device
        self.progress = progress
        self.add_outcomes = tuple(add_outcomes)
        unknown = set(self.add_outcomes) - set(OUTCOME_STAGES)
        if unknown:
            raise ConfigError(
                f"add_outcomes: no stage {', '.join(sorted(unknown))} keeps outcomes; "
                f"choose from {', '.join(OUTCOME_STAGES)}"
            )
        settings = {
            **asdict(self.cfg),
            "param_attack": list(self.cfg.param_attack),
            "certify": list(self.cfg.certify),
            "quant": list(self.cfg.quant),
            "faults": list(self.cfg.faults),
        }
        off = (
            (STATISTICAL_KEYS if not self.cfg.statistical else ())
            + (CERTIFY_KEYS if not (self.cfg.certify or self.cfg.quant) else ())
            + (FAULTS_KEYS if not (self.cfg.faults or self.cfg.faults_bfa) else ())
        )  # states saved before a stage existed stay valid
        self.key = results_key(self.meta, settings, off, eps=self.eps, n=len(self.test))

    # -- state ---------------------------------------------------------------------------

    def load_state(self) -> dict[str, Any]:
        """Returns the saved state if it belongs to this checkpoint and these options, else a fresh one."""
        path = self.run_dir / STATE
        if path.is_file():
            try:
                state = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                state = None
            if isinstance(state, dict) and state.get("key") == self.key:
                return state
        return {"key": self.key, "stages": {}, "partial": {}}

    def save_state(self, state: dict[str, Any]) -> None:
        """Writes the state atomically to RUN_DIR/eval_state.json."""
        atomic_json(self.run_dir / STATE, state)

    # -- running -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Returns all results after running (or resuming) every enabled stage; writes eval.json and report.md.

        Every stage computes in fp32 with autocast off, whatever precision the run trained in.
        """
        with full_precision():
            return self._run()

    def _run(self) -> dict[str, Any]:
        state = self.load_state()
        if self.add_outcomes and not state["stages"]:
            raise ConfigError(
                f"{self.run_dir}: no evaluation with these options to add outcomes to; give the options it was "
                "made with (eval.json's 'config'), or evaluate without --add-outcomes"
            )
        stages = self.cfg.stages()
        with _StageBar(enabled=self.progress) as bar:
            for name in stages:
                if name in state["stages"]:
                    if name in self.add_outcomes and "outcomes" not in state["stages"][name]:
                        self._add_outcomes(name, state, bar)
                    continue
                t0 = time.perf_counter()
                result = getattr(self, f"_stage_{name}")(state, bar)
                state["stages"][name] = {**result, "seconds": time.perf_counter() - t0}
                state["partial"].pop(name, None)
                self.save_state(state)
        results = self._results(state, stages)
        atomic_json(self.run_dir / RESULTS, results)
        write_eval_report(self.run_dir, results)
        return results

    def _results(self, state: dict[str, Any], stages: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run_dir": str(self.run_dir),
            "algo": self.meta.get("algo"),
            "epoch": self.meta.get("epoch"),
            "radius": self.meta.get("radius"),
            "eps": self.eps,
            "lam": self.radius.lam,
            "n": len(self.test),
            "config": self.key["config"],
            "seconds": {},
        }
        for name in stages:
            stage = dict(state["stages"][name])
            out["seconds"][name] = stage.pop("seconds")
            merge_stage(out, stage)
        return out

    def _add_outcomes(self, name: str, state: dict[str, Any], bar) -> None:
        """Runs a finished stage again and adds its outcomes to the state if it reproduces the stored
        numbers exactly; OutcomesError (state unchanged but for the partial progress) where it does not."""
        stored = state["stages"][name]
        result = getattr(self, f"_stage_{name}")(state, bar)
        outcomes = result.pop("outcomes")
        state["partial"].pop(name, None)
        before = {k: v for k, v in stored.items() if k != "seconds"}
        if json.loads(json.dumps(result)) != before:
            self.save_state(state)
            raise OutcomesError(
                f"{self.run_dir}: stage {name} run again gave {_brief(result)}, but the evaluation stored "
                f"{_brief(before)}; its outcomes were not added (was it evaluated on another data copy, "
                "torch version or thread count?)"
            )
        stored["outcomes"] = outcomes
        self.save_state(state)

    # -- stages: each returns the entries it adds to the results -----------------------------

    def _stage_clean(self, state, bar) -> dict[str, Any]:
        mask = clean_correct(self.model, self.test, self.cfg.batch_size)
        return {"clean_acc": share(mask), "outcomes": {"clean": encode(mask)}}

    def _stage_pgd(self, state, bar) -> dict[str, Any]:
        c = self.cfg
        mask = pgd_correct(
            self.model,
            self.test,
            self.eps,
            steps=c.pgd_steps,
            restarts=c.pgd_restarts,
            batch_size=c.batch_size,
            seed=c.seed,
        )
        return {
            "pgd_acc": mask.float().mean().item(),
            "pgd": {"steps": c.pgd_steps, "restarts": c.pgd_restarts, "step_size": 2.5 * self.eps / c.pgd_steps},
            "outcomes": {"pgd": encode(mask)},
        }

    def _stage_autoattack(self, state, bar) -> dict[str, Any]:
        saved = state["partial"].get("autoattack")
        cascade = CascadeState.from_json(saved, self.device) if saved else None
        task = bar.add("AutoAttack", total=5, completed=len(cascade.done) if cascade else 0)

        def save(name: str, st: CascadeState) -> None:
            state["partial"]["autoattack"] = st.to_json()
            self.save_state(state)
            bar.advance(task)

        points = self.test.take(self.cfg.autoattack_n)
        x = points.x.float().div(255.0)  # (k, 3, 32, 32) in [0, 1]
        res = autoattack(
            self.model,
            x,
            points.y,
            self.eps,
            batch_size=min(self.cfg.batch_size, 250),
            seed=self.cfg.seed,
            state=cascade,
            on_attack_done=save,
        )
        return {
            "autoattack": {
                "robust_acc": res.robust_acc,
                "cascade": res.cascade,
                "n": len(points),
                "version": "standard",
                "norm": "Linf",
            },
            "outcomes": {"autoattack": encode(res.robust)},
        }

    def _stage_verified(self, state, bar) -> dict[str, Any]:
        """verified_acc: interval bounds as always; _crown: linear bounds; _best: per margin the better of both."""
        out: dict[str, Any] = {"outcomes": {}}
        for method in (None, "crown", "best"):
            suffix = "" if method is None else f"_{method}"
            mask = verified_correct(
                self.model, self.test, self.eps, self.radius, batch_size=self.cfg.batch_size, method=method
            )
            out[f"verified_acc{suffix}"] = share(mask)
            out["outcomes"][f"verified{suffix}"] = encode(mask)
        return out

    def _stage_neighbourhood(self, state, bar) -> dict[str, Any]:
        c = self.cfg
        done = samples_from_json(state["partial"].get("neighbourhood", []))
        task = bar.add("neighbourhood", total=2 * c.neighbourhood, completed=len(done))

        def save(sample) -> None:
            state["partial"].setdefault("neighbourhood", []).append(samples_to_json([sample])[0])
            self.save_state(state)
            bar.advance(task)

        samples = neighbourhood(
            self.model,
            self.test,
            self.radius,
            self.eps,
            c.neighbourhood,
            pgd_steps=c.pgd_steps,
            seed=c.seed,
            batch_size=c.batch_size,
            done=done,
            on_sample=save,
        )
        return {
            "neighbourhood": {
                "k": c.neighbourhood,
                "lam": self.radius.lam,
                "kind": self.radius.kind,
                "summary": summarise(samples),
                "samples": samples_to_json(samples),
            }
        }

    def _stage_param_attack(self, state, bar) -> dict[str, Any]:
        rows = [ParamAttackRow(**r) for r in state["partial"].get("param_attack", [])]
        outcomes = dict(state["partial"].get("param_attack_outcomes", {}))  # "after:λ" of the λ done
        start = None
        params_path = self.run_dir / PARAM_STATE
        if rows and params_path.is_file() and len(outcomes) == len(rows):
            start = (rows[-1].lam, {k: v.to(self.device) for k, v in load_file(str(params_path)).items()})
        else:
            rows, outcomes = [], {}
            state["partial"]["param_attack"] = []
            state["partial"]["param_attack_outcomes"] = {}
        task = bar.add("parameter attack", total=len(self.cfg.param_attack), completed=len(rows))

        def save(row: ParamAttackRow, params: dict[str, torch.Tensor]) -> None:
            tensors = {k: v.detach().cpu().contiguous() for k, v in params.items()}
            atomic_write(params_path, lambda tmp: save_file(tensors, str(tmp)))
            state["partial"].setdefault("param_attack", []).append(row.to_json())
            outcomes[after_key(row.lam)] = encode(row.correct_after)
            state["partial"]["param_attack_outcomes"] = outcomes
            self.save_state(state)
            bar.advance(task)

        rows += parameter_attack(
            self.model,
            self.test,
            self.cfg.param_attack,
            self.cfg.param_attack_steps,
            self.cfg.batch_size,
            on_row=save,
            start=start,
        )
        params_path.unlink(missing_ok=True)
        state["partial"].pop("param_attack_outcomes", None)
        return {"param_attack": [r.to_json() for r in rows], "outcomes": outcomes}

    def _stage_certify(self, state, bar) -> dict[str, Any]:
        """certify: the certified-λ curve with λ* per point, and the quantisation certificates."""
        points = Points(to_float(self.test.x), self.test.y, "CIFAR-10 test set")
        return {
            "certify": certify_model(self.model, points, CertifyConfig(lams=self.cfg.certify, quant=self.cfg.quant))
        }

    def _stage_faults(self, state, bar) -> dict[str, Any]:
        """faults: accuracy under random bit errors of the int8 weights and the bit-flip attack (resumable itself)."""
        points = Points(to_float(self.test.x), self.test.y, "CIFAR-10 test set")
        cfg = FaultsConfig(ber=self.cfg.faults, bfa=self.cfg.faults_bfa, seed=self.cfg.seed)
        result = run_faults(self.model, points, cfg, self.run_dir / "faults", str(self.run_dir))
        write_faults_report({str(self.run_dir.name): result}, self.run_dir / "faults")
        return {"faults": result}

    def _stage_statistical(self, state, bar) -> dict[str, Any]:
        c = self.cfg
        scfg = StatisticalConfig(samples=c.statistical, delta=c.delta, p0=c.p0, attack_steps=c.pgd_steps, seed=c.seed)
        rounds = max_rounds(scfg)
        partial = state["partial"].setdefault("statistical", {})
        done = max((p["rounds"] for p in partial.get("points", [])), default=0)
        task = bar.add("statistical", total=rounds, completed=done)
        result = run_statistical(
            self.model,
            self.test,
            self.radius,
            self.eps,
            scfg,
            partial,
            lambda: self.save_state(state),
            lambda: bar.advance(task),
        )
        plot_statistical(result, self.run_dir / STATISTICAL_PLOT, f"{self.meta.get('algo')}:")
        return {"statistical": result}
