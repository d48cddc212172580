"""CI runs the README's test command verbatim, after ruff's lint and format checks."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_test_command() -> str:
    """Returns command 1 of the README's set-up block (the line after '# 1. install and run the test suite')."""
    lines = (REPO / "README.md").read_text().splitlines()
    return lines[lines.index("# 1. install and run the test suite") + 1].strip()


def test_ci_runs_ruff_then_the_readme_test_command_verbatim():
    command = readme_test_command()
    assert command.endswith("-m pytest") and "pip install -e '.[test]'" in command
    script = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert script[-1] == command  # the last step, exactly as the README says it
    ruff = script.index(".venv/bin/ruff check . && .venv/bin/ruff format --check .")
    assert ruff < len(script) - 1
    assert "set -euo pipefail" in script  # a lint failure fails the run


def test_ruff_is_installed_by_the_test_extra():
    pyproject = (REPO / "pyproject.toml").read_text()
    test_extra = re.search(r"^test = \[(.*?)^\]", pyproject, re.S | re.M).group(1)
    assert re.search(r'"ruff==[\d.]+"', test_extra)
