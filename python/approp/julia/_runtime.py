"""Finding Julia, configuring juliacall, and starting it: the only module that imports juliacall.

juliacall is imported lazily, on the first call that needs the Julia engine,
never at `import approp`. It is pointed at the pinned environment on purpose:
the repository's Project.toml + Manifest.toml (APProp tracked by path,
PythonCall at the version the pinned juliacall requires). By default
juliapkg would write its own project and re-resolve online, deleting a
manifest; here juliacall gets PYTHON_JULIACALL_EXE + PYTHON_JULIACALL_PROJECT,
so juliapkg never runs, and PYTHON_JULIAPKG_OFFLINE=yes +
PYTHON_JULIAPKG_PROJECT guard the case where it does. Nothing here downloads:
`setup()` runs `Pkg.instantiate()` once, when asked to.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JULIA_COMPAT = (1, 10)  # the pinned manifest was resolved for Julia 1.10 (LTS)
JULIACALL_VERSION = "0.9.36"  # requires PythonCall =0.9.36, which Manifest.toml pins

INSTALL_HINT = (
    "Install the Julia engine in three steps:\n"
    f"  1. pip install 'approp[julia]'          (juliacall=={JULIACALL_VERSION})\n"
    "  2. install Julia 1.10 (LTS), e.g. with juliaup: "
    "`curl -fsSL https://install.julialang.org | sh -s -- --default-channel 1.10`,\n"
    "     or point the JULIA (or PYTHON_JULIACALL_EXE) environment variable at an existing julia\n"
    "  3. approp julia-setup                    (one-time Pkg.instantiate of the pinned environment)"
)


class JuliaUnavailableError(RuntimeError):
    """The Julia engine cannot start here; the message says what is missing and how to install it."""


@dataclass(frozen=True)
class SetupReport:
    """What `setup()` did: the Julia used, the project instantiated, the commands run."""

    julia: str
    version: str
    project: str
    commands: list[list[str]] = field(default_factory=list)
    seconds: float = 0.0
    stamp: str = ""

    def __str__(self) -> str:
        cmds = "\n".join("  $ " + " ".join(c) for c in self.commands) or "  (nothing run)"
        return (
            f"Julia {self.version} at {self.julia}\n"
            f"instantiated and precompiled the pinned environment {self.project}\n"
            f"{cmds}\n"
            f"took {self.seconds:.0f} s; setup recorded in {self.stamp}"
        )


def project_dir() -> Path:
    """Returns the folder holding the pinned Project.toml + Manifest.toml.

    APPROP_JULIA_PROJECT overrides; otherwise the repository root above this file.
    """
    override = os.environ.get("APPROP_JULIA_PROJECT")
    if override:
        return Path(override).resolve()
    for parent in Path(__file__).resolve().parents:
        if (parent / "Manifest.toml").is_file() and (parent / "julia" / "Project.toml").is_file():
            return parent
    raise JuliaUnavailableError(
        "the pinned Julia environment (Project.toml, Manifest.toml and julia/) was not found "
        "above the approp package; use a source checkout (pip install -e .) or set "
        "APPROP_JULIA_PROJECT to the folder that holds them"
    )


def _julia_version(exe: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=60, check=True
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    if len(out) >= 3 and out[0].lower() == "julia" and out[1] == "version":
        return tuple(int(p) for p in out[2].split("-")[0].split(".")[:3])
    return None


def find_julia() -> str | None:
    """Returns the path of the julia executable to use, or None.

    Order: PYTHON_JULIACALL_EXE, JULIA, PYTHON_JULIAPKG_EXE, `julia` on PATH,
    juliaup's default link; a variable that is set but names no executable is
    skipped, so the next candidate is tried. Nothing is downloaded.
    """
    for var in ("PYTHON_JULIACALL_EXE", "JULIA", "PYTHON_JULIAPKG_EXE"):
        value = os.environ.get(var)
        found = shutil.which(value) if value else None
        if found:
            return found
    found = shutil.which("julia")
    if found:
        return found
    juliaup = Path.home() / ".juliaup" / "bin" / "julia"
    return str(juliaup) if juliaup.is_file() else None


def _require_julia() -> tuple[str, tuple[int, ...]]:
    exe = find_julia()
    if exe is None:
        raise JuliaUnavailableError(
            "no Julia runtime was found (JULIA, PATH, juliaup).\n" + INSTALL_HINT
        )
    version = _julia_version(exe)
    if version is None:
        raise JuliaUnavailableError(
            f"{exe} did not answer `--version` as Julia does.\n" + INSTALL_HINT
        )
    if version[:2] != JULIA_COMPAT or version < (1, 10, 3):
        raise JuliaUnavailableError(
            f"{exe} is Julia {'.'.join(map(str, version))}; the pinned environment needs "
            "Julia 1.10.3 or later 1.10.x (juliacall needs >= 1.10.3).\n" + INSTALL_HINT
        )
    return exe, version


def _manifest_digest(project: Path) -> str:
    return hashlib.sha256((project / "Manifest.toml").read_bytes()).hexdigest()


def _stamp_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "approp" / "julia-setup.json"


def _julia_env(project: Path) -> dict[str, str]:
    env = dict(os.environ)
    # PythonCall must use this Python, never a Conda environment it would download.
    env.setdefault("JULIA_CONDAPKG_BACKEND", "Null")
    env.setdefault("JULIA_PYTHONCALL_EXE", sys.executable)
    env["JULIA_PROJECT"] = str(project)
    return env


def setup(julia: str | None = None, precompile: bool = True, runner=subprocess.run) -> SetupReport:
    """Returns a report after instantiating the pinned environment once (needs network for Pkg).

    julia: executable to use (default: `find_julia()`); precompile: also run
    Pkg.precompile() so the first engine start is quick. Raises
    JuliaUnavailableError where no suitable Julia exists or the instantiation fails.
    """
    if julia is not None:
        os.environ["JULIA"] = julia
    exe, version = _require_julia()
    project = project_dir()
    script = "import Pkg; Pkg.instantiate()" + ("; Pkg.precompile()" if precompile else "")
    cmd = [exe, f"--project={project}", "--startup-file=no", "-e", script]
    start = time.perf_counter()
    try:
        runner(cmd, check=True, env=_julia_env(project))
    except subprocess.CalledProcessError as err:  # Julia printed why (offline, a failed build) above
        raise JuliaUnavailableError(
            f"`{' '.join(cmd)}` failed with exit status {err.returncode} (Julia's messages are above); "
            "Pkg.instantiate() needs network access once, to download the pinned packages"
        ) from None
    stamp = _stamp_path()
    stamp.parent.mkdir(parents=True, exist_ok=True)
    record = {"julia": exe, "project": str(project), "manifest_sha256": _manifest_digest(project)}
    stamp.write_text(json.dumps(record, indent=2))
    return SetupReport(
        exe,
        ".".join(map(str, version)),
        str(project),
        [cmd],
        time.perf_counter() - start,
        str(stamp),
    )


def availability() -> tuple[bool, str]:
    """Returns (True, "") where the Julia engine can start, else (False, the reason)."""
    try:
        import importlib.util

        if importlib.util.find_spec("juliacall") is None:
            return False, "juliacall is not installed.\n" + INSTALL_HINT
        exe, _ = _require_julia()
        project = project_dir()
        _check_setup(exe, project)
    except JuliaUnavailableError as err:
        return False, str(err)
    return True, ""


def _check_setup(exe: str, project: Path) -> None:
    stamp = _stamp_path()
    try:
        record = json.loads(stamp.read_text())
    except (OSError, ValueError):
        record = {}
    if record.get("manifest_sha256") != _manifest_digest(project) or record.get("project") != str(
        project
    ):
        raise JuliaUnavailableError(
            f"Julia was found ({exe}) but the pinned environment {project} is not instantiated "
            "for this Manifest.toml yet: run `approp julia-setup` once (it runs Pkg.instantiate())."
        )


def configure(exe: str, project: Path) -> None:
    """Sets the environment variables that point juliacall at `exe` and the pinned `project`.

    Existing PYTHON_JULIACALL_EXE/PROJECT settings are respected.
    """
    if not (os.environ.get("PYTHON_JULIACALL_EXE") and os.environ.get("PYTHON_JULIACALL_PROJECT")):
        os.environ["PYTHON_JULIACALL_EXE"] = exe
        os.environ["PYTHON_JULIACALL_PROJECT"] = str(project)
    os.environ.setdefault("PYTHON_JULIAPKG_PROJECT", str(project))
    os.environ.setdefault("PYTHON_JULIAPKG_OFFLINE", "yes")
    os.environ.setdefault("JULIA_CONDAPKG_BACKEND", "Null")


_MAIN: Any = None


def julia_main() -> Any:
    """Returns juliacall's Main with APProp loaded, starting Julia on the first call.

    Raises JuliaUnavailableError (what is missing, how to install) where
    juliacall, Julia or the one-time setup is missing; it never downloads.
    """
    global _MAIN
    if _MAIN is not None:
        return _MAIN
    main = _import_juliacall().Main
    main.seval("using APProp")
    _MAIN = main
    return main


TORCH_FIRST = (
    "torch was imported before juliacall, which juliacall warns may segfault (both load "
    "their own libstdc++/OpenMP). Call approp.julia.preload() before importing torch; "
    "the approp command does so when --engine julia is given."
)


def _import_juliacall() -> Any:
    """Returns the juliacall module (Julia started), pointed at the pinned environment first.

    Raises JuliaUnavailableError where juliacall, Julia or the one-time setup is missing.
    """
    ok, reason = availability()
    if not ok:
        raise JuliaUnavailableError(reason)
    exe, _ = _require_julia()
    configure(exe, project_dir())
    if "juliacall" not in sys.modules and "torch" in sys.modules:
        warnings.warn(TORCH_FIRST, RuntimeWarning, stacklevel=3)
    import juliacall

    return juliacall


def preload() -> bool:
    """Returns whether juliacall is imported now, importing it (Julia started) where it can be.

    Call it before `import torch` in a process that will use the Julia
    engine: juliacall 0.9.3x warns that importing torch first may segfault.
    Where the engine cannot start it does nothing and returns False; the
    engine's own JuliaUnavailableError says why when it is asked for.
    """
    if "juliacall" in sys.modules:
        return True
    try:
        _import_juliacall()
    except JuliaUnavailableError:
        return False
    return True


def engine_requested(argv: Sequence[str]) -> bool:
    """Returns whether the command line `argv` selects the Julia engine.

    As the CLI resolves it: `--set train.engine=...` (the last wins) over `--engine julia` or
    `--engine=julia` (the last wins), over a `--config` TOML file whose [train] engine is "julia".
    """
    given: dict[str, str] = {}
    for i, arg in enumerate(argv):
        for name in ("--engine", "--config", "--set"):
            if arg == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(name + "="):
                value = arg[len(name) + 1 :]
            else:
                continue
            if name != "--set":
                given[name] = value
            elif value.replace(" ", "").startswith("train.engine="):
                given[name] = value.split("=", 1)[1].strip()
    for name in ("--set", "--engine"):
        if name in given:
            return given[name] == "julia"
    return "--config" in given and _config_engine(Path(given["--config"])) == "julia"


def _config_engine(path: Path) -> Any:
    """Returns the [train] engine of the TOML config at `path`, or None (unreadable: the CLI reports it)."""
    try:
        train = tomllib.loads(path.read_text()).get("train")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    return train.get("engine") if isinstance(train, dict) else None


def preload_for_argv(argv: Sequence[str]) -> bool:
    """Returns whether juliacall was imported: `preload()` when `argv` selects the Julia engine."""
    return engine_requested(argv) and preload()


def load_cuda(index: int = 0) -> None:
    """Loads CUDA.jl and cuDNN (activating APProp's CUDA extension) and selects device `index`.

    `index` is torch's N in cuda:N; a GPU that does not exist raises ValueError naming it.
    """
    main = julia_main()
    main.seval("using CUDA, cuDNN")
    cuda = main.Symbol("cuda")
    if not bool(main.APProp.backend_available(cuda)):
        raise RuntimeError("CUDA.jl loaded but found no functional GPU for the Julia engine")
    from juliacall import JuliaError

    try:
        main.APProp.select_device_b(cuda, int(index))
    except JuliaError as err:
        raise ValueError(f"the Julia engine cannot use cuda:{index}: {err}") from None


_ARRAY_TYPES: dict[tuple[str, int], Any] = {}
_JULIA_ELTYPES = {"float32": "Float32", "float64": "Float64", "int64": "Int64"}


def to_julia_array(arr: Any) -> Any:
    """Returns a Julia Array with the same element type, shape and indexing as numpy `arr`."""
    eltype = _JULIA_ELTYPES.get(str(arr.dtype))
    if eltype is None:
        raise TypeError(
            f"arrays for the Julia engine must be float32, float64 or int64; got {arr.dtype}"
        )
    # julia_main() first: it points juliacall at the pinned environment before the first
    # `import juliacall`, which would otherwise let juliapkg resolve its own one online.
    main = julia_main()
    import juliacall

    key = (eltype, arr.ndim)
    if key not in _ARRAY_TYPES:
        _ARRAY_TYPES[key] = main.seval(f"Array{{{eltype},{arr.ndim}}}")
    return juliacall.convert(_ARRAY_TYPES[key], arr)
