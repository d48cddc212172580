"""Records and checks the compat facts of every registered package pinned in Manifest.toml.

    python tools/registry_compat.py build [--cache DIR]      writes julia/registry-compat.toml
    python tools/registry_compat.py check [--manifest FILE]  checks a manifest against it
    python tools/registry_compat.py save-projects GIT_DIR... copies Project.toml at each pinned tree

`build` reads, per package NAME, the git-ignored cache .registry-cache/NAME/:
  Project-at-tree.toml  the package's Project.toml at exactly the Manifest's git-tree-sha1
                        (written by `save-projects` from bare mirrors of the package repos);
  pinned.toml, Compat.toml, WeakCompat.toml, Deps.toml, WeakDeps.toml
                        verbatim copies of the General registry's files (stored copies,
                        often older than the pinned version, so each is checked before use).
A Project.toml at the pinned tree is preferred: it is what the registry recorded when the
version was registered (later registry-side compat edits are not seen). Registry files are
used only when their Versions.toml gave the Manifest's tree sha and their Deps/WeakDeps
agree with the Manifest; every other entry is written as unverified with its reason.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pkg_ranges import parse_range, parse_registry_range, parse_version  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "Manifest.toml"
CACHE = REPO / ".registry-cache"
DATA = REPO / "julia" / "registry-compat.toml"
PROJECT_FILE = "Project-at-tree.toml"


@dataclass(frozen=True)
class Facts:
    """What one source states for one pinned package version."""

    name: str
    version: str
    git_tree_sha1: str
    status: str  # "verified" or "unverified"
    source: str = ""
    syntax: str = ""  # "registry" or "project": how the ranges below are written
    registry_tree_sha1: str = ""
    deps: tuple[str, ...] = ()
    weakdeps: tuple[str, ...] = ()
    compat: dict[str, str | list[str]] = field(default_factory=dict)
    weakcompat: dict[str, str | list[str]] = field(default_factory=dict)
    reason: str = ""


def registered_entries(manifest: dict) -> dict[str, dict]:
    """Returns {name: entry} for the Manifest entries with a git-tree-sha1 (registered packages)."""
    return {name: entries[0] for name, entries in manifest["deps"].items() if "git-tree-sha1" in entries[0]}


def _names(value) -> set[str]:
    """Returns the package names of a Manifest deps/weakdeps value (list or name->uuid table)."""
    return set(value) if value else set()


def _tables_for(path: Path, version: str) -> tuple[bool, dict[str, str | list[str]], list[str]]:
    """Returns (any key covers version, merged {dep: range}, deps given twice) of a registry file.

    Several tables ("1.4.2 - 1.4.5", "1", ...) can cover one version; they are merged. A dep
    that two covering tables give differently is a conflict (Pkg refuses overlapping ranges).
    """
    if not path.exists():
        return False, {}, []
    v = parse_version(version)
    covered, merged, conflicts = False, {}, []
    for key, table in tomllib.loads(path.read_text()).items():
        if v not in parse_registry_range(key):
            continue
        covered = True
        for dep, value in table.items():
            if dep in merged and merged[dep] != value:
                conflicts.append(dep)
            merged[dep] = value
    return covered, merged, conflicts


def _unverified(name: str, entry: dict, reason: str) -> Facts:
    """Returns the Facts of an entry with no usable data, naming why."""
    return Facts(name, entry["version"], entry["git-tree-sha1"], "unverified", reason=reason)


def _from_project(name: str, entry: dict, path: Path) -> Facts:
    """Returns the facts stated by a Project.toml saved at the pinned tree."""
    lines = path.read_text().splitlines()
    header = dict(r[2:].split(": ", 1) for r in lines if r.startswith("# ") and ": " in r)
    project = tomllib.loads(path.read_text())
    if project.get("version") != entry["version"] or header.get("tree") != entry["git-tree-sha1"]:
        return _unverified(name, entry, f"{path.name} is not at the pinned version and tree")
    weak = set(project.get("weakdeps", {}))
    strong = set(project.get("deps", {})) - weak
    compat = project.get("compat", {})
    return Facts(
        name,
        entry["version"],
        entry["git-tree-sha1"],
        "verified",
        source=f"Project.toml at tree {header['tree']} of {header['repo']}",
        syntax="project",
        deps=tuple(sorted(strong)),
        weakdeps=tuple(sorted(weak)),
        compat={k: v for k, v in sorted(compat.items()) if k in strong or k == "julia"},
        weakcompat={k: v for k, v in sorted(compat.items()) if k in weak},
    )


def _registry_tree(entry: dict, pinned: dict, folder: Path) -> str:
    """Returns the registry's tree sha for the pinned version (pinned.toml, else versions.toml)."""
    if pinned.get("version") == entry["version"]:
        return pinned.get("registry_tree_sha1", "")
    versions = folder / "versions.toml"
    if versions.exists():
        table = tomllib.loads(versions.read_text()).get(entry["version"], {})
        return table.get("git-tree-sha1", "")
    return ""


def _registry_problem(entry: dict, tree: str, folder: Path, facts: dict) -> str:
    """Returns why the stored registry files cannot vouch for this entry, or "" if they can."""
    if not tree:
        return "the pinned version is in no stored copy of the registry's Versions.toml"
    if tree != entry["git-tree-sha1"]:
        return f"the stored registry Versions.toml gives tree {tree}, not the Manifest's"
    if not (folder / "Compat.toml").exists():
        return "Compat.toml is not in the stored registry copy"
    if facts["conflicts"]:
        return f"overlapping tables of the stored Compat files give {facts['conflicts']} twice"
    if not facts["compat_covered"]:
        return "the stored Compat.toml has no table covering the pinned version (stale copy)"
    if facts["deps"] != _names(entry.get("deps")):
        return (
            f"the stored Deps.toml lists {sorted(facts['deps'])} for this version, the Manifest "
            f"{sorted(_names(entry.get('deps')))} (stale copy)"
        )
    if facts["weakdeps"] != _names(entry.get("weakdeps")):
        return "the stored WeakDeps.toml disagrees with the Manifest's weakdeps (stale copy)"
    return ""


def _from_registry(name: str, entry: dict, folder: Path) -> Facts:
    """Returns the facts stated by the stored registry files, or an unverified record."""
    pinned = tomllib.loads((folder / "pinned.toml").read_text())
    version = entry["version"]
    tree = _registry_tree(entry, pinned, folder)
    covered, compat, conflicts = _tables_for(folder / "Compat.toml", version)
    _, weakcompat, weak_conflicts = _tables_for(folder / "WeakCompat.toml", version)
    weak = set(_tables_for(folder / "WeakDeps.toml", version)[1])
    # A dep listed in both Deps.toml and WeakDeps.toml is weak (Pkg >= 1.9); its range is
    # WeakCompat's. A Compat.toml entry for it predates the dep becoming weak.
    dropped = sorted(set(compat) & weak)
    compat = {k: v for k, v in compat.items() if k not in weak}
    facts = {
        "conflicts": conflicts + weak_conflicts,
        "compat_covered": covered,
        "deps": set(_tables_for(folder / "Deps.toml", version)[1]) - weak,
        "weakdeps": weak,
    }
    problem = _registry_problem(entry, tree, folder, facts)
    if problem:
        return _unverified(name, entry, problem)
    kinds = ("Compat", "WeakCompat", "Deps", "WeakDeps")
    files = [f for f in kinds if (folder / f"{f}.toml").exists()]
    return Facts(
        name,
        version,
        entry["git-tree-sha1"],
        "verified",
        source=(
            f"registry {', '.join(files)}.toml (stored copies of JuliaRegistries/General; "
            f"Versions.toml at commit {pinned['registry_commit']})"
            + (f"; Compat.toml entries for weak deps {dropped} ignored" if dropped else "")
        ),
        syntax="registry",
        registry_tree_sha1=tree,
        deps=tuple(sorted(facts["deps"])),
        weakdeps=tuple(sorted(facts["weakdeps"])),
        compat=dict(sorted(compat.items())),
        weakcompat=dict(sorted(weakcompat.items())),
    )


def _combine(project: Facts, registry: Facts) -> Facts:
    """Returns project ranges with the registry's dep names and tree, when both sources are usable.

    The dep names Pkg writes into a Manifest come from the registry's Deps.toml, which can
    differ from the tree's Project.toml (a jll's builds share one compressed range); the
    ranges come from the Project.toml, as stored registry Compat copies may predate the version.
    """
    return Facts(
        project.name,
        project.version,
        project.git_tree_sha1,
        "verified",
        source=f"{project.source}; dep names from {registry.source}",
        syntax="project",
        registry_tree_sha1=registry.registry_tree_sha1,
        deps=registry.deps,
        weakdeps=registry.weakdeps,
        compat=project.compat,
        weakcompat=project.weakcompat,
    )


def _no_data(name: str, entry: dict, folder: Path, registry: Facts | None) -> Facts:
    """Returns the unverified record of an entry, with every reason known."""
    if registry:
        reasons = [f"registry: {registry.reason}"]
    elif (folder.parent / "_partial-g2" / name).exists():
        reasons = ["registry: the pinned version is in no stored copy of its Versions.toml"]
    else:
        reasons = ["registry: no files stored"]
    note = folder / "mirror-note.txt"
    reasons.append(
        "mirror: " + (note.read_text().strip() if note.exists() else "no fetched package mirror holds the pinned tree")
    )
    return _unverified(name, entry, "; ".join(reasons))


def collect(manifest: dict, cache: Path) -> list[Facts]:
    """Returns the Facts of every registered Manifest entry, verified or with its reason."""
    out = []
    for name, entry in sorted(registered_entries(manifest).items()):
        folder = cache / name
        project = registry = None
        if (folder / PROJECT_FILE).exists():
            project = _from_project(name, entry, folder / PROJECT_FILE)
        if (folder / "pinned.toml").exists():
            registry = _from_registry(name, entry, folder)
        usable_registry = registry if registry and registry.status == "verified" else None
        if project and project.status == "verified":
            out.append(_combine(project, usable_registry) if usable_registry else project)
        elif usable_registry:
            out.append(usable_registry)
        else:
            out.append(_no_data(name, entry, folder, registry))
    return out


def _toml_value(value) -> str:
    """Returns a TOML literal for a string, list of strings or tuple of strings."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


def _quoted(key: str) -> str:
    """Returns a TOML key, quoted where it is not a bare key."""
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def render(facts: list[Facts], manifest: dict) -> str:
    """Returns the text of julia/registry-compat.toml for `facts`."""
    verified = sum(f.status == "verified" for f in facts)
    out = [
        "# Compat facts of every registered package of Manifest.toml, at its pinned version.",
        "# Written by `python tools/registry_compat.py build`;",
        "# checked by tests/test_registry_compat.py.",
        '# syntax = "registry": ranges as the General registry writes them ("1.4" is 1.4.x);',
        '# syntax = "project": Project.toml [compat] specs ("1.4" is [1.4.0, 2.0.0)).',
        f"# {verified} of {len(facts)} entries verified; the rest name why they are not.",
        "",
        f'manifest_julia_version = "{manifest["julia_version"]}"',
    ]
    for f in facts:
        out += ["", f"[packages.{_quoted(f.name)}]"]
        out.append(f"version = {_toml_value(f.version)}")
        out.append(f"git_tree_sha1 = {_toml_value(f.git_tree_sha1)}")
        out.append(f"status = {_toml_value(f.status)}")
        if f.status != "verified":
            out.append(f"reason = {_toml_value(f.reason)}")
            continue
        out += [f"source = {_toml_value(f.source)}", f"syntax = {_toml_value(f.syntax)}"]
        if f.registry_tree_sha1:
            out.append(f"registry_tree_sha1 = {_toml_value(f.registry_tree_sha1)}")
        out += [f"deps = {_toml_value(f.deps)}", f"weakdeps = {_toml_value(f.weakdeps)}"]
        for table, ranges in (("compat", f.compat), ("weakcompat", f.weakcompat)):
            out.append(f"[packages.{_quoted(f.name)}.{table}]")
            out += [f"{_quoted(k)} = {_toml_value(v)}" for k, v in ranges.items()]
    return "\n".join(out) + "\n"


def _allowed(name: str, dep: str, value, syntax: str, version: str, kind: str) -> str:
    """Returns a violation message if `version` of dep is outside `value`, else ""."""
    allowed = parse_range(value, syntax)
    if parse_version(version) in allowed:
        return ""
    return (
        f"{name}: {kind} {dep} = {value!r} ({syntax} syntax, i.e. {allowed}) does not allow the pinned {dep} {version}"
    )


def _check_entry(name: str, rec: dict, entry: dict, entries: dict, julia: str) -> list[str]:
    """Returns the violations of one verified record against its Manifest entry."""
    bad = []
    for key, manifest_key in (("version", "version"), ("git_tree_sha1", "git-tree-sha1")):
        if rec[key] != entry.get(manifest_key):
            pinned = entry.get(manifest_key)
            bad.append(f"{name}: recorded {key} {rec[key]} but the Manifest pins {pinned}")
    if rec.get("registry_tree_sha1", entry["git-tree-sha1"]) != entry["git-tree-sha1"]:
        bad.append(f"{name}: registry tree {rec['registry_tree_sha1']} is not the Manifest's")
    if bad:
        return bad
    for key in ("deps", "weakdeps"):
        if set(rec[key]) != _names(entry.get(key)):
            in_manifest = sorted(_names(entry.get(key)))
            bad.append(f"{name}: {key} {sorted(rec[key])} recorded, {in_manifest} in the Manifest")
    for table, kind in (("compat", "compat"), ("weakcompat", "weak compat")):
        for dep, value in rec[table].items():
            pinned = julia if dep == "julia" else entries.get(dep, {}).get("version")
            if pinned is not None:  # absent weak deps and unversioned stdlibs are not constrained
                msg = _allowed(name, dep, value, rec["syntax"], pinned, kind)
                bad += [msg] if msg else []
    return bad


def check(manifest: dict, data: dict) -> list[str]:
    """Returns every violation of `manifest` against the recorded facts (empty when it passes)."""
    entries = {name: e[0] for name, e in manifest["deps"].items()}
    records = data["packages"]
    registered = registered_entries(manifest)
    bad = [f"{n}: pinned in the Manifest but not recorded" for n in registered if n not in records]
    bad += [f"{n}: recorded but not a registered entry" for n in records if n not in registered]
    for name, rec in records.items():
        if name in entries and rec["status"] == "verified":
            bad += _check_entry(name, rec, entries[name], entries, manifest["julia_version"])
    return bad


def save_projects(manifest: dict, git_dirs: list[Path], cache: Path) -> list[str]:
    """Returns the names whose Project.toml at the pinned tree was found and saved to the cache."""
    saved = []
    for name, entry in sorted(registered_entries(manifest).items()):
        tree = entry["git-tree-sha1"]
        for git_dir in git_dirs:
            show = subprocess.run(
                ["git", "--git-dir", str(git_dir), "show", f"{tree}:Project.toml"],
                capture_output=True,
                text=True,
                check=False,
            )
            if show.returncode == 0 and tomllib.loads(show.stdout).get("name") == name:
                repo = git_dir.parent.name.replace("+", "/")
                header = f"# repo: {repo}\n# tree: {tree}\n"
                (cache / name).mkdir(parents=True, exist_ok=True)
                (cache / name / PROJECT_FILE).write_text(header + show.stdout)
                saved.append(name)
                break
    return saved


def main(argv: list[str] | None = None) -> int:
    """Returns the exit status of the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build")
    build.add_argument("--cache", type=Path, default=CACHE)
    run = sub.add_parser("check")
    run.add_argument("--manifest", type=Path, default=MANIFEST)
    run.add_argument("--data", type=Path, default=DATA)
    save = sub.add_parser("save-projects")
    save.add_argument("git_dirs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    manifest_path = args.manifest if args.command == "check" else MANIFEST
    manifest = tomllib.loads(manifest_path.read_text())
    if args.command == "save-projects":
        print(" ".join(save_projects(manifest, args.git_dirs, CACHE)))
        return 0
    if args.command == "build":
        facts = collect(manifest, args.cache)
        DATA.write_text(render(facts, manifest))
        for f in facts:
            print(f"{f.name:28} {f.status:10} {f.source or f.reason}")
        return 0
    problems = check(manifest, tomllib.loads(args.data.read_text()))
    print("\n".join(problems) or "all pinned entries satisfy the recorded compat")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
