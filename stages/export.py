"""export stage: ONNX and torch.export files that carry their own normalization, verified on the test set."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from pipeline.common.atomic import atomic_path, write_json, write_text
from pipeline.common.cli import reports_errors, run, setup_logging
from pipeline.common.errors import PipelineError
from pipeline.common.params import describe, load_params
from pipeline.data.prepared import PreparedData, load_split
from pipeline.evaluate.metrics import to_pixels
from pipeline.export.formats import MAX_LOGIT_DIFF, export_onnx, export_program, onnx_metadata, verify
from pipeline.export.model_card import model_card
from pipeline.model.test_time import TEST_TIME_PARAMS, load_model

log = logging.getLogger("export")


def read_evaluation(path: Path) -> dict[str, Any]:
    """The evaluate stage's metrics, for the model card."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found (run the evaluate stage)") from None
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{path}: not valid JSON ({exc})") from None


@click.command(help=f"""Export MODEL to ONNX and torch.export (.pt2) and verify both on the test set.

Both take float32 pixels in [0, 1] shaped N x 1 x 28 x 28 and return N x 10 logits. Export fails
unless onnxruntime and the exported program agree with PyTorch on every test image with logits
within {MAX_LOGIT_DIFF:g}. Writes METRICS and a model card beside the model.

\b
Params read from params.yaml:
{describe(TEST_TIME_PARAMS)}""")
@click.option("--params", "params_file", default="params.yaml", show_default=True, type=click.Path(path_type=Path))
@click.option("--model", "model_path", default="models/model.pt", show_default=True,
              type=click.Path(path_type=Path))
@click.option("--data", default="data/prepared", show_default=True, type=click.Path(path_type=Path))
@click.option("--eval-metrics", default="metrics/eval.json", show_default=True, type=click.Path(path_type=Path))
@click.option("--onnx-out", default="models/model.onnx", show_default=True, type=click.Path(path_type=Path))
@click.option("--program-out", default="models/model.pt2", show_default=True, type=click.Path(path_type=Path))
@click.option("--card-out", default="models/model_card.md", show_default=True, type=click.Path(path_type=Path))
@click.option("--metrics", default="metrics/export.json", show_default=True, type=click.Path(path_type=Path))
@reports_errors
def main(params_file: Path, model_path: Path, data: Path, eval_metrics: Path, onnx_out: Path, program_out: Path,
         card_out: Path, metrics: Path) -> None:
    setup_logging("export")
    tta_shifts = load_params(TEST_TIME_PARAMS, params_file)["tta_shifts"]
    model, meta = load_model(model_path, tta_shifts)
    pixels = to_pixels(load_split(data / "test.pt").images)
    prepared, evaluation = PreparedData.load(data), read_evaluation(eval_metrics)
    with atomic_path(onnx_out) as onnx_tmp, atomic_path(program_out) as program_tmp:
        export_onnx(export_program(model, program_tmp), onnx_tmp, onnx_metadata(meta))
        report, onnx_rate = verify(model, onnx_tmp, program_tmp, pixels)
        sizes = {"onnx_bytes": onnx_tmp.stat().st_size, "pt2_bytes": program_tmp.stat().st_size}
    write_json(metrics, {**report, **sizes})
    write_text(card_out, model_card(meta, tta_shifts, prepared.stats, evaluation, report, sizes))
    log.info("ONNX and torch.export agree with PyTorch on %d images (max logit diff %.1e); onnxruntime %d images/s; "
             "%s, %s", report["images"],
             max(report["onnx"]["max_abs_logit_diff"], report["torch_export"]["max_abs_logit_diff"]), onnx_rate,
             onnx_out, program_out)


if __name__ == "__main__":
    run(main)
