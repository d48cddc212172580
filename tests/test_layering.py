"""Imports inside approp only point down the declared order of layers.

Every module under python/approp is parsed with `ast`; each `from .x import`,
`from approp.x import` and `import approp.x` (at module level or inside a
function) is mapped to the unit it reaches (the top-level module or package
under approp) and that unit's layer. An import fails when it reaches a higher
layer, when units of one layer import each other in a cycle, when it reaches a
private module (`_name`) of another unit, when the bound engine reaches the
model zoo, or when juliacall is imported outside approp.julia.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "approp"

# The declared order, lowest first: a unit may import its own layer's units and lower ones.
# rundir (run-directory I/O) sits at the bottom because config.save writes through it; the
# training report lives in train (train.report); bound_summary is `approp bounds`, above both engines.
LAYERS: list[tuple[str, ...]] = [
    (
        "config",
        "config_set",
        "precision",
        "stats",
        "outcomes",
        "progress",
        "layers",
        "formatting",
        "rundir",
        "distributed",
    ),
    ("data", "models", "radius", "boxes", "checkpoint"),
    ("bounds",),
    ("attacks", "certify", "faults", "metrics", "landscape", "neighbourhood"),
    ("train", "julia"),
    ("evaluate", "eval_report", "bound_summary"),
    ("experiments",),
    ("cli",),
]
# Imports the order alone allows but the design forbids: (importer, imported) → why.
FORBIDDEN: dict[tuple[str, str], str] = {
    ("bounds", "models"): "the bound engine knows no model zoo (the normalisation is approp.layers)",
}
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}
LAYER_OF["__init__"] = 0  # approp/__init__.py, imported by every module: may reach the lowest layer only


def _targets(node: ast.AST, parts: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Returns the approp module paths (without 'approp') one import node reaches.

    parts: the importing module's path under approp, e.g. ("attacks", "joint").
    """
    if isinstance(node, ast.Import):
        return [tuple(a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == "approp"]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level == 0:
        if (node.module or "").split(".")[0] != "approp":
            return []
        base = tuple(node.module.split(".")[1:])
    else:
        package = parts[:-1]  # the importing module's package (a package's __init__ is its own)
        base = package[: len(package) - (node.level - 1)] + (tuple(node.module.split(".")) if node.module else ())
    if base:
        return [base]
    return [(a.name,) for a in node.names]  # `from . import julia` reaches approp.julia


def _imports_juliacall(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(a.name.split(".")[0] == "juliacall" for a in node.names)
    return isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "juliacall"


def violations(sources: dict[str, str]) -> list[str]:
    """Returns one message per import that breaks the declared order, for {path under approp: source}."""
    found: list[str] = []
    edges: dict[tuple[str, str], str] = {}
    for path, source in sorted(sources.items()):
        parts = tuple(Path(path).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1] + ("__init__",)
        unit = parts[0]
        if unit not in LAYER_OF:
            found.append(f"{path}: unit {unit!r} has no layer in LAYERS")
            continue
        for node in ast.walk(ast.parse(source)):
            where = f"{path}:{getattr(node, 'lineno', 0)}"
            if _imports_juliacall(node) and unit != "julia":
                found.append(f"{where} imports juliacall outside approp.julia")
            for target in _targets(node, parts):
                found += _check(where, unit, target, edges)
    return found + _cycles(edges)


def _check(where: str, unit: str, target: tuple[str, ...], edges: dict[tuple[str, str], str]) -> list[str]:
    """Returns the messages for one import of approp.<target> by a module of `unit`."""
    if not target or target[0] == unit:  # inside its own unit: that unit's business
        return []
    to = target[0]
    if to not in LAYER_OF:
        return [f"{where} imports approp.{'.'.join(target)}, which is no unit of LAYERS"]
    out = []
    if LAYER_OF[to] > LAYER_OF[unit]:
        out.append(
            f"{where} imports approp.{'.'.join(target)}: {to} (layer {LAYER_OF[to]}) "
            f"is above {unit} (layer {LAYER_OF[unit]})"
        )
    if (unit, to) in FORBIDDEN:
        out.append(f"{where} imports approp.{'.'.join(target)}: {FORBIDDEN[unit, to]}")
    if any(p.startswith("_") and not p.startswith("__") for p in target[1:]):
        out.append(f"{where} imports the private module approp.{'.'.join(target)} from outside {to}")
    if LAYER_OF[to] == LAYER_OF[unit]:
        edges.setdefault((unit, to), where)
    return out


def _cycles(edges: dict[tuple[str, str], str]) -> list[str]:
    """Returns one message per pair of units of one layer that reach each other (directly or not)."""
    reach: dict[str, set[str]] = {}
    for a, b in edges:
        reach.setdefault(a, set()).add(b)
    changed = True
    while changed:  # transitive closure; a layer holds a handful of units
        changed = False
        for bs in reach.values():
            more = set().union(*(reach.get(b, set()) for b in bs)) - bs
            if more:
                bs |= more
                changed = True
    return [
        f"{where}: {a} imports {b}, and {b} reaches {a} (a cycle within one layer)"
        for (a, b), where in sorted(edges.items())
        if a in reach.get(b, set())
    ]


def _package_sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE)): p.read_text(encoding="utf-8") for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_unit_has_a_layer_and_every_import_points_down():
    sources = _package_sources()
    assert len(sources) > 50  # the package was found
    assert violations(sources) == []


def test_layers_name_each_unit_once():
    units = [u for layer in LAYERS for u in layer]
    assert len(units) == len(set(units))


# The imports issue 24 listed, each as it was written, beside what it would need to fail on.
@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        (
            {
                "attacks/joint.py": "from ..certify.sampling import Box\n",
                "certify/statistical_views.py": "from ..attacks.joint import joint_attack_margins\n",
            },
            "a cycle within one layer",
        ),
        ({"evaluate.py": "from .experiments.statistical_plot import plot_statistical\n"}, "is above evaluate"),
        ({"bounds/rules.py": "from ..models import Normalize\n"}, "knows no model zoo"),
        ({"bounds/linear_rules.py": "def f():\n    from approp.models import Normalize\n"}, "knows no model zoo"),
        (
            {"cli/__init__.py": "from ..julia._runtime import preload_for_argv\n"},
            "private module approp.julia._runtime",
        ),
        ({"metrics.py": "def f():\n    from . import julia\n"}, "julia (layer 4) is above metrics"),
        ({"train/julia_runner.py": "import juliacall\n"}, "juliacall outside approp.julia"),
    ],
)
def test_checker_flags_the_imports_the_issue_listed(sources, expected):
    found = violations(sources)
    assert any(expected in f for f in found), found


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        ({"train/loop.py": "def f():\n    from ..report import write_train_report\n"}, "no unit of LAYERS"),
        ({"report.py": "x = 1\n"}, "unit 'report' has no layer"),
        ({"checkpoint.py": "import approp.train.loop\n"}, "train (layer 4) is above checkpoint"),
        ({"__init__.py": "from .evaluate import Evaluator\n"}, "evaluate (layer 5) is above __init__"),
        ({"config.py": "from approp.experiments import preset\n"}, "experiments (layer 6) is above config"),
    ],
)
def test_checker_flags_unknown_units_and_other_upward_imports(sources, expected):
    found = violations(sources)
    assert any(expected in f for f in found), found


@pytest.mark.parametrize(
    "sources",
    [
        {"train/loop.py": "def f():\n    from .. import julia\n"},  # same layer, one way
        {"julia/engine.py": "from . import _runtime\n"},  # a unit's own private module
        {"evaluate.py": "from .certify.run import certify_model\nimport approp.boxes\n"},
        {"certify/run.py": "from .sources import Points\n"},
    ],
)
def test_checker_allows_imports_that_point_down_or_stay_inside(sources):
    assert violations(sources) == []


def unit_imports(sources: dict[str, str]) -> set[tuple[str, str]]:
    """Returns (importer, imported) for every import between two different units."""
    found = set()
    for path, source in sources.items():
        parts = tuple(Path(path).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1] + ("__init__",)
        for node in ast.walk(ast.parse(source)):
            found |= {(parts[0], t[0]) for t in _targets(node, parts) if t and t[0] != parts[0]}
    return found


def readme_units() -> list[str]:
    """Returns the units of the README's module map (the table after "In `python/approp/`"), in its order."""
    text = (PACKAGE.parents[1] / "README.md").read_text(encoding="utf-8")
    table = text.split("In `python/approp/`:", 1)[1].split("\n\n", 2)[1]
    cells = [line.split("|")[1] for line in table.splitlines()[2:]]
    return [name.strip("`/ ") for cell in cells for name in cell.split(",")]


def test_readme_module_map_follows_the_layers():
    """The README's map names every unit once, in the layers' order, each below every unit it imports."""
    units = readme_units()
    assert sorted(units) == sorted(LAYER_OF.keys() - {"__init__"})
    assert [LAYER_OF[u] for u in units] == sorted(LAYER_OF[u] for u in units)
    row = {u: i for i, u in enumerate(units)}
    upward = [(a, b) for a, b in unit_imports(_package_sources()) if a in row and row[b] >= row[a]]
    assert upward == []
