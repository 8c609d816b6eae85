"""Benchmark: a params preset (the `-S` overrides of a documented `dvc exp run`) over several seeds.

Each seed trains on params.yaml with the overrides applied (checked like params.yaml) and is measured as
`bench.default_recipe` measures: training seconds and test accuracy of the exported model's graph. A
preset is chosen on the validation split first; this reports what it then gives on the test set. Needs
`dvc repro` (data/prepared). Writes bench/results/local/preset-<overrides>.json (`--update`: the
committed bench/results/ copy).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, replace
from pathlib import Path

import click
import yaml

from bench.default_recipe import train_and_test
from bench.report_file import machine, write_report
from pipeline.common.errors import PipelineError
from pipeline.common.params import load_params
from pipeline.model.test_time import TEST_TIME_PARAMS
from pipeline.train.config import TRAIN_PARAMS, TrainConfig, load_train_config


def preset_config(overrides: tuple[str, ...], params_file: Path) -> tuple[TrainConfig, dict[str, object]]:
    """params.yaml's train params with KEY=VALUE overrides (YAML values), on the CPU; and the overrides."""
    changes = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in TRAIN_PARAMS:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE with KEY one of {', '.join(TRAIN_PARAMS)}")
        changes[key] = yaml.safe_load(value)
    try:
        cfg = load_train_config(params_file, changes)
    except PipelineError as exc:
        raise click.ClickException(str(exc)) from None
    return replace(cfg, device="cpu"), changes


@click.command(help=__doc__)
@click.option("-S", "--set", "overrides", multiple=True,
              help="KEY=VALUE, as `dvc exp run -S`; none measures params.yaml itself (preset-default).")
@click.option("--seeds", default="42,1,2", show_default=True, help="Comma-separated seeds.")
@click.option("--params", "params_file", default="params.yaml", show_default=True, type=click.Path(path_type=Path))
@click.option("--data", default="data/prepared", show_default=True, type=click.Path(path_type=Path))
@click.option("--update", is_flag=True, help="Replace the committed results instead of writing to results/local/.")
def main(overrides: tuple[str, ...], seeds: str, params_file: Path, data: Path, update: bool) -> None:
    cfg, changes = preset_config(overrides, params_file)
    tta_shifts = load_params(TEST_TIME_PARAMS, params_file)["tta_shifts"]
    runs = {}
    for seed in (int(s) for s in seeds.split(",")):
        runs[str(seed)] = train_and_test(replace(cfg, seed=seed), data, tta_shifts)
        click.echo(f"seed {seed}: {runs[str(seed)]}")
    accuracies = [r["test_accuracy"] for r in runs.values()]
    name = "preset-" + ("-".join(f"{k}{v}" for k, v in changes.items()) or "default")
    report = {"machine": machine(), "overrides": changes, "config": asdict(cfg), "runs": runs,
              "mean_test_accuracy": round(statistics.mean(accuracies), 5),
              "max_train_seconds": max(r["train_seconds"] for r in runs.values())}
    click.echo(f"mean test accuracy {report['mean_test_accuracy']:.4f}, at most {report['max_train_seconds']:.0f} s "
               f"of training per seed -> {write_report(name, report, update)}")


if __name__ == "__main__":
    main()
