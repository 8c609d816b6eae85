"""report: a Markdown report of this workspace against another revision, for a branch under review.

Not a pipeline stage: it reads the committed record (`metrics/`) of two revisions through git and DVC's
own diffs, so it renders on any git host or in a pull-request description, with no service.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import click

from pipeline.common.cli import reports_errors, run

FIGURES = {"learning curves": "metrics/train/curves.png", "confusion matrix (test)": "metrics/eval/confusion.png"}


def dvc_markdown(*args: str) -> str:
    """Output of a `dvc ... --md` command (the dvc installed beside this Python)."""
    dvc = Path(sys.executable).with_name("dvc")
    done = subprocess.run([str(dvc) if dvc.exists() else "dvc", *args, "--md"], capture_output=True, text=True)
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise click.ClickException(f"dvc {' '.join(args)}: {said[-1] if said else f'exited with {done.returncode}'}")
    return done.stdout.strip() or "_no differences_"


def figure_at(revision: str, path: str, dest: Path) -> bool:
    """Write `path` as committed at `revision` to `dest`; False when that revision has no such file."""
    done = subprocess.run(["git", "show", f"{revision}:{path}"], capture_output=True)
    if done.returncode != 0:
        return False
    dest.write_bytes(done.stdout)
    return True


def safe(revision: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in revision)


@click.command(help="""Write OUT/report.md: this workspace against BASE (a branch, tag or commit).

It holds `dvc params diff` and `dvc metrics diff` as Markdown tables and both revisions' learning
curves and confusion matrices side by side (PNG files copied beside the report). Run it after
`dvc repro` on the branch under review; commit OUT or paste report.md into the pull request.""")
@click.argument("base", default="main")
@click.option("--out", default="report", show_default=True, type=click.Path(path_type=Path))
@reports_errors
def main(base: str, out: Path) -> None:
    known = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"], capture_output=True)
    if known.returncode:
        raise click.ClickException(f"{base}: not a revision of this repository (a branch, tag or commit)")
    params, metrics = dvc_markdown("params", "diff", base), dvc_markdown("metrics", "diff", base)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for title, path in FIGURES.items():
        name = Path(path).name
        before, after = out / f"{safe(base)}-{name}", out / f"workspace-{name}"
        cells = [f"![{base}: {title}]({before.name})" if figure_at(base, path, before) else "_not in this revision_",
                 f"![workspace: {title}]({after.name})" if Path(path).is_file() else "_not produced yet_"]
        if Path(path).is_file():
            shutil.copyfile(path, after)
        rows.append(f"| {title} | {cells[0]} | {cells[1]} |")
    report = "\n\n".join([
        f"# This workspace against `{base}`",
        "## Params\n\n" + params,
        "## Metrics\n\n" + metrics,
        f"## Figures\n\n| | `{base}` | workspace |\n|---|---|---|\n" + "\n".join(rows),
    ]) + "\n"
    (out / "report.md").write_text(report)
    click.echo(f"{out / 'report.md'}: params, metrics and {len(FIGURES)} figures against {base}")


if __name__ == "__main__":
    run(main)
