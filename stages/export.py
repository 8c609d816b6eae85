"""export stage: ONNX and torch.export files that carry their own normalization, verified on the test set."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from pipeline.atomic import atomic_path, write_json, write_text
from pipeline.cli import reports_errors, setup_logging
from pipeline.errors import PipelineError
from pipeline.evaluation import to_pixels
from pipeline.export import MAX_LOGIT_DIFF, export_onnx, export_program, onnx_metadata, verify
from pipeline.model_file import load_model
from pipeline.prepared import load_split, load_stats

log = logging.getLogger("export")
CREDITS = {
    "mnist": "MNIST: Yann LeCun, Corinna Cortes, Christopher J.C. Burges, CC BY-SA 3.0.",
    "fashion-mnist": "Fashion-MNIST: Han Xiao, Kashif Rasul, Roland Vollgraf (Zalando Research), MIT licence.",
}


def model_card(meta: dict[str, Any], stats: dict[str, Any], evaluation: dict[str, Any],
               report: dict[str, Any], sizes: dict[str, int]) -> str:
    """A short Markdown model card: data, params, metrics, intended use and limits."""
    params = "\n".join(f"| `{k}` | `{v}` |" for k, v in meta["params"].items())
    checksums = "\n".join(f"| `{name}` | `{md5}` |" for name, md5 in stats.get("source_md5", {}).items())
    classes = ", ".join(meta["classes"])
    return f"""# Model card: {stats.get('dataset', 'mnist')} {meta['model']} classifier

## Files
- `model.onnx` ({sizes['onnx_bytes']:,} bytes): one self-contained ONNX file, dynamic batch dimension.
- `model.pt2` ({sizes['pt2_bytes']:,} bytes): a `torch.export` program (`torch.export.load(path).module()`).

Input `pixels`: float32, N x 1 x 28 x 28, values in [0, 1] (what `torchvision.transforms.ToTensor()` gives),
light digit on a dark background as in MNIST. Normalization (mean {meta['normalization']['mean']},
std {meta['normalization']['std']}) is inside the graph. Output `logits`: float32 N x 10, classes in order:
{classes}. The class names are also in the ONNX metadata property `classes`.

## Data
{stats.get('dataset', 'mnist')}: {stats['sizes']['train']} training, {stats['sizes']['val']} validation
(stratified from the official training set), {stats['sizes']['test']} test images.
MD5 of the decompressed IDX files it was trained and tested on:

| file | md5 |
|---|---|
{checksums}

{CREDITS.get(stats.get('dataset', 'mnist'), 'Custom dataset: see its own licence.')}

## Training params
| param | value |
|---|---|
{params}

## Metrics (test set, {stats['sizes']['test']} images)
- accuracy {evaluation['accuracy']:.4f} ({evaluation['errors']} errors), macro F1 {evaluation['f1_macro']:.4f},
  cross-entropy {evaluation['loss']:.4f}
- exports agree with PyTorch on all {report['images']} test images; largest logit difference
  {max(report['onnx']['max_abs_logit_diff'], report['torch_export']['max_abs_logit_diff']):.1e}
  (limit {MAX_LOGIT_DIFF:g}); onnxruntime {report['onnxruntime_images_per_second']:,} images/s on the CPU

## Intended use and limits
For learning, benchmarking and demonstrating a reproducible pipeline on handwritten digits (or
Fashion-MNIST items). Inputs must look like the training data: one centred item per image, 28x28,
scaled to fit a 20x20 box (`python -m stages.predict` prepares arbitrary images that way). It has not
been evaluated on other handwriting populations, scanned forms or adversarial inputs, and always answers
one of the ten classes: it cannot say "not a digit". Do not use it for decisions about people.
"""


def read_evaluation(path: Path) -> dict[str, Any]:
    """The evaluate stage's metrics, for the model card."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found (run the evaluate stage)") from None
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{path}: not valid JSON ({exc})") from None


@click.command(help="""Export MODEL to ONNX and torch.export (.pt2) and verify both on the test set.

Both take float32 pixels in [0, 1] shaped N x 1 x 28 x 28 and return N x 10 logits. Export fails
unless onnxruntime and the exported program agree with PyTorch on every test image with logits
within 1e-4. Writes METRICS and a model card beside the model. Reads no params.""")
@click.option("--model", "model_path", default="models/model.pt", show_default=True,
              type=click.Path(path_type=Path))
@click.option("--data", default="data/prepared", show_default=True, type=click.Path(path_type=Path))
@click.option("--eval-metrics", default="metrics/eval.json", show_default=True, type=click.Path(path_type=Path))
@click.option("--onnx-out", default="models/model.onnx", show_default=True, type=click.Path(path_type=Path))
@click.option("--program-out", default="models/model.pt2", show_default=True, type=click.Path(path_type=Path))
@click.option("--card-out", default="models/model_card.md", show_default=True, type=click.Path(path_type=Path))
@click.option("--metrics", default="metrics/export.json", show_default=True, type=click.Path(path_type=Path))
@reports_errors
def main(model_path: Path, data: Path, eval_metrics: Path, onnx_out: Path, program_out: Path, card_out: Path,
         metrics: Path) -> None:
    setup_logging("export")
    model, meta = load_model(model_path)
    pixels = to_pixels(load_split(data / "test.pt").images)
    stats, evaluation = load_stats(data), read_evaluation(eval_metrics)
    with atomic_path(onnx_out) as onnx_tmp, atomic_path(program_out) as program_tmp:
        export_onnx(model, onnx_tmp, onnx_metadata(meta))
        export_program(model, program_tmp)
        report = verify(model, onnx_tmp, program_tmp, pixels)
        sizes = {"onnx_bytes": onnx_tmp.stat().st_size, "pt2_bytes": program_tmp.stat().st_size}
    write_json(metrics, {**report, **sizes})
    write_text(card_out, model_card(meta, stats, evaluation, report, sizes))
    log.info("ONNX and torch.export agree with PyTorch on %d images (max logit diff %.1e); %s, %s",
             report["images"], max(report["onnx"]["max_abs_logit_diff"], report["torch_export"]["max_abs_logit_diff"]),
             onnx_out, program_out)


if __name__ == "__main__":
    main()
