"""The repository's docs stand on their own: every path they name exists in the repository,
every markdown link resolves, and nothing sends the reader outside it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A path into the repository's own folders, as the docs write them (`docs/models.md`).
REPO_PATH = re.compile(r"\b(?:docs|scripts|configs|src|tests)/[A-Za-z0-9_./-]*[A-Za-z0-9_/]")
LINK = re.compile(r"\]\(([^)#\s]+)")
OUTSIDE = re.compile(r"shared/docs|REFERENCE\.md|PERFORMANCE\.md|RELIABILITY\.md|STYLE\.md")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_path_and_link_in_the_docs_exists(doc):
    text = doc.read_text()
    named = set(REPO_PATH.findall(text))
    missing = sorted(p for p in named if not (ROOT / p).exists())
    links = [link for link in LINK.findall(text) if "://" not in link]
    broken = [link for link in links if not (doc.parent / link).exists()]
    assert (missing, broken) == ([], [])


def test_nothing_points_outside_the_repository():
    sources = [*DOCS, *(ROOT / "src").rglob("*.py"), *(ROOT / "configs").rglob("*.yaml")]
    pointing = [str(p.relative_to(ROOT)) for p in sources if OUTSIDE.search(p.read_text())]
    assert pointing == []
