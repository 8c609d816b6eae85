"""Benchmark: the default recipe in params.yaml against the previous default, side by side in one run.

For each seed, trains the previous default and then the new one on the same machine, so that the load of a
shared machine falls on both alike. Reports training seconds (the sum of epoch times, as the train stage
logs them), the kept epoch's validation accuracy and the test accuracy of the exported model's graph
(test-time shifts included), and each recipe's mean over the seeds. Needs `dvc repro` (data/prepared).
Writes bench/results/local/default_recipe.json (`--update`: the committed bench/results/default_recipe.json).
"""

from __future__ import annotations

import json
import statistics
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import click
import numpy as np
import torch

from bench.report_file import machine, write_report
from pipeline.common.params import load_params
from pipeline.data.prepared import PreparedData
from pipeline.model.batches import predict_logits, to_pixels
from pipeline.model.test_time import TEST_TIME_PARAMS, for_inference
from pipeline.robustness.scores import path_summaries
from pipeline.robustness.suite_file import Suite, load_suite
from pipeline.train.checkpoint import Checkpoint
from pipeline.train.config import TrainConfig, load_train_config
from pipeline.train.distributed import ProcessInfo
from pipeline.train.loop import fit
from pipeline.train.setup import TrainingData

SUITE = Path("data/corrupted")
NON_DIGITS = Path("data/non_digits.npz")  # the draw stage's
# the default until this benchmark's recipe replaced it (Muon and selective backprop: 99.62 % mean test accuracy
# over seeds 42, 1, 2 on the AMD EPYC of docs/results.md), with no drawn non-digits; a key added since takes
# params.yaml's value
PREVIOUS = dict(model="cnn", width=16, optimizer="muon", lr=0.01, momentum=0.9, nesterov=False, weight_decay=0.0005,
                scheduler="onecycle", label_smoothing=0.1, augment=True, rotate_deg=0.0, zoom=0.0, standardize=False,
                corrupt_fraction=0.0, non_digits=0.0, ema_decay=0.99, select_fraction=0.25, select_after=2,
                batch_size=512, epochs=22, patience=0, seed=42, device="cpu")


def train_and_test(cfg: TrainConfig, data: Path, tta_shifts: int, suite: Path = SUITE) -> dict[str, float]:
    """Train `cfg` and measure the model as it is exported (normalization and any test-time shifts inside): on the
    test set, and on the robustness suite in `suite` when the corrupt stage has made it."""
    prepared = PreparedData.load(data)
    test = prepared.split("test")
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(cfg, TrainingData.of(prepared, NON_DIGITS if cfg.non_digits else None), ProcessInfo(),
                Checkpoint(Path(tmp) / "ck.pt", {"run": "bench"}))
    model = for_inference(result.model, cfg.model, prepared.normalization, tta_shifts)
    correct = (predict_logits(model, to_pixels(test.images)).argmax(1) == test.labels).sum().item()
    best = result.state.history[result.state.best_epoch - 1]
    report = {"train_seconds": round(result.train_seconds, 2), "val_accuracy": best["val_acc"],
              "test_accuracy": correct / len(test.labels)}
    if (suite / "suite.json").is_file():
        report.update(robustness(model, load_suite(suite)))
    return report


def robustness(model: torch.nn.Module, suite: Suite) -> dict[str, float]:
    """The means the robustness stage reports, for `model` fed directly and through predict's preparation."""

    def logits_of(pixels: np.ndarray) -> np.ndarray:
        return predict_logits(model, torch.from_numpy(pixels)).numpy()

    return {f"{path}_{mean}": scores[mean] for path, scores in path_summaries(logits_of, suite).items()
            for mean in ("mean", "held_out_mean")}


@click.command(help=__doc__)
@click.option("--seeds", default="42,1,2", show_default=True, help="Comma-separated seeds; each trains both recipes.")
@click.option("--params", "params_file", default="params.yaml", show_default=True, type=click.Path(path_type=Path))
@click.option("--data", default="data/prepared", show_default=True, type=click.Path(path_type=Path))
@click.option("--update", is_flag=True, help="Replace the committed results instead of writing to results/local/.")
def main(seeds: str, params_file: Path, data: Path, update: bool) -> None:
    new = replace(load_train_config(params_file), device="cpu")
    tta_shifts = load_params(TEST_TIME_PARAMS, params_file)["tta_shifts"]
    recipes = {"previous": replace(new, **PREVIOUS), "new": new}
    runs: dict[str, dict[str, dict[str, float]]] = {"previous": {}, "new": {}}
    for seed in (int(s) for s in seeds.split(",")):
        for name, cfg in recipes.items():
            runs[name][str(seed)] = train_and_test(replace(cfg, seed=seed), data, tta_shifts)
            click.echo(f"seed {seed} {name:<8} {runs[name][str(seed)]}")
    report: dict[str, object] = {"machine": machine()}
    for name, cfg in recipes.items():
        results = list(runs[name].values())
        report[name] = {"config": {**asdict(cfg), "seed": "each of --seeds"}, "runs": runs[name],
                        "mean_test_accuracy": round(statistics.mean(r["test_accuracy"] for r in results), 5),
                        "mean_val_accuracy": round(statistics.mean(r["val_accuracy"] for r in results), 5),
                        "median_train_seconds": statistics.median(r["train_seconds"] for r in results)}
    report["time_ratio_new_over_previous"] = round(report["new"]["median_train_seconds"]
                                                   / report["previous"]["median_train_seconds"], 3)
    click.echo(json.dumps({k: v for k, v in report.items() if k not in recipes}, indent=2))
    for name in recipes:
        click.echo(f"{name}: mean test accuracy {report[name]['mean_test_accuracy']:.4f}, median "
                   f"{report[name]['median_train_seconds']:.1f} s of training")
    click.echo(f"-> {write_report('default_recipe', report, update)}")


if __name__ == "__main__":
    main()
