"""The Julia engine: APProp (the Julia package in julia/) called through juliacall.

Importing this package starts nothing (and imports no torch): juliacall is
imported, and Julia started, on the first `get_engine()`, or earlier by
`preload()`, which a program using the Julia engine calls before importing
torch (juliacall warns that the other order may segfault). Where no Julia
runtime exists `get_engine()` raises `JuliaUnavailableError`, whose message
says what is missing and how to install it; nothing is downloaded on its own.

    from approp import julia
    julia.setup()                  # once: Pkg.instantiate() of the pinned environment
    engine = julia.get_engine()    # JuliaEngine, numpy in / numpy out
    lower, upper = engine.bounds(params, x, eps, radius)

The rest of approp reaches the Julia engine only through the names below:
the command line calls `preload_for_argv`, the training loop `check_julia_run`
and `JuliaEpochs` (runner.py), the bounds summary `bound_stats` (measures.py).
The last three import torch, so they load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._runtime import (
    JuliaUnavailableError,
    SetupReport,
    availability,
    engine_requested,
    find_julia,
    preload,
    preload_for_argv,
    project_dir,
    setup,
)

if TYPE_CHECKING:
    from .engine import JuliaEngine
    from .measures import bound_stats
    from .runner import JuliaEpochs, check_julia_run

__all__ = [
    "JuliaEpochs",
    "JuliaUnavailableError",
    "SetupReport",
    "availability",
    "bound_stats",
    "check_julia_run",
    "engine_requested",
    "find_julia",
    "get_engine",
    "parse_device",
    "preload",
    "preload_for_argv",
    "project_dir",
    "setup",
]

# Public names whose modules import torch: loaded on first access (PEP 562), so that importing
# this package stays free of torch and juliacall can still be imported before torch.
_LAZY = {"JuliaEpochs": "runner", "check_julia_run": "runner", "bound_stats": "measures"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_ENGINES: dict[str, JuliaEngine] = {}


def parse_device(device: str) -> tuple[str, int]:
    """Returns (backend, index) of "cpu", "cuda" or "cuda:N"; "cuda" alone is device 0.

    Raises ValueError for anything else (torch's other device types have no Julia backend).
    """
    backend, _, index = device.partition(":")
    if backend in ("cpu", "cuda") and (index == "" or index.isdigit()):
        n = int(index or 0)
        if backend == "cpu" and n != 0:
            raise ValueError(f"the Julia engine has one CPU device; got {device!r}")
        return backend, n
    raise ValueError(f"the Julia engine runs on 'cpu' or 'cuda[:N]'; got {device!r}")


def get_engine(device: str = "cpu") -> JuliaEngine:
    """Returns the (cached) JuliaEngine for `device` ("cpu", "cuda" or "cuda:N"), starting Julia if needed.

    `cuda:N` reaches CUDA.jl as device N (`CUDA.device!(N)`, 0-based like torch's). One
    process holds one Julia CUDA device: asking for a second index is refused by name.
    Raises JuliaUnavailableError where juliacall, Julia or the one-time
    `approp julia-setup` is missing.
    """
    from .engine import JuliaEngine

    backend, index = parse_device(device)
    key = f"{backend}:{index}"
    held = [k for k in _ENGINES if k.startswith("cuda:") and k != key]
    if backend == "cuda" and held:
        raise ValueError(
            f"the Julia engine already runs on {held[0]} in this process and cannot also use "
            f"{key}: CUDA.jl's current device is per process here; start another process"
        )
    if key not in _ENGINES:
        _ENGINES[key] = JuliaEngine(key)
    return _ENGINES[key]
