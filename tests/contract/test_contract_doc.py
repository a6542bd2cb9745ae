"""``docs/wire-contract.md`` has every section and endpoint the code and the tests cite."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "wire-contract.md").read_text()
CITATION = re.compile(r"\b(section|endpoint) (\d+)\b")


def _citations() -> set[tuple[str, int]]:
    found: set[tuple[str, int]] = set()
    for folder in ("syvain_metrics", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for kind, number in CITATION.findall(path.read_text()):
                found.add((kind, int(number)))
    return found


def test_the_code_cites_sections_and_endpoints() -> None:
    assert ("section", 8) in _citations()  # the test below has something to check


def test_every_cited_section_and_endpoint_is_in_the_doc() -> None:
    sections = {int(n) for n in re.findall(r"^## (\d+)\. ", DOC, re.MULTILINE)}
    endpoints = {int(n) for n in re.findall(r"^\| (\d+) \| `\w+` \|", DOC, re.MULTILINE)}
    assert sections == set(range(1, 9))
    assert endpoints == set(range(1, 21))
    for kind, number in _citations():
        assert number in (sections if kind == "section" else endpoints), (kind, number)
