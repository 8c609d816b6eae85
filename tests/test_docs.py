"""The docs a newcomer reads: a short README, links that resolve, tables that match the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import REPO
from tools.doc_tables import PAGE, render

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def test_the_readme_is_short_with_the_quick_start_on_its_first_screen() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text) <= 12_000, len(text)
    assert "## Quick start" in text.splitlines()[:40]
    assert "make repro" in text and "make test" in text


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    targets = [m[0] for m in LINK.findall(page.read_text()) if not m[0].startswith(("http://", "https://"))]
    missing = [t for t in targets if not (page.parent / t).exists()]
    assert missing == [], f"{page.name} links to missing {missing}"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    assert [p.name for p in PAGES[1:] if f"(docs/{p.name})" not in readme] == []


def test_the_generated_tables_are_current() -> None:
    page = PAGE.read_text()
    assert "<!-- params table -->\n| key |" in page and "<!-- reruns table -->\n| you change |" in page
    assert render(page) == page, "stale: run `python -m tools.doc_tables`"
