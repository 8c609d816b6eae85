"""What the make targets a newcomer runs say while they run (`make -n` prints their commands without running them)."""

from __future__ import annotations

import subprocess

from tests.helpers import REPO


def dry_run(*targets: str) -> str:
    done = subprocess.run(["make", "--no-print-directory", "-n", "-B", *targets], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_setup_says_how_long_it_takes_and_pip_shows_its_progress() -> None:
    commands = dry_run("setup")
    assert "about 6 GB" in commands and "2-3 minutes" in commands
    install = next(line for line in commands.splitlines() if "pip install" in line)
    assert "--quiet" not in install and "--progress-bar on" in install and "-c constraints.txt" in install


def test_repro_explains_dvcs_push_hint() -> None:
    commands = dry_run("repro").splitlines()
    assert commands.index("dvc repro") < next(i for i, line in enumerate(commands) if "hint to push is generic" in line)
    assert "make publish" in "\n".join(commands)
