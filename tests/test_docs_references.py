"""Docstrings and comments cite only documents that are in the repository, and only sections those documents have.

A citation reads ``docs/mmcv-semantics.md §2.1`` (ranges ``§3.2-3.3``) or ``docs/lightning-notes.md B3`` (lists
``B1/B2``); any other ``*.md`` mention must name a file of the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for folder in ("detlight", "tests", "benchmarks") for p in (ROOT / folder).rglob("*.py")
                 if p != Path(__file__).resolve())
MD_PATH = re.compile(r"(?<![\w/.-])([\w./-]+\.md)\b")
SECTION = re.compile(r"(docs/[\w./-]+\.md)\s+(?:§([\d.]+(?:-[\d.]+)?)|([A-D]\d+(?:/[A-D]?\d+)*))")
# Documents that the code once cited from outside the repository, by their bare names.
OUTSIDE = re.compile(r"(?<!docs/)\b(mmcv-semantics|lightning-notes)\b|\.\./shared/|shared/reference/")


def _headings(doc: Path) -> set[str]:
    """Section labels of a markdown file: ``2.1`` for ``### 2.1 ...``, ``B3`` for ``### B3. ...``, ``1`` for ``## 1.``."""
    labels = set()
    for line in doc.read_text().splitlines():
        match = re.match(r"#+\s+([A-Z]?\d+(?:\.\d+)*[a-z]?)\.?\s", line)
        if match:
            labels.add(match.group(1))
    return labels


def _labels(section: str | None, letter_list: str | None) -> list[str]:
    if section:
        first, _, last = section.partition("-")
        return [s.rstrip(".") for s in (first, last) if s]
    assert letter_list is not None
    letter = letter_list[0]
    return [part if part[0].isalpha() else letter + part for part in letter_list.split("/")]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_cited_documents_and_sections_exist(source: Path) -> None:
    text = source.read_text()
    for match in MD_PATH.finditer(text):
        name = match.group(1)
        assert (ROOT / name).is_file() or (source.parent / name).is_file(), \
            f"{source.relative_to(ROOT)} cites {name}, which is not in the repository"
    for match in SECTION.finditer(text):
        doc = ROOT / match.group(1)
        if not doc.is_file():
            continue  # reported above
        missing = [label for label in _labels(match.group(2), match.group(3)) if label not in _headings(doc)]
        assert not missing, f"{source.relative_to(ROOT)}: {match.group(0)!r} names no section {missing} of {doc.name}"
    outside = OUTSIDE.search(text)
    assert outside is None, f"{source.relative_to(ROOT)} cites {outside.group(0)!r}: cite the copy under docs/"


def test_section_parser_reads_the_docs_headings() -> None:
    assert {"1", "2.1", "2.8", "3.7", "4.3", "5"} <= _headings(ROOT / "docs" / "mmcv-semantics.md")
    assert {"A7", "B1", "B2", "B3"} <= _headings(ROOT / "docs" / "lightning-notes.md")
    assert _labels("3.2-3.3", None) == ["3.2", "3.3"]
    assert _labels(None, "B1/B2") == ["B1", "B2"]
