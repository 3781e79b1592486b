"""The README and docs/ link only to files of this repository, and their anchors exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)
_CODE_MD = re.compile(r"`([^`\s]+\.md)`")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def prose(path: Path) -> str:
    """The Markdown of `path` without its fenced code blocks."""
    return _FENCE.sub("", path.read_text(encoding="utf-8"))


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of `path`: lower case, punctuation dropped, spaces to hyphens,
    repeats numbered."""
    seen: dict[str, int] = {}
    result = set()
    for heading in _HEADING.findall(prose(path)):
        text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading)
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def targets(path: Path) -> list[str]:
    text = prose(path)
    return _LINK.findall(text) + _REFERENCE.findall(text)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_into_the_repository(doc: Path) -> None:
    broken = []
    for target in targets(doc):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # https:, mailto:: not ours to check offline
        name, _, fragment = target.partition("#")
        file = (doc.parent / name).resolve() if name else doc
        if not file.is_relative_to(REPO) or not file.exists():
            broken.append(f"{target}: no such file in the repository")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{target}: no heading #{fragment} in {file.relative_to(REPO)}")
    assert broken == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_documents_named_in_code_spans_exist(doc: Path) -> None:
    """A `something.md` the text names (relative to the document or to the repository root) is in the
    repository: no design notes outside it."""
    missing = [
        name
        for name in _CODE_MD.findall(prose(doc))
        if not any(
            (base / name).resolve().is_relative_to(REPO) and (base / name).exists()
            for base in (doc.parent, REPO)
        )
    ]
    assert missing == []


def test_the_checker_sees_links() -> None:
    """The patterns find the README's links to docs/ (so an empty list above means something)."""
    assert "docs/configuration.md" in targets(REPO / "README.md")
    assert "how-actions-run" in anchors(REPO / "docs" / "dialplan.md")
