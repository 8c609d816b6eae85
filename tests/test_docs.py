"""The docs a newcomer reads: a short README, links that resolve, tables that match the code."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO
from tools.doc_tables import PAGE, render
from tools.doc_tables import PAGES as DOC_TABLE_PAGES

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
    assert "<!-- serve-limits table -->\n| option |" in (REPO / "docs" / "predict-and-serve.md").read_text()
    for path in DOC_TABLE_PAGES:
        assert render(path.read_text()) == path.read_text(), f"{path.name} is stale: run `python -m tools.doc_tables`"


FOLDERS = "pipeline|stages|tests|bench|tools|docs|metrics|models|data"
PROJECT_PATH = re.compile(rf"(?<![\w/.-])((?:{FOLDERS})/[\w./*-]*[\w/*])")  # a path in the project, globs too
TEXT_FILES = (".py", ".md", ".yaml", ".toml", ".html", ".txt")


def test_every_project_path_a_comment_or_doc_names_exists() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    named = {(name, ref.rstrip(".")) for name in tracked if name.endswith(TEXT_FILES) or name == "Makefile"
             for ref in PROJECT_PATH.findall((REPO / name).read_text(errors="replace"))}
    absent = sorted((name, ref) for name, ref in named if "NAME" not in ref and not any(REPO.glob(ref)))
    # what the pipeline, the benches and the tests write (git-ignored) is named before it exists; a folder's
    # pattern (`data/prepared/`) matches only when the name ends in a slash, so both forms are asked
    asked = [form for _, ref in absent for form in (ref, ref.rstrip("/") + "/")]
    ignored = {line.rstrip("/") for line in subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=REPO,
               input="\n".join(asked), capture_output=True, text=True).stdout.split()}
    missing = [f"{name}: {ref}" for name, ref in absent if ref.rstrip("/") not in ignored]
    assert missing == [], missing
