"""robustness stage: the exported ONNX model's accuracy under the corruption suite, fed directly and through
predict's preparation (onnxruntime, no PyTorch)."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import numpy as np

from pipeline.common.atomic import atomic_dir, write_json
from pipeline.common.cli import reports_errors, run, setup_logging
from pipeline.export.onnx_session import open_session, run_logits
from pipeline.robustness.scores import path_summaries
from pipeline.robustness.suite_file import load_suite

log = logging.getLogger("robustness")


@click.command(help="""Score MODEL (ONNX) on the robustness suite in SUITE.

Writes METRICS: per path (direct: the corrupted 28 x 28 images as they are; predict: after
predict's preparation), the mean accuracy over all corruptions, over those training never
sees (held_out_mean), per family and per corruption; and into PLOTS_DIR per_corruption.csv.
Through predict, an image predict reads two ways counts the reading the model is surest of.
Reads no params.""")
@click.option("--model", default="models/model.onnx", show_default=True, type=click.Path(path_type=Path))
@click.option("--suite", "suite_dir", default="data/corrupted", show_default=True, type=click.Path(path_type=Path))
@click.option("--metrics", default="metrics/robustness.json", show_default=True, type=click.Path(path_type=Path))
@click.option("--plots-dir", default="metrics/robustness", show_default=True, type=click.Path(path_type=Path))
@reports_errors
def main(model: Path, suite_dir: Path, metrics: Path, plots_dir: Path) -> None:
    setup_logging("robustness")
    session, suite = open_session(model), load_suite(suite_dir)

    def logits_of(pixels: np.ndarray) -> np.ndarray:  # large batches keep onnxruntime's threads busy
        return run_logits(session, pixels, batch=2000)

    report = {"images_per_corruption": suite.index["images_per_corruption"], **path_summaries(logits_of, suite)}
    with atomic_dir(plots_dir) as tmp:
        rows = ["corruption,family,trained,path,accuracy"]
        for path in ("direct", "predict"):
            rows += [f"{e['name']},{e['family']},{str(e['trained']).lower()},{path},"
                     f"{report[path]['corruption'][e['name']]:.4f}" for e in suite.index["corruptions"]]
        (tmp / "per_corruption.csv").write_text("\n".join(rows) + "\n")
    write_json(metrics, report)
    log.info("mean accuracy under %d corruptions (%d digits each): direct %.4f (held out %.4f), through predict "
             "%.4f (held out %.4f)", len(suite.images), len(suite.labels), report["direct"]["mean"],
             report["direct"]["held_out_mean"], report["predict"]["mean"], report["predict"]["held_out_mean"])


if __name__ == "__main__":
    run(main)
