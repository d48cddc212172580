"""Typed, frozen configuration: one dataclass per concern, TOML in and out.

A run is described by a `RunConfig` that groups `ModelConfig`, `DataConfig`,
`RadiusConfig`, `OptimConfig` and `TrainConfig`. Every field has a documented
default and is validated when the object is built, so an invalid value fails
at once with a message naming the field, before any data is loaded or any file
is written.

TOML layout (every section and key optional)::

    [model]   arch = "cnn4", width = 1, init = "default"
    [data]    data_dir, val_split, subset, test_subset, augment, batch_size, eval_batch_size
    [radius]  kind = "tanh", lam, s, m, perturb_weights, perturb_biases, clamp
    [optim]   name = "sgd", lr, momentum, weight_decay, schedule, grad_clip
    [train]   algo = "app", epochs, eps, kappa, kappa_schedule, ramp, ramp_epochs,
              reg_weight, reg_tol, seed, device, engine, ...

On the command line `--set section.key=value` reaches any field (parse_set).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

import tomli_w
import tomllib

from .config_set import parse_assignments
from .rundir import atomic_write

RadiusKind = Literal["abs", "const", "tanh", "quant"]
Algo = Literal["app", "standard", "awp", "pgd"]
OptimName = Literal["sgd", "adam"]
Schedule = Literal["constant", "cosine", "step"]
Engine = Literal["torch", "julia"]
Arch = Literal["cnn4", "cnn4_bn", "cnn7", "resnet20", "preact_resnet18"]
Init = Literal["default", "ibp"]
RampKind = Literal["linear", "smoothed"]
KappaSchedule = Literal["gowal", "constant", "none"]
Precision = Literal["fp32", "bf16", "auto"]


class ConfigError(ValueError):
    """An invalid configuration value; the message names the field."""


def _check_choice(name: str, value: Any, choices_type: Any) -> None:
    choices = get_args(choices_type)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def _check_nonneg(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0; got {value!r}")


def check_positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    """Raises ConfigError naming `name` unless value is a positive int (not a bool; None if allow_none)."""
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer; got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture, width and initialisation (see approp.models).

    arch: "cnn4" (32/32/64/64/256 channels at width 1), "cnn4_bn" (CNN4 with BatchNorm after
        every convolution and the hidden linear layer) or "cnn7" (Shi et al.'s cnn_7layer_bn2:
        64/64/128/128/128 channels, 512 hidden units, BatchNorm throughout), "resnet20" (He et al.
        2016's CIFAR ResNet-20: 3 stages × 3 basic blocks, 16/32/64 channels, 1×1 conv + BatchNorm
        projection shortcuts) or "preact_resnet18" (PreAct ResNet-18 as AWP trains it: 4 stages × 2
        pre-activation blocks, 64/128/256/512 channels, 1×1 conv projection shortcuts). The Julia
        engine trains "cnn4" only.
    width: channel (and hidden-unit) multiplier [1].
    init: "default" (PyTorch's) or "ibp" (Shi et al. 2021: every weight but the last layer's
        from N(0, σ²), σ = √(2π)/fan_in; biases and BatchNorm parameters untouched) ["default"].
    """

    arch: Arch = "cnn4"
    width: int = 1
    init: Init = "default"

    def __post_init__(self) -> None:
        _check_choice("model.arch", self.arch, Arch)
        check_positive_int("model.width", self.width)
        _check_choice("model.init", self.init, Init)


@dataclass(frozen=True)
class DataConfig:
    """CIFAR-10 loading.

    data_dir: folder holding `cifar-10-batches-py/` (None: $APPROP_DATA, else ./data).
    val_split: hold out the last N of the 50,000 training images as a validation split
        [0: none]. Training never sees them; the per-epoch metrics (and every
        hyperparameter choice) use them instead of the test split.
    subset / test_subset: use only the first N training (after the hold-out) / test
        images (None: all).
    augment: random crop (pad 4) + horizontal flip on the training split.
    download: let torchvision fetch the official archive when the folder is missing.
    """

    data_dir: str | None = None
    val_split: int = 0
    subset: int | None = None
    test_subset: int | None = None
    augment: bool = True
    batch_size: int = 128
    eval_batch_size: int = 500
    download: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.val_split, int) or isinstance(self.val_split, bool) or self.val_split < 0:
            raise ConfigError(f"data.val_split must be an integer >= 0; got {self.val_split!r}")
        check_positive_int("data.subset", self.subset, allow_none=True)
        check_positive_int("data.test_subset", self.test_subset, allow_none=True)
        check_positive_int("data.batch_size", self.batch_size)
        check_positive_int("data.eval_batch_size", self.eval_batch_size)


@dataclass(frozen=True)
class RadiusConfig:
    """The parameter box B∞(θ, r(θ)), elementwise radius r chosen by `kind`.

    abs:   r = lam * |θ|                   (relative, as in AWP)
    const: r = lam
    tanh:  r = lam * tanh(s * θ²) / m      (radius narrowing; defaults s=100, m=10
           give r ≈ 0.076·lam at |θ|=0.1 and r → lam/10 for large |θ|)
    quant: r = lam * scale / 2 on weights (biases stay float), scale the step of symmetric
           `bits`-bit round-to-nearest quantisation of the weight's output channel
           (per_channel, default) or of the whole tensor: lam = 1 is the rounding error
           box, which holds the really quantised weights (approp.radius.quant_scale).
    perturb_weights / perturb_biases: which parameters get a nonzero radius.
    clamp: if set, every parameter is clamped to [-clamp, clamp] after each step.
    bits, per_channel: the quantisation of kind "quant" (bits 2 … 8; unset for other kinds,
           so configurations written before them stay byte-identical).
    restricted: the integer grid of kind "quant": True is the deployment grid [−(2^(bits−1)−1),
           2^(bits−1)−1] with s = max|θ|/(2^(bits−1)−1) (TensorRT, ONNX Runtime, TFLite: int8 in
           [−127, 127], s = max/127); unset (the neutral value, reproducing runs made before it)
           is PyTorch's observer grid [−2^(bits−1), 2^(bits−1)−1] with s = max/(2^(bits−1)−½).
    """

    kind: RadiusKind = "tanh"
    lam: float = 0.01
    s: float = 100.0
    m: float = 10.0
    perturb_weights: bool = True
    perturb_biases: bool = True
    clamp: float | None = None
    bits: int | None = None
    per_channel: bool | None = None
    restricted: bool | None = None

    def __post_init__(self) -> None:
        _check_choice("radius.kind", self.kind, RadiusKind)
        if self.kind == "quant":
            if not isinstance(self.bits, int) or isinstance(self.bits, bool) or not 2 <= self.bits <= 8:
                raise ConfigError(f"radius.bits must be an integer in 2 … 8 for kind 'quant'; got {self.bits!r}")
            if self.restricted not in (None, True, False):
                raise ConfigError(f"radius.restricted must be true, false or unset; got {self.restricted!r}")
        elif self.bits is not None or self.per_channel is not None or self.restricted is not None:
            raise ConfigError(
                f"radius.bits, radius.per_channel and radius.restricted belong to kind 'quant', not {self.kind!r}"
            )
        _check_nonneg("radius.lam", self.lam)
        _check_nonneg("radius.s", self.s)
        if not (isinstance(self.m, (int, float)) and math.isfinite(self.m) and self.m > 0):
            raise ConfigError(f"radius.m must be a finite number > 0; got {self.m!r}")
        if self.clamp is not None and not (math.isfinite(self.clamp) and self.clamp > 0):
            raise ConfigError(f"radius.clamp must be > 0 or unset; got {self.clamp!r}")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule (cosine: to 0 over the run; step: ×0.1 at 50% and 75%).

    grad_clip: if set, the gradients' global L2 norm is clipped to it before each
        step (torch's clip_grad_norm_; Shi et al. and CTBench use 10). None: off. [None]
    """

    name: OptimName = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Schedule = "cosine"
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        _check_choice("optim.name", self.name, OptimName)
        _check_choice("optim.schedule", self.schedule, Schedule)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"optim.lr must be > 0; got {self.lr!r}")
        _check_nonneg("optim.momentum", self.momentum)
        _check_nonneg("optim.weight_decay", self.weight_decay)
        if self.grad_clip is not None and not (
            isinstance(self.grad_clip, (int, float))
            and not isinstance(self.grad_clip, bool)
            and math.isfinite(self.grad_clip)
            and self.grad_clip > 0
        ):
            raise ConfigError(f"optim.grad_clip must be a finite number > 0 or unset; got {self.grad_clip!r}")


@dataclass(frozen=True)
class TrainConfig:
    """The training algorithm and its budget.

    algo: app (worst case of the bounds), standard (clean), awp, pgd (adversarial training).
    eps: L∞ input radius, in [0, 1] on the [0,1] pixel scale.
    kappa: weight of the clean loss, loss = (1-kappa)·L_worst + kappa·L_clean.
    kappa_schedule: how the clean weight moves once the ramp starts (ramp factor r > 0):
        gowal: from 1 to `kappa` with the ramp, κ_t = 1 − r·(1 − kappa) (Gowal et al.'s
            IBP); [default]
        constant: `kappa` from the first ramp step on (CTBench's IBP: 0.2);
        none: the worst-case loss alone (κ_t = 0) from the first ramp step on, `kappa`
            unused (Shi et al.'s IBP).
        During the warm-up (r = 0) every schedule trains on the clean loss.
    warmup_epochs: clean training (eps = lam = 0) before the ramp starts.
    ramp_epochs: then eps and lam grow from 0 to their targets over this many epochs
        (per batch). APP at full strength from a random initialisation collapses the
        network to a constant; warm-up plus ramp avoids that (IBP/CROWN-IBP practice).
    ramp: the ramp's shape: "linear" [default], or "smoothed" (auto_LiRPA's
        SmoothedScheduler: ε ∝ step⁴ over the first quarter of the ramp, then linear
        to the target with a continuous slope; see train.schedule.smoothed_ramp).
    reg_weight: λ_reg of Shi et al.'s warm-up regularisers (bound tightness and ReLU
        balance, see train.regularisers), added to APP's loss with weight
        reg_weight·(1 − r): full in the warm-up, 0 from the end of the ramp on. The
        literature uses 0.5. 0 turns them off [0]. Used by algo "app" only.
    reg_tol: their tolerance `tol` in (0, 1] [0.5, as in the literature].
    margin_loss: worst-case logits from the margin bounds lower(z_y - z_j) (tighter)
        instead of (lower_y, upper_j).
    pgd_steps / awp_gamma: inner attack steps (step size eps/4) and AWP's relative size
        (γ follows the warm-up and ramp as eps does).
    channels_last: keep the model and its inputs in channels_last memory format, the
        native layout of tensor cores and of oneDNN on the CPU (no reorder per call).
        Bounds and gradients equal the contiguous path's to float rounding
        (tests/test_bounds_channels_last.py). Ignored by the Julia engine. [True]
    compile: compile the model's forward with torch.compile (first epoch pays the
        compilation; worth it on a GPU for long runs). [False]
    precision: "fp32", "bf16" or "auto". bf16 runs each step's loss — forward pass, interval
        bounds, the attacks inside training — under torch.autocast(dtype=bfloat16); weights,
        gradients, optimiser state and checkpoints stay fp32, and verification, the per-epoch
        metrics and `approp evaluate` compute in fp32 whatever this says (approp.precision).
        "auto" resolves when training starts, and the run directory records the result: a
        resumed run's own precision, else bf16 where the device computes it natively, else
        fp32 (approp.precision.resolve_precision). The Julia engine computes in fp32 only
        ("bf16" with engine "julia" is an error). This library default stays "fp32", so a
        config that names no precision trains alike on every machine; `approp train` without
        a config file and the shipped configs use "auto" (docs/precision.md). ["fp32"]
    """

    algo: Algo = "app"
    epochs: int = 30
    eps: float = 2 / 255
    kappa: float = 0.5
    kappa_schedule: KappaSchedule = "gowal"
    warmup_epochs: int = 1
    ramp_epochs: int = 5
    ramp: RampKind = "linear"
    reg_weight: float = 0.0
    reg_tol: float = 0.5
    margin_loss: bool = False
    seed: int = 0
    device: str = "cpu"
    engine: Engine = "torch"
    pgd_steps: int = 10
    awp_gamma: float = 0.01
    channels_last: bool = True
    compile: bool = False
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        _check_choice("train.algo", self.algo, Algo)
        _check_choice("train.engine", self.engine, Engine)
        _check_choice("train.kappa_schedule", self.kappa_schedule, KappaSchedule)
        _check_choice("train.ramp", self.ramp, RampKind)
        _check_nonneg("train.reg_weight", self.reg_weight)
        tol = self.reg_tol
        if isinstance(tol, bool) or not (isinstance(tol, (int, float)) and 0.0 < tol <= 1.0):
            raise ConfigError(f"train.reg_tol must be in (0, 1]; got {self.reg_tol!r}")
        _check_choice("train.precision", self.precision, Precision)
        if self.precision == "bf16" and self.engine == "julia":
            raise ConfigError(
                f"train.precision = {self.precision!r} needs engine 'torch': the Julia engine "
                "computes in fp32 only; use precision 'fp32' with engine 'julia'"
            )
        check_positive_int("train.epochs", self.epochs)
        check_positive_int("train.pgd_steps", self.pgd_steps)
        check_eps(self.eps, "train.eps")
        if not (0.0 <= self.kappa <= 1.0):
            raise ConfigError(f"train.kappa must be in [0, 1]; got {self.kappa!r}")
        for name in ("warmup_epochs", "ramp_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"train.{name} must be an integer >= 0; got {value!r}")
        _check_nonneg("train.awp_gamma", self.awp_gamma)
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"train.device must be 'cpu' or 'cuda[:N]'; got {self.device!r}")


def check_eps(eps: float, name: str = "eps") -> None:
    """Raises ConfigError unless eps is a finite number in [0, 1]."""
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or not 0.0 <= eps <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1] (pixels are on a [0,1] scale); got {eps!r}")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one training run; written resolved to RUN_DIR/config.toml."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    radius: RadiusConfig = field(default_factory=RadiusConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def replace(self, **sections: Any) -> RunConfig:
        """Returns a copy with fields overridden, e.g. replace(train={"eps": 0.01})."""
        updates = {}
        for name, values in sections.items():
            if name not in _SECTIONS:
                raise ConfigError(f"unknown config section {name!r}")
            updates[name] = _build(_SECTIONS[name], {**_asdict(getattr(self, name)), **values}, name)
        return dataclasses.replace(self, **updates)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Returns {section: {key: value}} with None values left out (TOML has no null)."""
        return {name: _asdict(getattr(self, name)) for name in _SECTIONS}

    def to_toml(self) -> str:
        """Returns the config as TOML text."""
        return tomli_w.dumps(self.to_dict())

    def save(self, path: Path | str) -> None:
        """Writes the config as TOML (atomically)."""
        atomic_write(path, self.to_toml())

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        """Returns a RunConfig from {section: {key: value}}; unknown keys are an error."""
        unknown = set(raw) - set(_SECTIONS)
        if unknown:
            raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}")
        return cls(**{name: _build(t, raw.get(name, {}), name) for name, t in _SECTIONS.items()})

    @classmethod
    def load(cls, path: Path | str) -> RunConfig:
        """Returns the RunConfig read from a TOML file."""
        return cls.from_dict(read_toml(path, "config file"))


def load_run_config(path: Path | str) -> RunConfig:
    """Returns the RunConfig a run directory's config.toml records.

    A file written before train.precision existed has no such key: that run trained
    in fp32, whatever the default is now.
    """
    raw = read_toml(path, "config file")
    raw.setdefault("train", {}).setdefault("precision", "fp32")
    return RunConfig.from_dict(raw)


def read_toml(path: Path | str, what: str = "file") -> dict[str, Any]:
    """Returns the parsed TOML file; ConfigError naming `what` if it is missing or not valid TOML."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None


def parse_set(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Returns {section: {key: value}} from "section.key=value" strings (a later one wins).

    Each value is parsed by its field's declared type (approp.config_set): int; float, also
    as a fraction such as "2/255" (any float field); bool (true/false, yes/no, on/off, 1/0);
    str; one of a Literal's choices; "none" or "null" unsets a field typed `X | None`. Ranges
    are checked where the result builds a config (RunConfig.replace). ConfigError names the
    field, or the known sections or keys.
    """
    try:
        return parse_assignments(items, _SECTIONS)
    except ValueError as err:
        raise ConfigError(str(err)) from None


_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "radius": RadiusConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
}


def _asdict(obj: Any) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(obj).items() if v is not None}


def _build(cls: type, values: dict[str, Any], section: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(
            f"unknown key(s) in [{section}]: {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
    try:
        return cls(**values)
    except TypeError as err:  # e.g. comparison of str with float inside a check
        raise ConfigError(f"invalid value in [{section}]: {err}") from None
