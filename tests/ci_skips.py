"""A pytest plugin for CI (CI=true): a skipped test fails the run unless it is marked `may_skip_in_ci`, and so does
a run in which no test of the complete tier (marker `complete`) ran.

A test that silently skips in CI is a test that CI does not run; the tools it needs are CI's to install. CI runs
the complete suite (`make test-all`); `make test` alone would leave the real-DVC tests out.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

MARKER = "may_skip_in_ci"
COMPLETE = "complete"
complete_tier_ran = 0  # tests of the complete tier that passed or failed here (the controller, under xdist)


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}(reason): this test may skip under CI too")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and under_ci() and not item.get_closest_marker(MARKER):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI ({reason}); install what it needs in .ci/run, or mark it {MARKER}"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global complete_tier_ran
    if report.when == "call" and COMPLETE in report.keywords:
        complete_tier_ran += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    is_worker = hasattr(session.config, "workerinput")  # an xdist worker: its controller sees every report
    if under_ci() and not is_worker and exitstatus == 0 and not complete_tier_ran:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write("\n")
            reporter.write_line(f"no test of the complete tier ran ('{COMPLETE}' marker): CI runs `make test-all`",
                                red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
