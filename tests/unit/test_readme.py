"""README.md renders: read as CommonMark (markdown-it-py), every section heading of the
source is a heading (not swallowed by a code block left open or a fence closed on a line
with text after it), and every code fence is closed."""

from __future__ import annotations

import re
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

README = Path(__file__).resolve().parents[2] / "README.md"
# a section heading of the source: "## Title" (level 1 is the title line only; "# x" lines
# inside the TOML examples are comments, and must stay code)
_SECTION = re.compile(r"#{2,6} \S")


def _parse(text: str) -> tuple[list[str], list[Token]]:
    return text.split("\n"), MarkdownIt("commonmark").parse(text)


def problems(text: str) -> list[str]:
    """What does not render as its author meant, one line each (empty: all well)."""
    lines, tokens = _parse(text)
    headings = {t.map[0] for t in tokens if t.type == "heading_open" and t.map}
    found = []
    for number, line in enumerate(lines):
        if (_SECTION.match(line) or number == 0) and number not in headings:
            found.append(f"line {number + 1}: {line!r} is not a heading (inside code?)")
    for token in tokens:
        if token.type != "fence" or not token.map:
            continue
        start, end = token.map
        closing = lines[end - 1].strip() if end - 1 > start else ""
        marker = token.markup
        if not (closing.startswith(marker) and set(closing) <= set(marker[0])):
            found.append(f"line {start + 1}: code fence {lines[start].strip()!r} is never closed")
    return found


def test_readme_renders() -> None:
    assert problems(README.read_text(encoding="utf-8")) == []


def test_readme_has_sections() -> None:
    lines, tokens = _parse(README.read_text(encoding="utf-8"))
    titles = [lines[t.map[0]] for t in tokens if t.type == "heading_open" and t.map]
    assert "## Commands" in titles and "## The targets" in titles


def test_the_check_catches_what_broke_the_readme() -> None:
    # a closing fence followed by text on its line does not close the block, and an
    # unclosed fence swallows the rest: both turn the next sections into code
    fence = "```"
    text = f"# t\n\n{fence}toml\na = 1\n{fence} trailing\n\n## Commands\n\ntext\n"
    assert any("'## Commands' is not a heading" in p for p in problems(text))
    assert any("never closed" in p for p in problems(text))
    unclosed = f"# t\n\n## One\n\n{fence}toml\na = 1\n\n## Two\n"
    found = problems(unclosed)
    assert any("'## Two' is not a heading" in p for p in found)
    assert any("line 5" in p and "never closed" in p for p in found)
    assert problems(f"# t\n\n## One\n\n{fence}toml\n# a comment\n{fence}\n\n## Two\n") == []
