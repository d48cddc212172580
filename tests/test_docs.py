"""The documentation holds together: every relative link resolves (and its #anchor names a heading
of the Markdown page it points at), the README stays a landing page, and `approp --help` opens
with what approp is."""

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
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def markdown_files() -> list[Path]:
    """Returns README.md and every Markdown file under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def prose(text: str) -> str:
    """Returns a Markdown text without its fenced code blocks and code spans."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def relative_links(text: str) -> list[tuple[str, str]]:
    """Returns (path, anchor) of each link of a Markdown text that points into the repository (no
    URL, no anchor on the same page); links inside code blocks and code spans are not links."""
    targets = []
    for target in LINK.findall(prose(text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # http(s), mailto, …; or an anchor on the same page
        path, _, anchor = target.partition("#")
        targets.append((path, anchor))
    return targets


def anchors(text: str) -> set[str]:
    """Returns the anchors GitHub gives a Markdown text's headings: lower case, punctuation
    dropped, spaces as hyphens."""
    slugs = set()
    for heading in HEADING.findall(FENCE.sub("", text)):
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
        slugs.add(re.sub(r"[^\w\- ]", "", plain).replace(" ", "-"))
    return slugs


def broken_links(page: Path, root: Path) -> list[str]:
    """Returns the links of a Markdown page whose file or folder is not inside root, or whose
    #anchor names no heading of the Markdown page it points at."""
    broken = []
    for path, anchor in relative_links(page.read_text(encoding="utf-8")):
        target = (page.parent / path).resolve()
        if not target.exists() or root not in (target, *target.parents):
            broken.append(path)
        elif anchor and target.suffix == ".md" and anchor not in anchors(target.read_text(encoding="utf-8")):
            broken.append(f"{path}#{anchor}")
    return broken


def test_link_parser_sees_what_a_reader_clicks():
    text = (
        '[a](docs/x.md) ![p](img.png "t") [b](https://e.org/y) [c](#sec) [d](dir/#part)\n'
        "`[e](in/code.md)`\n```\n[f](fenced.md)\n```\n"
    )
    assert relative_links(text) == [("docs/x.md", ""), ("img.png", ""), ("dir/", "part")]
    assert anchors("# The thesis's claims, at `this` budget\n## bf16 (λ = 0)\n") == {
        "the-thesiss-claims-at-this-budget",
        "bf16-λ--0",
    }


def test_broken_links_are_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n## Its part\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md#its-part) [gone](docs/b.md) [wrong anchor](docs/a.md#no-such-part) "
        "[outside](../elsewhere.md) [folder](docs/)\n"
    )
    (tmp_path.parent / "elsewhere.md").touch()
    assert broken_links(page, tmp_path) == [
        "docs/b.md",
        "docs/a.md#no-such-part",
        "../elsewhere.md",
    ]


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    broken = broken_links(page, REPO)
    assert not broken, f"{page.relative_to(REPO)} links to what the repository does not hold: {broken}"


def test_readme_is_a_landing_page():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_help_opens_with_what_approp_is():
    result = CliRunner().invoke(app, ["--help"], prog_name="approp")
    assert result.exit_code == 0, result.output
    # Rich wraps and frames the text: compare word by word, from the first word after "Usage: …".
    words = " ".join(result.output.split()).replace("│", "").split()
    usage_end = words.index("[ARGS]...") + 1
    description = app.info.help.split()
    assert description[:3] == ["approp", "(Adversarial", "Parameter"]
    assert words[usage_end : usage_end + len(description)] == description
