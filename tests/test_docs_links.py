"""Every relative link in the docs points at a file or folder inside the repository.

The docs are read on a fresh clone or on GitHub, where nothing outside the repository exists. So a
relative markdown link (`[text](path)`, `[text](path#anchor)`, `![alt](path)`, `[ref]: path`) must
name something in the repository; web links (`https://...`, `mailto:`) and bare anchors (`#part`)
are not checked. Links inside code blocks and inline code are not links.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted(
    {
        ROOT / "README.md",
        ROOT / "DEVELOPERS.md",
        ROOT / "bench" / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "packages").glob("*/README.md"),
    }
)

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
INLINE_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # https:, mailto:, ...


def links(text: str) -> list[str]:
    """The link targets of a markdown text, outside code."""
    prose = INLINE_CODE.sub("", FENCE.sub("", text))
    return INLINE_LINK.findall(prose) + REFERENCE.findall(prose)


def test_the_link_finder_finds_links_and_skips_code():
    text = (
        "[a](x.md) ![b](img/y.png) [c](z/#part) [d](https://example.com) [e](#here)\n"
        "`[not](a.md)`\n```\n[not](b.md)\n```\n[ref]: docs/r.md\n"
    )
    assert links(text) == ["x.md", "img/y.png", "z/#part", "https://example.com", "#here", "docs/r.md"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(doc):
    assert doc.is_file(), f"{doc.relative_to(ROOT)} is missing"
    broken = []
    for target in links(doc.read_text(encoding="utf-8")):
        if EXTERNAL.match(target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0].split("?", 1)[0]
        resolved = (ROOT / path.lstrip("/")) if path.startswith("/") else (doc.parent / path)
        resolved = resolved.resolve()
        if not resolved.is_relative_to(ROOT):
            broken.append(f"{target} (outside the repository)")
        elif not resolved.exists():
            broken.append(f"{target} (no such file)")
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)
