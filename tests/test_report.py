"""report: the Markdown report of a branch against another revision, and what it says when dvc fails."""

from __future__ import annotations

import subprocess

import click
import pytest

from stages import report


@pytest.mark.parametrize(("stderr", "stdout", "said"), [
    ("", "", "exited with 2"), ("ERROR: unexpected error\n", "", "ERROR: unexpected error"), ("", "no git\n", "no git"),
])
def test_report_says_why_dvc_failed_even_when_it_printed_nothing(monkeypatch: pytest.MonkeyPatch, stderr: str,
                                                                  stdout: str, said: str) -> None:
    monkeypatch.setattr(report.subprocess, "run", lambda command, **_: subprocess.CompletedProcess(
        command, 2, stdout=stdout, stderr=stderr))
    with pytest.raises(click.ClickException) as raised:
        report.dvc_markdown("metrics", "diff", "main")
    assert raised.value.message == f"dvc metrics diff main: {said}"
