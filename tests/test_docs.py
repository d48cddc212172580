"""The documentation holds together: every relative link resolves, the README stays a landing
page, and `approp --help` opens with what approp is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from approp.cli import app

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250

# [text](target) and ![alt](target); the target may carry a "title" after a space.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def markdown_files() -> list[Path]:
    """Returns README.md and every Markdown file under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def relative_links(text: str) -> list[str]:
    """Returns the link targets of a Markdown text that point into the repository (no URL, no pure #anchor),
    each without its #anchor; links inside code blocks and code spans are not links."""
    text = CODE_SPAN.sub("", FENCE.sub("", text))
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # http(s), mailto, …; or an anchor on the same page
        targets.append(target.split("#", 1)[0])
    return targets


def test_link_parser_sees_what_a_reader_clicks():
    text = (
        '[a](docs/x.md) ![p](img.png "t") [b](https://e.org/y) [c](#sec) [d](dir/#part)\n'
        "`[e](in/code.md)`\n```\n[f](fenced.md)\n```\n"
    )
    assert relative_links(text) == ["docs/x.md", "img.png", "dir/"]


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    missing = []
    for target in relative_links(page.read_text(encoding="utf-8")):
        path = (page.parent / target).resolve()
        if not path.exists() or REPO not in (path, *path.parents):
            missing.append(target)
    assert not missing, (
        f"{page.relative_to(REPO)} links to what the repository does not hold: {missing}"
    )


def test_readme_is_a_landing_page():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; move detail into docs/"
    )


def test_help_opens_with_what_approp_is():
    result = CliRunner().invoke(app, ["--help"], prog_name="approp")
    assert result.exit_code == 0, result.output
    # Rich wraps and frames the text: compare word by word, from the first line after "Usage:".
    words = " ".join(result.output.split()).replace("│", "").split()
    usage_end = words.index("[ARGS]...") + 1
    description = app.info.help.split()
    assert description[:3] == ["approp", "(Adversarial", "Parameter"]
    assert words[usage_end : usage_end + len(description)] == description
