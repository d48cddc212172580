"""Checks every pinned Manifest entry against the compat facts in julia/registry-compat.toml."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "registry_fixture"
MANIFEST_TEXT = (REPO / "Manifest.toml").read_text()
MANIFEST = tomllib.loads(MANIFEST_TEXT)
DATA = tomllib.loads((REPO / "julia" / "registry-compat.toml").read_text())
OLD_PIN = ("45521d31238e87ee9f9732561bfee12d4eebd52d", "1.4.2")
NEW_PIN = ("06b65886c7577a3784d616e29f1302c2e36e389d", "1.4.6")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


RANGES = _load("pkg_ranges")
TOOL = _load("registry_compat")


def _inline_strings_pinned_at(tree: str, version: str) -> dict:
    """Returns the Manifest with InlineStrings moved to (tree, version), the rest as committed."""
    new_tree, new_version = NEW_PIN
    text = MANIFEST_TEXT.replace(f'"{new_tree}"', f'"{tree}"')
    text = text.replace(
        f'uuid = "842dd82b-1e85-43dc-bf29-5d0ee9dffc48"\nversion = "{new_version}"',
        f'uuid = "842dd82b-1e85-43dc-bf29-5d0ee9dffc48"\nversion = "{version}"',
    )
    manifest = tomllib.loads(text)
    assert manifest["deps"]["InlineStrings"][0]["version"] == version
    return manifest


def _check_from_fixture(manifest: dict) -> list[str]:
    """Returns the violations of `manifest` with facts built from the committed registry files."""
    data = tomllib.loads(TOOL.render(TOOL.collect(manifest, FIXTURE), manifest))
    assert data["packages"]["InlineStrings"]["status"] == "verified"
    return TOOL.check(manifest, data)


def _v(text: str) -> tuple[int, int, int]:
    return RANGES.parse_version(text)


@pytest.mark.parametrize(
    ("spec", "inside", "outside"),
    [
        ("1.2", ["1.2.0", "1.9.9"], ["1.1.9", "2.0.0"]),
        ("0.9", ["0.9.0", "0.9.36"], ["0.8.9", "0.10.0"]),
        ("0.0.3", ["0.0.3"], ["0.0.2", "0.0.4"]),
        ("0", ["0.0.0", "0.99.0"], ["1.0.0"]),
        ("^1", ["1.0.0", "1.99.0"], ["0.9.9", "2.0.0"]),
        ("~0.3", ["0.3.0", "0.3.9"], ["0.2.9", "0.4.0"]),
        ("~1.2.3", ["1.2.3", "1.2.9"], ["1.2.2", "1.3.0"]),
        ("~0.0.3", ["0.0.3"], ["0.0.4"]),
        ("~1", ["1.0.0", "1.9.0"], ["2.0.0"]),
        ("=0.9.36", ["0.9.36"], ["0.9.35", "0.9.37"]),
        (">= 1.6", ["1.6.0", "9.0.0"], ["1.5.9"]),
        ("< 1.6", ["1.5.9"], ["1.6.0"]),
        ("1, 2", ["1.0.0", "2.9.0"], ["0.9.0", "3.0.0"]),
        ("1.2 - 1.4", ["1.2.0", "1.4.99"], ["1.1.9", "1.5.0"]),
        ("0.6.1 - 0", ["0.6.1", "0.99.0"], ["0.6.0", "1.0.0"]),
        ("3.0, 4", ["3.9.0", "4.0.4"], ["2.9.0", "5.0.0"]),
    ],
)
def test_project_spec_parser(spec, inside, outside):
    allowed = RANGES.parse_project_spec(spec)
    assert all(_v(v) in allowed for v in inside), spec
    assert not any(_v(v) in allowed for v in outside), spec


@pytest.mark.parametrize(
    ("value", "inside", "outside"),
    [
        ("1.4", ["1.4.0", "1.4.9"], ["1.3.9", "1.5.0"]),  # registry: a bare bound is a wildcard
        ("1", ["1.0.0", "1.9.0"], ["2.0.0"]),
        ("1.4.2 - 1.4.5", ["1.4.2", "1.4.5"], ["1.4.1", "1.4.6"]),
        ("1.4.6 - 2", ["1.4.6", "2.0.1"], ["1.4.5", "3.0.0"]),
        ("2 - 3", ["2.0.0", "3.0.0", "3.9.9"], ["1.9.9", "4.0.0"]),
        ("0.26.1-0", ["0.26.1", "0.26.7"], ["0.26.0", "1.0.0"]),
        ("1.3.0-1", ["1.3.0", "1.10.12"], ["1.2.9", "2.0.0"]),
        ("0.9.2", ["0.9.2"], ["0.9.1", "0.9.3"]),
        (["0.0.0", "1"], ["0.0.0", "1.10.0"], ["0.0.1", "2.0.0"]),
        ("*", ["0.0.0", "99.0.0"], []),
    ],
)
def test_registry_range_parser(value, inside, outside):
    allowed = RANGES.parse_registry_range(value)
    assert all(_v(v) in allowed for v in inside), value
    assert not any(_v(v) in allowed for v in outside), value


def test_parser_rejects_bad_input():
    for bad in ("", "1.x", "v1.2", "1.2.3.4", "~", ">="):
        with pytest.raises(RANGES.RangeSyntaxError):
            RANGES.parse_project_spec(bad)
    with pytest.raises(RANGES.RangeSyntaxError):
        RANGES.parse_range("1", "caret")
    assert RANGES.parse_version("0.9.2+0") == (0, 9, 2)


def test_every_registered_entry_is_recorded_with_a_status():
    registered = TOOL.registered_entries(MANIFEST)
    assert set(DATA["packages"]) == set(registered)
    assert DATA["manifest_julia_version"] == MANIFEST["julia_version"]
    for name, record in DATA["packages"].items():
        assert record["status"] in ("verified", "unverified"), name
        assert record.get("reason") if record["status"] == "unverified" else record["source"], name
    verified = [r for r in DATA["packages"].values() if r["status"] == "verified"]
    assert len(verified) >= 100


def test_recorded_trees_are_the_manifest_trees():
    for name, record in DATA["packages"].items():
        entry = MANIFEST["deps"][name][0]
        assert record["version"] == entry["version"], name
        assert record["git_tree_sha1"] == entry["git-tree-sha1"], name
        tree = entry["git-tree-sha1"]
        assert record.get("registry_tree_sha1", tree) == tree, name
        if record["status"] == "verified" and record["syntax"] == "project":
            assert f"tree {entry['git-tree-sha1']}" in record["source"], name


def test_every_pinned_entry_satisfies_its_recorded_compat():
    assert TOOL.check(MANIFEST, DATA) == []


def test_julia_and_deps_are_checked_not_skipped():
    # The check must look at julia and at every weak dep present, or a pass means little.
    checked = [
        (name, dep)
        for name, record in DATA["packages"].items()
        if record["status"] == "verified"
        for table in ("compat", "weakcompat")
        for dep in record[table]
        if dep == "julia" or dep in MANIFEST["deps"]
    ]
    assert sum(dep == "julia" for _, dep in checked) >= 100
    assert ("InlineStrings", "Parsers") in checked and ("Flux", "Zygote") in checked
    assert len(checked) > 300


def test_check_fails_on_a_julia_outside_the_range():
    manifest = {**MANIFEST, "julia_version": "1.5.4"}
    problems = TOOL.check(manifest, DATA)
    assert any(p.startswith("Flux: compat julia") for p in problems)


def test_check_fails_on_the_old_inline_strings_pin():
    # InlineStrings 1.4.2-1.4.5 allow Parsers "2" only (WeakCompat.toml); Parsers is at 3.0.0.
    problems = _check_from_fixture(_inline_strings_pinned_at(*OLD_PIN))
    assert problems == [
        "InlineStrings: weak compat Parsers = '2' (registry syntax, i.e. [2.0.0, 3.0.0)) "
        "does not allow the pinned Parsers 3.0.0"
    ]


def test_check_passes_on_the_new_inline_strings_pin_from_the_same_files():
    assert _check_from_fixture(MANIFEST) == []
    built = tomllib.loads(TOOL.render(TOOL.collect(MANIFEST, FIXTURE), MANIFEST))
    assert built["packages"]["InlineStrings"] == DATA["packages"]["InlineStrings"]


def test_committed_data_rejects_a_changed_pin():
    problems = TOOL.check(_inline_strings_pinned_at(*OLD_PIN), DATA)
    assert any("InlineStrings: recorded version 1.4.6" in p for p in problems)


def test_registry_tables_covering_one_version_are_merged(tmp_path):
    compat = tmp_path / "Compat.toml"
    compat.write_text(
        '[1]\nA = "2"\n\n["1.2-1"]\njulia = "1.6.0-1"\n\n["1.4.2 - 1.4.5"]\nB = "0.3"\n\n["1.4.6 - 2"]\nB = "0.3-0.4"\n'
    )
    covered, merged, conflicts = TOOL._tables_for(compat, "1.4.6")
    assert covered and not conflicts
    assert merged == {"A": "2", "julia": "1.6.0-1", "B": "0.3-0.4"}
    assert TOOL._tables_for(compat, "1.4.3")[1]["B"] == "0.3"
    assert TOOL._tables_for(compat, "3.0.0")[0] is False
    compat.write_text('["0.5.4-0"]\nJ = "1.2.0-1"\n\n["0.5.5-0"]\nJ = "1.7.0-1"\n')
    assert TOOL._tables_for(compat, "0.5.5+0")[2] == ["J"]
