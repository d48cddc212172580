"""Experiment presets (TOML under configs/presets/) and the grid of (ε, algorithm) cells they define.

A preset file::

    [preset]     name, description, eps = ["0.001", "2/255", ...], algorithms = [...],
                 reference = "thesis_reference.toml" (relative to the preset), device,
                 landscape = false (skip the landscapes; default true)
    [algorithms.KEY]  label, and RunConfig sections to override (train = {...}, radius = {...})
    [run.SECTION]     the RunConfig every cell starts from (as in configs/main.toml)
    [eval]       n, autoattack, autoattack_n, param_attack = [λ...], neighbourhood, statistical, delta, p0,
                 certify = [λ...], quant = ["int8", "int4"]
    [landscape]  n, points, grid, span, step, seed, directions

`--preset NAME` finds configs/presets/NAME.toml in the repository; a path works too.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, RunConfig, check_eps, read_toml
from ..landscape import LandscapeConfig
from ..rundir import fingerprint

PRESET_DIR = Path(__file__).resolve().parents[3] / "configs" / "presets"


def parse_eps(label: str) -> float:
    """Returns the value of an ε label such as "0.001" or "2/255"; ConfigError if it is neither."""
    try:
        num, _, den = str(label).partition("/")
        value = float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"preset eps entries must be numbers or fractions like '2/255'; got {label!r}") from None
    check_eps(value, f"preset eps {label!r}")
    return value


@dataclass(frozen=True)
class AlgoSpec:
    """One algorithm of the grid: its key (file names), label (tables) and RunConfig overrides."""

    key: str
    label: str
    overrides: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]

    def apply(self, cfg: RunConfig) -> RunConfig:
        """Returns cfg with this algorithm's sections overridden."""
        return cfg.replace(**{section: dict(values) for section, values in self.overrides})


@dataclass(frozen=True)
class EvalSpec:
    """Evaluation of every cell: first n test points, AutoAttack on/off (on the first
    autoattack_n of them, None: all n), parameter-attack λ, networks sampled per mode in
    the box (neighbourhood, 0: skip), and the statistical certificates (most draws per
    point, 0: skip; p ≤ p0 at confidence 1 − delta jointly over the points), and the
    certificates of approp.certify (certified-λ curve at `certify`, quantisation at `quant`;
    empty: skip)."""

    n: int = 1000
    autoattack: bool = True
    autoattack_n: int | None = None
    param_attack: tuple[float, ...] = (0.02, 0.04, 0.06, 0.08, 0.1)
    neighbourhood: int = 0
    statistical: int = 0
    delta: float = 1e-3
    p0: float = 0.01
    certify: tuple[float, ...] = ()
    quant: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cell:
    """One (ε, algorithm) job: its name, ε label and value, algorithm, and full training config."""

    name: str
    eps_label: str
    eps: float
    algo: AlgoSpec
    config: RunConfig

    def fingerprint(self, ev: EvalSpec) -> str:
        """Returns a hash of everything that defines this cell's result (training config and evaluation).

        Evaluation settings at their defaults are left out, so that a stage added later (off by
        default) does not make every finished cell of an existing preset look unfinished.
        """
        return fingerprint(self.config.to_dict(), ev.__dict__, EvalSpec().__dict__)


@dataclass(frozen=True)
class Preset:
    """A whole experiment: ε labels, algorithms, base config, evaluation and landscape settings."""

    name: str
    description: str
    eps_labels: tuple[str, ...]
    algos: tuple[AlgoSpec, ...]
    base: RunConfig
    eval: EvalSpec = field(default_factory=EvalSpec)
    landscape: LandscapeConfig | None = field(default_factory=LandscapeConfig)  # None: skipped
    reference: Path | None = None

    def cells(
        self,
        data_dir: str | None = None,
        device: str | None = None,
        only: str | None = None,
        overrides: dict[str, dict[str, Any]] | None = None,
    ) -> list[Cell]:
        """Returns the grid's cells in order (ε-major), those matching the glob `only` if given.

        overrides: {section: {key: value}} applied last to every cell's config (`--set`); not
        train.eps, the grid's axis, which names the cells (ConfigError).
        """
        if "eps" in (overrides or {}).get("train", {}):
            raise ConfigError(
                "train.eps is the preset's grid axis (its cells are named by it): "
                "choose cells with --only, or give a preset file with other eps"
            )
        out = []
        for label in self.eps_labels:
            eps = parse_eps(label)
            for algo in self.algos:
                cfg = algo.apply(self.base).replace(train={"eps": eps})
                if data_dir is not None:
                    cfg = cfg.replace(data={"data_dir": str(data_dir)})
                if device is not None:
                    cfg = cfg.replace(train={"device": device})
                if overrides:
                    cfg = cfg.replace(**overrides)
                name = f"eps{_slug(label)}-{algo.key}"
                if only is None or fnmatch.fnmatch(name, only):
                    out.append(Cell(name, label, eps, algo, cfg))
        return out


def _slug(label: str) -> str:
    return label.replace("/", "over")


def resolve_preset(name_or_path: str | Path) -> Path:
    """Returns the preset file: a path as given, else configs/presets/NAME.toml; ConfigError if missing."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        return path
    named = PRESET_DIR / f"{name_or_path}.toml"
    if named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.toml") if p.stem != "thesis_reference"))
    raise ConfigError(f"no preset {name_or_path!r}: give a .toml path or one of: {known}")


def load_preset(name_or_path: str | Path) -> Preset:
    """Returns the Preset read (and validated) from a TOML file or a named preset."""
    path = resolve_preset(name_or_path)
    raw = read_toml(path, "preset file")
    head = raw.get("preset", {})
    base = RunConfig.from_dict(raw.get("run", {}))
    if "device" in head:
        base = base.replace(train={"device": head["device"]})
    algos = tuple(_algo(key, raw.get("algorithms", {}), path) for key in head.get("algorithms", []))
    labels = tuple(str(e) for e in head.get("eps", []))
    if not labels or not algos:
        raise ConfigError(f"{path}: [preset] needs non-empty 'eps' and 'algorithms' lists")
    for label in labels:
        parse_eps(label)
    ref = head.get("reference")
    draw = head.get("landscape", True)
    if not isinstance(draw, bool):
        raise ConfigError(f"{path}: [preset] landscape must be true or false; got {draw!r}")
    preset = Preset(
        name=head.get("name", path.stem),
        description=head.get("description", ""),
        eps_labels=labels,
        algos=algos,
        base=base,
        eval=_section(EvalSpec, raw.get("eval", {}), path, "eval"),
        landscape=_section(LandscapeConfig, raw.get("landscape", {}), path, "landscape") if draw else None,
        reference=(path.parent / ref) if ref else None,
    )
    for algo in algos:  # fail now, not in a worker, if an override is invalid
        algo.apply(base)
    return preset


def _algo(key: str, table: dict[str, Any], path: Path) -> AlgoSpec:
    if key not in table:
        raise ConfigError(f"{path}: algorithm {key!r} is listed in [preset] but has no [algorithms.{key}]")
    spec = dict(table[key])
    label = spec.pop("label", key)
    overrides = tuple((section, tuple(sorted(values.items()))) for section, values in sorted(spec.items()))
    return AlgoSpec(key, label, overrides)


def _section(cls: type, values: dict[str, Any], path: Path, name: str) -> Any:
    try:
        obj = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except TypeError as err:
        raise ConfigError(f"{path}: invalid [{name}]: {err}") from None
    for k, v in obj.__dict__.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{path}: [{name}] {k} must be finite")
    return obj
