"""A pytest plugin: under CI (CI=true), a skipped test fails the run unless it is marked `may_skip_in_ci`.

A test that silently skips in CI is a test that CI does not run; the tools it needs are CI's to install.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

MARKER = "may_skip_in_ci"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}(reason): this test may skip under CI too")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI", "").lower() in ("1", "true") and not item.get_closest_marker(MARKER):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI ({reason}); install what it needs in .ci/run, or mark it {MARKER}"
