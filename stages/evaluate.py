"""evaluate stage: measure the exported ONNX model, as it ships, on the test split with onnxruntime (no PyTorch);
write metrics, the per-class report, figures and the model card."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click
import numpy as np

from pipeline.common.atomic import atomic_dir, write_json, write_text
from pipeline.common.cli import reports_errors, run, setup_logging
from pipeline.common.errors import PipelineError
from pipeline.common.json_file import read_json
from pipeline.data.prepared_arrays import load_arrays, read_stats
from pipeline.evaluate.figures import plot_confusion, plot_misclassified
from pipeline.evaluate.metrics import confusion_matrix, per_class_report, summarize, worst_mistakes, write_csv
from pipeline.evaluate.model_card import CARD_KEYS, model_card
from pipeline.export.onnx_session import class_names, metadata, not_digit_below, open_session, run_logits

log = logging.getLogger("evaluate")
WORST = 32


@click.command(help="""Evaluate the exported ONNX MODEL on the test split in DATA with onnxruntime.

Writes METRICS (accuracy, loss, macro precision/recall/F1, error count, expected calibration
error, share of test digits below the model's not_digit_below), the model CARD (from
the ONNX metadata, DATA's stats.json and EXPORT_METRICS) and into PLOTS_DIR: per_class.csv,
confusion.csv (actual,predicted per test image, for DVC's confusion template), confusion.png
and misclassified.png. Imports no PyTorch: the numbers are those of the file that ships.""")
@click.option("--model", "model_path", default="models/model.onnx", show_default=True,
              type=click.Path(path_type=Path))
@click.option("--data", default="data/prepared", show_default=True, type=click.Path(path_type=Path))
@click.option("--export-metrics", default="metrics/export.json", show_default=True, type=click.Path(path_type=Path))
@click.option("--metrics", default="metrics/eval.json", show_default=True, type=click.Path(path_type=Path))
@click.option("--plots-dir", default="metrics/eval", show_default=True, type=click.Path(path_type=Path))
@click.option("--card", default="models/model_card.md", show_default=True, type=click.Path(path_type=Path))
@reports_errors
def main(model_path: Path, data: Path, export_metrics: Path, metrics: Path, plots_dir: Path, card: Path) -> None:
    setup_logging("evaluate")
    session = open_session(model_path)
    classes, properties = class_names(session), metadata(session)
    if missing := sorted(CARD_KEYS - properties.keys()):
        raise PipelineError(f"{model_path}: no {', '.join(missing)} in its metadata (make it with the export stage)")
    images, labels = load_arrays(data / "test.npz")
    stats, export = read_stats(data), read_json(export_metrics, "the export stage")
    started = time.perf_counter()
    logits = run_logits(session, (images[:, None] / np.float32(255)).astype(np.float32))
    rate = len(images) / (time.perf_counter() - started)
    predicted = logits.argmax(1)
    matrix = confusion_matrix(labels, predicted, len(classes))
    report = per_class_report(matrix, classes)
    summary = summarize(logits, labels, report, not_digit_below(session))
    worst, confidence = worst_mistakes(logits, labels, WORST)
    with atomic_dir(plots_dir) as tmp:
        write_csv(tmp / "per_class.csv", report)
        write_csv(tmp / "confusion.csv", {"actual": [classes[i] for i in labels],
                                          "predicted": [classes[i] for i in predicted]})
        plot_confusion(matrix, classes, tmp / "confusion.png")
        plot_misclassified(images[worst], [classes[i] for i in labels[worst]], [classes[i] for i in predicted[worst]],
                           confidence.tolist(), tmp / "misclassified.png")
    write_json(metrics, summary)
    write_text(card, model_card(properties, stats, summary, export))
    log.info("test accuracy %.4f (%d errors of %d), macro F1 %.4f; onnxruntime %d images/s", summary["accuracy"],
             summary["errors"], len(labels), summary["f1_macro"], rate)


if __name__ == "__main__":
    run(main)
