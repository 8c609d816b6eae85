"""Benchmark: how long a whole `dvc exp run -S lr=...` takes, split into training and everything else.

For each revision (default: HEAD) a clone in a temporary folder shares this workspace's DVC cache, so
that download and preprocess are restored, not rerun. Each run sets a learning rate not run before
(DVC's run-cache would otherwise restore every stage), and revisions take turns (A, B, A, B, ...) so
that a shared machine's load falls on all alike. Training seconds are the train stage's own log line;
the rest is DVC's bookkeeping, process start-up, evaluate and export. Both revisions run on this
environment's packages, except that a revision whose requirements lack ruamel.yaml.clib runs with
that C parser hidden, as its own `make setup` would have installed it. Needs `make repro` first. Writes
bench/results/local/experiment_loop.json (`--update`: the committed bench/results/experiment_loop.json).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from bench.report_file import machine, write_report

ROOT = Path(__file__).resolve().parent.parent
TRAINING = re.compile(r"([\d.]+)s training")
STAGE = re.compile(r"Running stage '(\w+)'")


def git(*args: str, cwd: Path = ROOT) -> str:
    """Run git in `cwd`; its output."""
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def revision_env(revision: str, folder: Path, env: dict[str, str]) -> dict[str, str]:
    """`env`, with ruamel.yaml's C parser hidden where the revision's requirements do not install it."""
    declared = "".join(subprocess.run(["git", "show", f"{revision}:{name}"], cwd=ROOT, capture_output=True,
                                      text=True).stdout for name in ("pyproject.toml", "requirements.txt"))
    if "ruamel.yaml.clib" in declared:
        return env
    hide = folder.with_name(f"{folder.name}-no-c-yaml")
    hide.mkdir(exist_ok=True)
    (hide / "_ruamel_yaml.py").write_text("raise ImportError('hidden: this revision does not install it')\n")
    return {**env, "PYTHONPATH": str(hide)}


def checkout(revision: str, folder: Path, env: dict[str, str]) -> None:
    """A clone of `revision` whose DVC outputs come from this workspace's cache."""
    git("clone", "-q", str(ROOT), str(folder))
    git("checkout", "-q", revision, cwd=folder)
    subprocess.run(["dvc", "cache", "dir", "--local", str(ROOT / ".dvc" / "cache")], cwd=folder, env=env, check=True)
    subprocess.run(["dvc", "checkout", "-q"], cwd=folder, env=env, capture_output=True)  # missing outputs rerun


def timed_experiment(folder: Path, lr: float, env: dict[str, str]) -> dict[str, float]:
    """Run `dvc exp run -S lr=LR` in `folder`: total, training and each stage's seconds (DVC's time included)."""
    started = time.perf_counter()
    stage_starts: dict[str, float] = {}
    lines = []
    with subprocess.Popen(["dvc", "exp", "run", "-S", f"lr={lr}"], cwd=folder, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as process:
        for line in process.stdout:
            lines.append(line)
            if match := STAGE.search(line):
                stage_starts[match.group(1)] = time.perf_counter() - started
    total = time.perf_counter() - started
    output = "".join(lines)
    training = TRAINING.search(output)
    if process.returncode or not training:
        sys.exit(f"dvc exp run failed in {folder}:\n{output[-2000:]}")
    bounds = [*stage_starts.values(), total]
    stages = {name: round(end - start, 2) for name, start, end in zip(stage_starts, bounds, bounds[1:], strict=False)}
    seconds = float(training.group(1))
    return {"lr": lr, "total": round(total, 2), "training": seconds, "rest": round(total - seconds, 2),
            "stages": stages}


@click.command(help=__doc__)
@click.option("--revisions", default="HEAD", show_default=True, help="Comma-separated git revisions to compare.")
@click.option("--rounds", default=2, show_default=True, help="Runs of each revision.")
@click.option("--update", is_flag=True, help="Replace the committed results instead of writing to results/local/.")
def main(revisions: str, rounds: int, update: bool) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    names = [r.strip() for r in revisions.split(",")]
    commits = {name: git("rev-parse", "--short", name) for name in names}
    work = Path(tempfile.mkdtemp(prefix="experiment-loop-"))
    folders = {name: work / name.replace("/", "_") for name in names}
    envs = {name: revision_env(commits[name], folders[name], env) for name in names}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    try:
        for name in names:
            checkout(commits[name], folders[name], envs[name])
        for round_ in range(rounds):
            for name in names:
                folder = folders[name]
                lr = round(random.uniform(0.0095, 0.0115), 6)  # not in the run-cache
                runs[name].append(timed_experiment(folder, lr, envs[name]))
                git("checkout", "-q", "--", ".", cwd=folder)  # back to the revision's params and record
                subprocess.run(["dvc", "checkout", "-q"], cwd=folder, env=envs[name], capture_output=True)
                click.echo(f"round {round_ + 1} {name} ({commits[name]}): {runs[name][-1]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {name: {"commit": commits[name], "runs": runs[name],
                      "median_total": statistics.median(r["total"] for r in runs[name]),
                      "median_training": statistics.median(r["training"] for r in runs[name]),
                      "median_rest": statistics.median(r["rest"] for r in runs[name])} for name in names}
    path = write_report("experiment_loop", {"machine": machine(), "command": "dvc exp run -S lr=<new value>",
                                            "revisions": summary}, update)
    for name, result in summary.items():
        click.echo(f"{name} ({result['commit']}): total {result['median_total']:.1f} s = training "
                   f"{result['median_training']:.1f} s + rest {result['median_rest']:.1f} s (medians)")
    click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
