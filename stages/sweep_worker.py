"""sweep-worker: this worker's share of a grid of experiments, each run from the commit's own params and pushed.

One of SHARDS workers (Slurm array tasks, Kubernetes Indexed Job pods, CI matrix jobs) in a clone of one pushed
commit. The grid is DVC's own syntax (`-S 'lr=0.003,0.006' -S 'batch_size=256,512'`), expanded in a fixed
order; this worker takes the points whose index modulo SHARDS is SHARD. docs/sweeps.md has the recipes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import click

from pipeline.common.cli import reports_errors, run
from pipeline.common.errors import PipelineError

Point = dict[str, str]


def parse_sweep(text: str) -> list[tuple[str, list[str]]]:
    """`-S 'key=v1,v2' -S ...` as (key, values) pairs, in the order given."""
    tokens, pairs = shlex.split(text), []
    if not tokens:
        raise PipelineError("--sweep: empty (give one or more -S 'key=value1,value2')")
    for flag, setting in itertools.zip_longest(tokens[::2], tokens[1::2]):
        key, sep, values = (setting or "").partition("=")
        if flag != "-S" or not sep or not key or not values or "" in values.split(","):
            given = shlex.join(part for part in (flag, setting) if part)
            raise PipelineError(f"--sweep: expected -S 'key=value1,value2', got {given!r}")
        if key in (k for k, _ in pairs):
            raise PipelineError(f"--sweep: '{key}' is given twice")
        pairs.append((key, values.split(",")))
    return pairs


def grid(pairs: list[tuple[str, list[str]]]) -> list[Point]:
    """Every combination, the last key varying fastest: the same order on every worker."""
    keys = [key for key, _ in pairs]
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(v for _, v in pairs))]


def shard_of(points: list[Point], shard: int, shards: int) -> list[tuple[int, Point]]:
    """The points this worker runs: those whose index modulo `shards` is `shard`."""
    return [(index, point) for index, point in enumerate(points) if index % shards == shard]


def experiment_name(point: Point) -> str:
    """A name that is the point's own, so two workers never pick the same one: readable key-value pairs
    (what a git ref allows) and a hash of the exact point."""
    readable = "_".join(f"{key}-{value}" for key, value in point.items())
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", readable).strip(".-")[:60]
    digest = hashlib.sha1(json.dumps(point, sort_keys=True).encode()).hexdigest()[:8]
    return f"sweep-{readable}-{digest}"


def command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True)


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
    return lines[-1] if lines else f"exit status {done.returncode}"


def experiment_refs(*where: str) -> dict[str, str]:
    """{experiment name: commit} of the experiment refs here (no argument) or in the git remote `where`."""
    listed = command("git", "ls-remote", where[0], "refs/exps/*") if where else \
        command("git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps/")
    pairs = (line.split() for line in listed.stdout.splitlines() if line.strip())
    return {ref.rsplit("/", 1)[-1]: commit for commit, ref in pairs}


def arrived(remote: str, name: str) -> bool:
    """Whether `remote` now holds this experiment, the same commit as here: `dvc exp push` can exit 0 without
    pushing it (a diverged experiment of that name there, say)."""
    here = experiment_refs().get(name)
    return here is not None and experiment_refs(remote).get(name) == here


def run_point(point: Point, name: str, remote: str, dvc: str) -> str | None:
    """Run one point from the commit's params and outputs and push it; None, or why it failed."""
    # no leak from the last point; a fresh clone has no outputs yet, which exp run then makes
    for restore in (("git", "checkout", "--", "."), (dvc, "checkout", "--quiet", "--allow-missing")):
        if (done := command(*restore)).returncode:
            return f"could not restore the commit's workspace: {last_line(done)}"
    settings = [part for key, value in point.items() for part in ("-S", f"{key}={value}")]
    if (done := command(dvc, "exp", "run", "--name", name, *settings)).returncode:
        return f"dvc exp run failed: {last_line(done)}"
    pushed = command(dvc, "exp", "push", remote, name)  # with its outputs, to the default DVC remote if any
    if pushed.returncode or not arrived(remote, name):
        return f"the push to {remote} did not arrive: {last_line(pushed)}"
    return None


@click.command(help="""Run this worker's share of a grid of experiments and push each one.

SWEEP is DVC's grid syntax, quoted as one argument: -S 'lr=0.003,0.006' -S 'batch_size=256,512'.
Every worker expands it in the same order and takes the points whose index modulo SHARDS is SHARD.
Each point starts from the commit's params and outputs (`git checkout -- .` and `dvc checkout`, so no
value leaks from the point before), runs `dvc exp run --name <name>` with a name derived from the point
(unique across workers), then `dvc exp push REMOTE <name>` (its outputs go to the repository's default
DVC remote, when it has one) and checks that the ref arrived. A failed point is reported and the worker
goes on; the exit status is 1 if any failed. Collecting: docs/sweeps.md.""")
@click.option("--shard", type=click.IntRange(0), required=True, help="This worker's index, from 0.")
@click.option("--shards", type=click.IntRange(1), required=True, help="How many workers share the grid.")
@click.option("--sweep", required=True, help="The grid: -S 'key=v1,v2' [-S ...].")
@click.option("--remote", default="origin", show_default=True, help="The git remote experiments are pushed to.")
@click.option("--dry-run", is_flag=True, help="List this worker's points and names; run nothing.")
@reports_errors
def main(shard: int, shards: int, sweep: str, remote: str, dry_run: bool) -> None:
    if shard >= shards:
        raise PipelineError(f"--shard {shard}: must be below --shards {shards}")
    points = grid(parse_sweep(sweep))
    mine = shard_of(points, shard, shards)
    who = f"[sweep-worker {shard}/{shards}]"
    click.echo(f"{who} {len(mine)} of {len(points)} points", err=True)
    dvc = str(Path(sys.executable).parent / "dvc")
    failed = []
    for count, (index, point) in enumerate(mine, 1):
        name = experiment_name(point)
        shown = " ".join(f"{key}={value}" for key, value in point.items())
        if dry_run:
            click.echo(f"{index}\t{name}\t{shown}")
            continue
        click.echo(f"{who} point {count} of {len(mine)} (#{index}): {shown} -> {name}", err=True)
        started = time.perf_counter()
        problem = run_point(point, name, remote, dvc)
        if problem:
            failed.append(name)
        outcome = f"FAILED: {problem}" if problem else f"pushed to {remote}"
        click.echo(f"{who} {name}: {outcome} ({time.perf_counter() - started:.0f} s)", err=True)
    if failed:
        raise PipelineError(f"{len(failed)} of {len(mine)} points failed: {', '.join(failed)}")


if __name__ == "__main__":
    run(main)
