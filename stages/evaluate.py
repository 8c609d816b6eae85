"""evaluate stage: measure the trained model on the test split; write metrics, per-class report and figures."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click
import pandas as pd

from pipeline.common.atomic import atomic_dir, write_json
from pipeline.common.cli import reports_errors, run, setup_logging
from pipeline.common.params import describe, load_params
from pipeline.data.prepared import load_split
from pipeline.evaluate.figures import plot_confusion, plot_misclassified
from pipeline.evaluate.metrics import (
    confusion_matrix,
    per_class_report,
    predict_logits,
    summarize,
    to_pixels,
    worst_mistakes,
)
from pipeline.model.test_time import TEST_TIME_PARAMS, load_model

log = logging.getLogger("evaluate")
WORST = 32


@click.command(help=f"""Evaluate MODEL on the test split in DATA (on the CPU).

Writes METRICS (accuracy, loss, macro precision/recall/F1, error count)
and into PLOTS_DIR: per_class.csv, confusion.csv (actual,predicted per test image, for DVC's
confusion template), confusion.png and misclassified.png.

\b
Params read from params.yaml:
{describe(TEST_TIME_PARAMS)}""")
@click.option("--params", "params_file", default="params.yaml", show_default=True, type=click.Path(path_type=Path))
@click.option("--model", "model_path", default="models/model.pt", show_default=True,
              type=click.Path(path_type=Path))
@click.option("--data", default="data/prepared", show_default=True, type=click.Path(path_type=Path))
@click.option("--metrics", default="metrics/eval.json", show_default=True, type=click.Path(path_type=Path))
@click.option("--plots-dir", default="metrics/eval", show_default=True, type=click.Path(path_type=Path))
@reports_errors
def main(params_file: Path, model_path: Path, data: Path, metrics: Path, plots_dir: Path) -> None:
    setup_logging("evaluate")
    model, meta = load_model(model_path, load_params(TEST_TIME_PARAMS, params_file)["tta_shifts"])
    test = load_split(data / "test.pt")
    classes = meta.classes
    pixels = to_pixels(test.images)
    started = time.perf_counter()
    logits = predict_logits(model, pixels)
    rate = len(pixels) / (time.perf_counter() - started)
    actual, predicted = test.labels.numpy(), logits.argmax(1).numpy()
    matrix = confusion_matrix(actual, predicted, len(classes))
    report = per_class_report(matrix, classes)
    summary = summarize(logits, test.labels, report)
    worst, confidence = worst_mistakes(logits, test.labels, WORST)
    with atomic_dir(plots_dir) as tmp:
        report.to_csv(tmp / "per_class.csv", index=False)
        pd.DataFrame({"actual": [classes[i] for i in actual], "predicted": [classes[i] for i in predicted]}).to_csv(
            tmp / "confusion.csv", index=False)
        plot_confusion(matrix, classes, tmp / "confusion.png")
        plot_misclassified(test.images[worst].numpy(), [classes[i] for i in actual[worst]],
                           [classes[i] for i in predicted[worst]], confidence.tolist(), tmp / "misclassified.png")
    write_json(metrics, summary)
    log.info("test accuracy %.4f (%d errors of %d), macro F1 %.4f; %d images/s", summary["accuracy"],
             summary["errors"], len(test), summary["f1_macro"], rate)


if __name__ == "__main__":
    run(main)
