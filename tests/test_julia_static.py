"""Checks of the Julia side that need no Julia: the pinned manifest, the grammar check, laziness."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib

from approp.julia import convert
from approp.julia._runtime import JULIACALL_VERSION

REPO = Path(__file__).resolve().parents[1]
MANIFEST = tomllib.loads((REPO / "Manifest.toml").read_text())
PROJECT = tomllib.loads((REPO / "Project.toml").read_text())
APPROP = tomllib.loads((REPO / "julia" / "Project.toml").read_text())
ENTRIES = {name: entries[0] for name, entries in MANIFEST["deps"].items()}

# Julia 1.10's standard libraries: entries without git-tree-sha1 must be one of these.
STDLIBS = set(
    [
        "ArgTools",
        "Artifacts",
        "Base64",
        "CRC32c",
        "CompilerSupportLibraries_jll",
        "Dates",
        "Distributed",
        "Downloads",
        "FileWatching",
        "Future",
        "GMP_jll",
        "InteractiveUtils",
        "LLD_jll",
        "LLVMLibUnwind_jll",
        "LazyArtifacts",
        "LibCURL",
        "LibCURL_jll",
        "LibGit2",
        "LibGit2_jll",
        "LibSSH2_jll",
        "LibUV_jll",
        "LibUnwind_jll",
        "Libdl",
        "LinearAlgebra",
        "Logging",
        "MPFR_jll",
        "Markdown",
        "MbedTLS_jll",
        "Mmap",
        "MozillaCACerts_jll",
        "NetworkOptions",
        "OpenBLAS_jll",
        "OpenLibm_jll",
        "PCRE2_jll",
        "Pkg",
        "Printf",
        "Profile",
        "REPL",
        "Random",
        "SHA",
        "Serialization",
        "SharedArrays",
        "Sockets",
        "SparseArrays",
        "Statistics",
        "SuiteSparse",
        "SuiteSparse_jll",
        "TOML",
        "Tar",
        "Test",
        "UUIDs",
        "Unicode",
        "Zlib_jll",
        "dSFMT_jll",
        "libLLVM_jll",
        "libblastrampoline_jll",
        "nghttp2_jll",
        "p7zip_jll",
    ]
)


def _deps(entry: dict, key: str = "deps") -> dict[str, str | None]:
    value = entry.get(key, [])
    return dict(value) if isinstance(value, dict) else {name: None for name in value}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("+")[0].split("."))


def _compat_allows(spec: str, version: str) -> bool:
    """Returns whether Pkg's caret compat `spec` (comma-separated "1", "0.14", "=0.9.36") allows version."""
    v = _version(version)
    for part in (p.strip() for p in spec.split(",")):
        if part.startswith("="):
            if v == _version(part[1:]):
                return True
            continue
        lo = _version(part.lstrip("^"))
        first = next((i for i, x in enumerate(lo) if x != 0), len(lo) - 1)
        hi = lo[: first + 1]
        hi = hi[:-1] + (hi[-1] + 1,)
        padded = lo + (0,) * (3 - len(lo))
        if padded <= v + (0,) * (3 - len(v)) and v[: len(hi)] < hi:
            return True
    return False


def test_manifest_header():
    assert MANIFEST["manifest_format"] == "2.0"
    assert re.fullmatch(r"1\.10\.\d+", MANIFEST["julia_version"])


def test_every_dependency_is_an_entry():
    for name, entry in ENTRIES.items():
        for dep, uuid in _deps(entry).items():
            assert dep in ENTRIES, f"{name} depends on {dep}, which has no entry"
            if uuid is not None:
                assert ENTRIES[dep]["uuid"] == uuid


def test_list_form_weakdeps_name_entries():
    # Pkg reads a weakdeps list by name from the manifest; absent ones must use the uuid table form.
    for name, entry in ENTRIES.items():
        if isinstance(entry.get("weakdeps"), list):
            missing = [w for w in entry["weakdeps"] if w not in ENTRIES]
            assert not missing, f"{name}: weakdeps {missing} must be a table with uuids"
        for ext, trigger in entry.get("extensions", {}).items():
            triggers = [trigger] if isinstance(trigger, str) else trigger
            assert set(triggers) <= set(_deps(entry, "weakdeps")), f"{name}.{ext}"


def test_registered_entries_are_fully_pinned():
    for name, entry in ENTRIES.items():
        if "path" in entry:
            continue
        if "git-tree-sha1" in entry:
            assert re.fullmatch(r"[0-9a-f]{40}", entry["git-tree-sha1"]), name
            assert re.fullmatch(r"[0-9a-f-]{36}", entry["uuid"]) and "version" in entry, name
        else:
            assert name in STDLIBS, f"{name} has no git-tree-sha1 and is not a standard library"


def test_approp_is_a_path_entry_with_its_project():
    entry = ENTRIES["APProp"]
    assert entry["path"] == "julia"
    assert entry["uuid"] == APPROP["uuid"] and entry["version"] == APPROP["version"]
    assert set(_deps(entry)) == set(APPROP["deps"])
    assert set(_deps(entry, "weakdeps")) == set(APPROP["weakdeps"])
    assert entry["extensions"] == APPROP["extensions"]
    for name, uuid in {**APPROP["deps"], **APPROP["weakdeps"]}.items():
        assert ENTRIES[name]["uuid"] == uuid, name


def test_pins_satisfy_compat():
    for project in (APPROP, PROJECT):
        for name, spec in project.get("compat", {}).items():
            if name == "julia":
                assert _compat_allows(spec, MANIFEST["julia_version"])
            elif name in ENTRIES and "version" in ENTRIES[name]:
                assert _compat_allows(spec, ENTRIES[name]["version"]), f"{name} {spec}"


# The oldest version of each package that has what APProp calls (read from their sources).
APPROP_NEEDS = {
    "Flux": ("0.14.13", "0.14.12"),  # Flux.@layer
    "Zygote": ("0.6.67", "0.6.62"),  # aux-output withgradient (0.6.63); Flux 0.14.20 needs 0.6.67
    "Optimisers": ("0.3.3", "0.3.2"),  # Optimisers.trainables
    "ChainRulesCore": ("1.12.0", "1.7.0"),  # ignore_derivatives (1.8); Flux 0.14.20 needs 1.12
    "NNlib": ("0.9.22", "0.9.21"),  # Flux 0.14.20's floor
}


@pytest.mark.parametrize("name", sorted(APPROP_NEEDS))
def test_approp_compat_floors_are_what_the_code_needs(name):
    oldest, too_old = APPROP_NEEDS[name]
    spec = APPROP["compat"][name]
    assert _compat_allows(spec, oldest) and not _compat_allows(spec, too_old), f"{name} {spec}"
    assert _compat_allows(spec, ENTRIES[name]["version"])


def test_compat_checker_itself():
    assert _compat_allows("0.14", "0.14.20") and not _compat_allows("0.14", "0.15.0")
    assert _compat_allows("5", "5.4.3") and not _compat_allows("5", "4.9.0")
    assert _compat_allows("=0.9.36", "0.9.36") and not _compat_allows("=0.9.36", "0.9.37")


def test_pythoncall_matches_juliacall_pin():
    assert ENTRIES["PythonCall"]["version"] == JULIACALL_VERSION
    assert PROJECT["compat"]["PythonCall"] == f"={JULIACALL_VERSION}"
    spec = importlib.util.find_spec("juliacall")
    if spec is not None and spec.origin:
        required = json.loads((Path(spec.origin).parent / "juliapkg.json").read_text())
        installed = required["packages"]["PythonCall"]["version"]
        if installed != f"={JULIACALL_VERSION}":
            pytest.fail(f"installed juliacall requires PythonCall {installed}; install juliacall=={JULIACALL_VERSION}")


def test_project_hash_matches_the_project():
    # Pkg's project_resolve_hash: sorted "name=uuid" lines, then sorted "name=compat" lines.
    lines = [f"{k}={v}\n" for k, v in sorted(PROJECT["deps"].items())]
    lines += [f"{k}={v.lstrip('=')}\n" for k, v in sorted(PROJECT.get("compat", {}).items())]
    assert hashlib.sha1("".join(lines).encode()).hexdigest() == MANIFEST["project_hash"]


def test_top_project_deps_are_entries():
    for name, uuid in PROJECT["deps"].items():
        assert ENTRIES[name]["uuid"] == uuid


def _check_julia():
    pytest.importorskip("tree_sitter_julia", reason="tree-sitter-julia is a test dependency")
    spec = importlib.util.spec_from_file_location("check_julia", REPO / "tools" / "check_julia.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grammar_check_passes_on_the_package():
    assert _check_julia().parse_errors(REPO / "julia") == []


def test_grammar_check_fails_on_a_broken_file(tmp_path):
    check = _check_julia()
    (tmp_path / "good.jl").write_text("f(x) = x + 1\n")
    (tmp_path / "broken.jl").write_text("function f(x)\n    x +\nend\n\nstruct S\n")
    problems = check.parse_errors(tmp_path)
    assert problems and all("broken.jl" in p for p in problems)
    if check._fatou() is not None:
        assert check.main(["check_julia", str(tmp_path)]) == 1


def test_full_check_passes_on_the_package():
    check = _check_julia()
    if check._fatou() is None:
        pytest.skip("fatou is a test dependency")
    assert check.main(["check_julia", str(REPO / "julia")]) == 0


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, check=False)


def test_importing_approp_does_not_import_juliacall():
    code = (
        "import sys, approp, approp.julia, approp.julia.engine, approp.julia.convert\n"
        "assert 'juliacall' not in sys.modules and 'juliapkg' not in sys.modules\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr


def test_missing_julia_gives_one_clear_error():
    code = (
        "import sys\n"
        "from approp import julia\n"
        "try:\n    julia.get_engine()\nexcept julia.JuliaUnavailableError as e:\n"
        "    print(e)\n"
        "assert 'juliacall' not in sys.modules\n"
    )
    proc = _python(
        code,
        PATH="/nonexistent",
        HOME=str(REPO / "no-home"),
        JULIA="",
        PYTHON_JULIACALL_EXE="",
        PYTHON_JULIAPKG_EXE="",
    )
    assert proc.returncode == 0, proc.stderr
    # The first missing piece is named: juliacall itself where the `julia` extra is not
    # installed (as in CI), else the Julia runtime; either way the message says how to fix it.
    missing = "no Julia runtime" if importlib.util.find_spec("juliacall") else "juliacall is not installed"
    assert missing in proc.stdout and "approp julia-setup" in proc.stdout


def test_flatten_orders_agree():
    # Flux flattens (W, H, C) column-major; PyTorch flattens (C, H, W) row-major: same order.
    f = np.arange(4 * 3 * 5).reshape(4, 3, 5)  # (C, H, W)
    julia_layout = convert.images_to_julia(f[None])[..., 0]  # (W, H, C)
    assert np.array_equal(julia_layout.ravel(order="F"), f.reshape(-1))


def test_param_roundtrip_and_layout():
    rng = np.random.default_rng(0)
    shapes = {
        "layers.1.weight": (32, 3, 3, 3),
        "layers.1.bias": (32,),
        "layers.3.weight": (32, 32, 3, 3),
        "layers.3.bias": (32,),
        "layers.6.weight": (64, 32, 3, 3),
        "layers.6.bias": (64,),
        "layers.8.weight": (64, 64, 3, 3),
        "layers.8.bias": (64,),
        "layers.12.weight": (256, 4096),
        "layers.12.bias": (256,),
        "layers.14.weight": (10, 256),
        "layers.14.bias": (10,),
    }
    params = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    arrays = convert.params_to_julia(params)
    w = arrays[0]  # (kW, kH, in, out)
    assert w.shape == (3, 3, 3, 32) and w[2, 1, 0, 5] == params["layers.1.weight"][5, 0, 1, 2]
    back = convert.params_from_julia(arrays)
    assert all(np.array_equal(back[k], params[k]) for k in params)
    with pytest.raises(KeyError, match="layers.14.bias"):
        convert.params_to_julia({k: v for k, v in params.items() if k != "layers.14.bias"})
    assert np.array_equal(convert.labels_to_julia(np.array([0, 9])), [1, 10])


def test_arrays_from_julia_are_owned_copies():
    # A Julia (K, B) matrix reaches numpy F-ordered; its transpose is C-contiguous, so
    # ascontiguousarray would return a view of Julia's memory.
    z = np.asfortranarray(np.arange(20.0).reshape(10, 2))
    out = convert.logits_from_julia(z)
    assert out.shape == (2, 10) and out[1, 3] == z[3, 1]
    assert out.flags.owndata and out.flags.c_contiguous and not np.shares_memory(out, z)
    w = np.asfortranarray(np.zeros((3, 3, 3, 32), np.float32))  # Flux layout, reversed: C-order
    b = np.zeros(32, np.float32)
    for name, arr in (("layers.1.weight", w), ("layers.1.bias", b)):
        back = convert.param_from_julia(name, arr)
        assert back.flags.owndata and back.flags.c_contiguous and not np.shares_memory(back, arr)
    assert convert.param_from_julia("layers.1.weight", w).shape == (32, 3, 3, 3)
