"""The suite's own rules: under CI a skipped test fails the run unless marked as allowed to skip there, so does a
run without the complete tier, and markers sit on tests, not on helpers (where pytest ignores them)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

ONLY_NAMED_PLUGINS = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # the probe's pytest loads only what `-p` names

PROBE = '''
import pytest

@pytest.mark.skipif(True, reason="a tool is missing")
def test_needs_a_tool():
    pass

@pytest.mark.may_skip_in_ci("allowed")
@pytest.mark.skipif(True, reason="no GPU here")
def test_may_skip():
    pass
'''


@pytest.mark.parametrize(("ci", "fails"), [("true", True), ("", False)])
def test_a_skip_fails_under_ci_unless_marked(tmp_path: Path, ci: str, fails: bool) -> None:
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(REPO), **ONLY_NAMED_PLUGINS}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.ci_skips", "-p", "no:cacheprovider",
                           "-o", "addopts=", "-rA", str(tmp_path / "test_probe.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    summary = done.stdout.splitlines()[-1]
    assert (done.returncode != 0) == fails, done.stdout[-2000:]
    if fails:  # a skip in setup becomes an error there; the marked test still skips
        assert "1 skipped, 1 error" in summary, summary
        assert "ERROR test_probe.py::test_needs_a_tool - skipped under CI (Skipped: a tool is missing)" in done.stdout
    else:
        assert "2 skipped" in summary, summary


TIERS = '''
import pytest

def test_quick():
    pass

@pytest.mark.complete
def test_on_a_real_repository():
    pass
'''


@pytest.mark.parametrize(("ci", "selection", "fails"), [("true", "not complete", True), ("true", "", False),
                                                        ("", "not complete", False)])
def test_ci_fails_unless_the_complete_tier_ran(tmp_path: Path, ci: str, selection: str, fails: bool) -> None:
    (tmp_path / "test_tiers.py").write_text(TIERS)
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(REPO), **ONLY_NAMED_PLUGINS}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.ci_skips", "-p", "no:cacheprovider",
                           "-o", "addopts=", "-m", selection, str(tmp_path / "test_tiers.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert (done.returncode != 0) == fails, done.stdout[-2000:]
    assert ("no test of the complete tier ran" in done.stdout) == fails, done.stdout[-2000:]


def test_markers_sit_on_tests_only() -> None:
    misplaced = []
    for path in sorted((REPO / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("test_"):
                marks = [ast.unparse(d) for d in node.decorator_list if "pytest.mark" in ast.unparse(d)]
                misplaced += [f"{path.name}:{node.lineno} {node.name} has {m}" for m in marks]
    assert misplaced == []
