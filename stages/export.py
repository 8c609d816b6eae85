"""export stage: ONNX and torch.export files that carry their own normalization, verified against PyTorch."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from pipeline.common.atomic import atomic_path, write_json
from pipeline.common.cli import reports_errors, run, setup_logging
from pipeline.common.params import describe, load_params
from pipeline.data.prepared import load_split
from pipeline.export.formats import MAX_LOGIT_DIFF, export_onnx, export_program, onnx_metadata, verify
from pipeline.model.batches import to_pixels
from pipeline.model.test_time import TEST_TIME_PARAMS, load_model

log = logging.getLogger("export")
VERIFIED = 2000  # test images run through all three: the evaluate stage runs the ONNX file on every one


@click.command(help=f"""Export MODEL to ONNX and torch.export (.pt2) and verify both against PyTorch.

Both take float32 pixels in [0, 1] shaped N x 1 x 28 x 28 and return N x 10 logits. Export fails
unless onnxruntime and the exported program agree with PyTorch on the first {VERIFIED:,} test images
of DATA with logits within {MAX_LOGIT_DIFF:g}. Writes METRICS (the agreement and the file sizes); the
ONNX file's metadata holds the classes, normalization, training params, test-time shifts and
the probability below which predict and serve say "not a digit".

\b
Params read from params.yaml:
{describe(TEST_TIME_PARAMS)}""")
@click.option("--params", "params_file", default="params.yaml", show_default=True, type=click.Path(path_type=Path))
@click.option("--model", "model_path", default="models/model.pt", show_default=True,
              type=click.Path(path_type=Path))
@click.option("--data", default="data/prepared", show_default=True, type=click.Path(path_type=Path))
@click.option("--onnx-out", default="models/model.onnx", show_default=True, type=click.Path(path_type=Path))
@click.option("--program-out", default="models/model.pt2", show_default=True, type=click.Path(path_type=Path))
@click.option("--metrics", default="metrics/export.json", show_default=True, type=click.Path(path_type=Path))
@reports_errors
def main(params_file: Path, model_path: Path, data: Path, onnx_out: Path, program_out: Path, metrics: Path) -> None:
    setup_logging("export")
    test_time = load_params(TEST_TIME_PARAMS, params_file)
    model, meta = load_model(model_path, test_time["tta_shifts"])
    pixels = to_pixels(load_split(data / "test.npz").images[:VERIFIED])
    with atomic_path(onnx_out) as onnx_tmp, atomic_path(program_out) as program_tmp:
        export_onnx(export_program(model, program_tmp), onnx_tmp, onnx_metadata(meta, test_time))
        report, onnx_rate = verify(model, onnx_tmp, program_tmp, pixels)
        sizes = {"onnx_bytes": onnx_tmp.stat().st_size, "pt2_bytes": program_tmp.stat().st_size}
    write_json(metrics, {**report, **sizes})
    largest = max(report["onnx"]["max_abs_logit_diff_e6"], report["torch_export"]["max_abs_logit_diff_e6"]) / 1e6
    log.info("ONNX and torch.export agree with PyTorch on %d images (max logit diff %.1e); onnxruntime %d images/s; "
             "%s, %s", report["images"], largest, onnx_rate, onnx_out, program_out)


if __name__ == "__main__":
    run(main)
