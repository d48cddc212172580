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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._runtime import (
    JuliaUnavailableError,
    SetupReport,
    availability,
    find_julia,
    preload,
    project_dir,
    setup,
)

if TYPE_CHECKING:
    from .engine import JuliaEngine

__all__ = [
    "JuliaUnavailableError",
    "SetupReport",
    "availability",
    "find_julia",
    "get_engine",
    "preload",
    "project_dir",
    "setup",
]

_ENGINES: dict[str, JuliaEngine] = {}


def get_engine(device: str = "cpu") -> JuliaEngine:
    """Returns the (cached) JuliaEngine for `device` ("cpu" or "cuda"), starting Julia if needed.

    Raises JuliaUnavailableError where juliacall, Julia 1.10 or the one-time
    `approp julia-setup` is missing.
    """
    from .engine import JuliaEngine

    key = "cuda" if device.startswith("cuda") else "cpu"
    if key not in _ENGINES:
        _ENGINES[key] = JuliaEngine(key)
    return _ENGINES[key]
