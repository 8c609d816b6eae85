"""verdict stage: the last word of a pipeline run, how its results compare with the committed record."""

from __future__ import annotations

import subprocess
from pathlib import Path

import click

from pipeline.common.cli import reports_errors, run
from pipeline.common.errors import PipelineError
from pipeline.common.params import parse_params, read_params_file, refuse_unknown
from pipeline.verdict.compare import (
    changed_files,
    committed_text,
    declared_keys,
    read_record,
    seed_tolerance,
    verdict,
)

PATHS = ("params.yaml", "metrics/train.json", "metrics/eval.json")


@click.command(help="""Compare this workspace's results with the record committed at HEAD.

Prints one line when the params differ (an experiment) or when the run reproduced the committed
record bit for bit. A retrain of the committed params on another platform gets a short verdict:
both platforms, both test accuracies, whether they are within the spread that training seeds
alone give (TOLERANCE_FROM, a `bench.preset` result), the tracked files that changed and the
command that restores the committed record. Writes nothing. It reads the whole params file, so it also
refuses, in one line, a key that no stage of PIPELINE declares (a misspelt one).""")
@click.option("--params", "params_file", default="params.yaml", show_default=True, type=click.Path(path_type=Path))
@click.option("--train-metrics", default="metrics/train.json", show_default=True, type=click.Path(path_type=Path))
@click.option("--eval-metrics", default="metrics/eval.json", show_default=True, type=click.Path(path_type=Path))
@click.option("--tolerance-from", default="bench/results/preset-default.json", show_default=True,
              type=click.Path(path_type=Path))
@click.option("--pipeline", default="dvc.yaml", show_default=True, type=click.Path(path_type=Path),
              help="The pipeline whose stages' declared params are the known keys.")
@reports_errors
def main(params_file: Path, train_metrics: Path, eval_metrics: Path, tolerance_from: Path, pipeline: Path) -> None:
    params = read_params_file(params_file)
    refuse_unknown(params, declared_keys(pipeline.read_text()), str(params_file))
    current = read_record(params, train_metrics.read_text(), eval_metrics.read_text())
    repo = Path.cwd()
    try:
        params, train, evaluation = (committed_text(repo, path) for path in PATHS)
        committed = read_record(parse_params(params, "HEAD:params.yaml"), train, evaluation)
    except (subprocess.CalledProcessError, FileNotFoundError, KeyError, ValueError, PipelineError):
        click.echo("[verdict] no committed record at HEAD to compare with")
        return
    for line in verdict(committed, current, seed_tolerance(tolerance_from), changed_files(repo)):
        click.echo(f"[verdict] {line}")


if __name__ == "__main__":
    run(main)
