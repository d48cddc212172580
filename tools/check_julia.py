"""Checks the Julia sources without Julia: grammar parse, formatting and lint.

    python tools/check_julia.py [ROOT]      (default: the repository's julia/)

1. parses every .jl file under ROOT with tree-sitter-julia and fails on any
   ERROR or missing node (a syntax error), naming file, line and column;
2. runs `fatou format --check ROOT` and fails where a file is not formatted;
3. runs `fatou lint ROOT` and fails on its findings, except `undefined-name`,
   which misfires across `include`d files and is reported as advisory only.
Exit status 0 when all pass, 1 otherwise.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ADVISORY_RULES = {"undefined-name"}


def _parser():
    import tree_sitter
    import tree_sitter_julia

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_julia.language()))


def _bad_nodes(node) -> Iterator:
    if node.is_error or node.is_missing:
        yield node
        return
    if node.has_error:
        for child in node.children:
            yield from _bad_nodes(child)


def parse_errors(root: Path) -> list[str]:
    """Returns 'file:line:col: message' for every syntax error in the .jl files under root."""
    parser = _parser()
    problems = []
    files = sorted(root.rglob("*.jl")) if root.is_dir() else [root]
    for path in files:
        tree = parser.parse(path.read_bytes())
        for node in _bad_nodes(tree.root_node):
            line, col = node.start_point
            what = f"missing {node.type}" if node.is_missing else "syntax error"
            problems.append(f"{path}:{line + 1}:{col + 1}: {what}")
    return problems


def _fatou() -> str | None:
    here = Path(sys.executable).parent / "fatou"
    return str(here) if here.exists() else shutil.which("fatou")


def fatou_format(root: Path, fatou: str) -> tuple[bool, str]:
    """Returns (ok, output) of `fatou format --check root`."""
    proc = subprocess.run(
        [fatou, "--color", "never", "format", "--check", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.returncode == 0, proc.stdout + proc.stderr


_RULE = re.compile(r"^(warning|error)(?:\[[^\]]*\])?: ([a-z0-9-]+)", re.MULTILINE)


def fatou_lint(root: Path, fatou: str) -> tuple[list[str], list[str], str]:
    """Returns (failing rules, advisory rules, output) of `fatou lint root`."""
    proc = subprocess.run([fatou, "--color", "never", "lint", str(root)], capture_output=True, text=True, check=False)
    out = proc.stdout + proc.stderr
    rules = [m.group(2) for m in _RULE.finditer(out)]
    failing = [r for r in rules if r not in ADVISORY_RULES]
    advisory = [r for r in rules if r in ADVISORY_RULES]
    if proc.returncode != 0 and not rules:
        failing.append(f"fatou lint exited {proc.returncode}")
    return failing, advisory, out


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1] / "julia"
    ok = True
    problems = parse_errors(root)
    files = len(list(root.rglob("*.jl"))) if root.is_dir() else 1
    for p in problems:
        print(p)
    print(f"tree-sitter-julia: {files} file(s), {len(problems)} syntax error(s)")
    ok &= not problems
    fatou = _fatou()
    if fatou is None:
        print("fatou not found: pip install fatou")
        return 1
    fmt_ok, out = fatou_format(root, fatou)
    print("fatou format --check: clean" if fmt_ok else out.rstrip())
    ok &= fmt_ok
    failing, advisory, out = fatou_lint(root, fatou)
    if failing:
        print(out.rstrip())
    print(f"fatou lint: {len(failing)} finding(s), {len(advisory)} advisory (undefined-name)")
    ok &= not failing
    print("julia checks: " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
