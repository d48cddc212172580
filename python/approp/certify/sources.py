"""What `approp certify` certifies: a run directory or a user's own model, on CIFAR-10 or the user's points.

Models: an approp run directory (its checkpoint); a file saved with torch.save holding
a module of any class (nn.Sequential, a residual network, a class of your own script:
torch.load unpickles it by reference, so that class must be importable under the module
name it had when saved, e.g. run from the script's folder or put it on PYTHONPATH); or a
safetensors state dict with the architecture named (one of approp.models.ARCHITECTURES:
cnn4, cnn4_bn, cnn7, resnet20, preact_resnet18, optionally `:WIDTH`). The model is traced
(torch.fx, approp.bounds.graph) and every node checked against the interval and linear
rules (approp.bounds.rules.KINDS) before any data is read, so an unsupported node is
refused by name at once; the node the model returns must be an nn.Linear (the margins
are formed there).

Points: the first n CIFAR-10 test images, or a file saved with torch.save holding
(x, y): x (N, C, H, W) float in the stated input range [lo, hi], y (N,) integer
labels. The bounds take inputs in [0, 1]; a range other than [0, 1] is mapped there
and the inverse map put in front of the model as its first layer (a per-channel
positive affine map, which has both rules), so the model sees exactly its inputs.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..bounds.graph import Graph, require, trace
from ..bounds.rules import UnsupportedLayerError
from ..bounds.spec import last_linear
from ..checkpoint import CheckpointError, load_model
from ..config import ConfigError, ModelConfig
from ..data import DataError, Split, load_cifar10, to_float
from ..models import ARCHITECTURES, Normalize, build_model

# What torch.load raises on a file that is not what it should be (truncated, another format, foreign classes).
LOAD_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    RuntimeError,
    ValueError,
    TypeError,
    OSError,
    AttributeError,
    ImportError,
    IndexError,
    KeyError,
)


def _first_line(err: BaseException, limit: int = 200) -> str:
    """Returns the error's message on one line (torch and safetensors errors span several)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: " + (text[:limit] + " …" if len(text) > limit else text)


@dataclass(frozen=True)
class Points:
    """Test points: x (N, C, H, W) float in [0, 1], y (N,) labels, and where they came from."""

    x: torch.Tensor
    y: torch.Tensor
    source: str


def check_supported(model: nn.Module) -> Graph:
    """Returns the model's traced Graph; UnsupportedLayerError naming the first node lacking a rule.

    Every node needs an interval and a linear-bound rule, and the output node must be an nn.Linear.
    """
    graph = require(trace(model), linear=True)
    try:
        return last_linear(graph)
    except TypeError as err:
        raise UnsupportedLayerError(f"{type(model).__name__}: {err} (the margins are formed there)") from None


def parse_arch(text: str) -> ModelConfig:
    """Returns the ModelConfig of 'ARCH' or 'ARCH:WIDTH' (ARCH: one of approp.models.ARCHITECTURES)."""
    arch, _, width = text.partition(":")
    try:
        return ModelConfig(arch=arch, width=int(width) if width else 1)
    except ValueError as err:
        raise ConfigError(
            f"--arch must be ARCH or ARCH:WIDTH with ARCH one of {', '.join(ARCHITECTURES)}; {err}"
        ) from None


def load_source(source: Path, arch: str | None = None, check: bool = True) -> tuple[nn.Module, str]:
    """Returns (model in eval mode, a label) from a run directory, a torch.save file or safetensors + arch.

    With `check`, raises UnsupportedLayerError (naming the layer) before any data is read.
    """
    source = Path(source)
    if source.is_dir():
        try:
            model, _ = load_model(source)
        except CheckpointError:
            raise
        except (SafetensorError, *LOAD_ERRORS) as err:
            raise CheckpointError(f"{source} holds no readable model: {_first_line(err)}") from None
    elif source.suffix == ".safetensors":
        if arch is None:
            raise ConfigError(
                f"{source} holds weights only: name the architecture with --arch ({', '.join(ARCHITECTURES)})"
            )
        model = build_model(parse_arch(arch))
        try:
            model.load_state_dict(load_file(str(source)))
        except (SafetensorError, OSError, RuntimeError) as err:
            raise CheckpointError(f"{source} does not fit {arch}: {_first_line(err)}") from None
    elif source.is_file():
        # A pickled module: only load files you trust (torch.load runs their code).
        try:
            model = torch.load(source, map_location="cpu", weights_only=False)
        except (ModuleNotFoundError, AttributeError) as err:
            raise CheckpointError(
                f"{source}: the class of the saved model cannot be imported ({_first_line(err)}); torch.load "
                "needs the module that defined it importable under the same name (run from its folder or put "
                "that folder on PYTHONPATH; a class of a script run directly lives in __main__: move it to a "
                "module the script imports, then save again)"
            ) from None
        except LOAD_ERRORS as err:
            raise CheckpointError(f"{source} is not a model saved with torch.save: {_first_line(err)}") from None
        if not isinstance(model, nn.Module):
            raise CheckpointError(f"{source} holds a {type(model).__name__}, not an nn.Module (save the model itself)")
    else:
        raise CheckpointError(f"{source} is neither a run directory nor a model file")
    if check:
        check_supported(model)
    return model.float().eval(), str(source)


def parse_range(text: str) -> tuple[float, float]:
    """Returns (lo, hi) of 'LO,HI' with lo < hi."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--input-range must be 'LO,HI'; got {text!r}") from None
    if not lo < hi:
        raise ConfigError(f"--input-range needs LO < HI; got {text!r}")
    return lo, hi


def load_points(
    data: Path | None, n: int, data_dir: str | None = None, input_range: tuple[float, float] = (0.0, 1.0)
) -> Points:
    """Returns the first n points: of the (x, y) file `data` (values within input_range), else of CIFAR-10's test set.

    Points of a file come back mapped to [0, 1] (see the module docstring and `wrap_range`).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"--n must be a whole number of points >= 1; got {n!r}")
    if data is None:
        test = Split(*load_cifar10(data_dir, train=False)).take(n)
        return Points(to_float(test.x), test.y, "CIFAR-10 test set")
    try:
        x, y = torch.load(data, map_location="cpu", weights_only=True)
        x, y = torch.as_tensor(x)[:n], torch.as_tensor(y)[:n].long()
    except LOAD_ERRORS as err:
        raise DataError(f"{data} is not a torch.save'd (x, y) pair of tensors: {_first_line(err)}") from None
    if not len(y):
        raise DataError(f"{data} holds no points")
    if x.dim() != 4 or y.shape != x.shape[:1]:
        raise DataError(f"{data}: need x (N, C, H, W) and y (N,); got {tuple(x.shape)} and {tuple(y.shape)}")
    lo, hi = input_range
    x = x.float()
    if x.numel() and (x.min().item() < lo or x.max().item() > hi):
        raise DataError(
            f"{data}: x spans [{x.min().item():g}, {x.max().item():g}], outside the stated input range [{lo:g}, {hi:g}]"
        )
    return Points((x - lo) / (hi - lo), y, str(data))


def wrap_range(model: nn.Module, channels: int, input_range: tuple[float, float]) -> nn.Module:
    """Returns the model fed inputs in [0, 1] that it sees as lo + (hi − lo)·x (itself for [0, 1])."""
    lo, hi = input_range
    if (lo, hi) == (0.0, 1.0):
        return model
    # Normalize computes (x − mean)/std: mean = −lo/(hi − lo), std = 1/(hi − lo) gives lo + (hi − lo)·x.
    front = Normalize((-lo / (hi - lo),) * channels, (1.0 / (hi - lo),) * channels)
    return nn.Sequential(front, model).eval()
