"""The model card written beside the exports: data, params, metrics, intended use and limits.

Everything in it is a pure function of the data, params and model (no timings), so DVC's hash of it
changes only when one of those does.
"""

from __future__ import annotations

import json
from typing import Any

# the ONNX metadata the card reads
CARD_KEYS = {"model", "classes", "normalization", "params", "tta_shifts", "not_digit_below"}


def model_card(metadata: dict[str, str], stats: dict[str, Any], evaluation: dict[str, Any],
               export: dict[str, Any]) -> str:
    """A short Markdown model card from the ONNX file's `metadata`, the data's `stats`, the `evaluation` and the
    export stage's report (`export`: agreement and file sizes)."""
    params = "\n".join(f"| `{k}` | `{v}` |" for k, v in json.loads(metadata["params"]).items())
    checksums = "\n".join(f"| `{name}` | `{md5}` |" for name, md5 in stats["source_md5"].items())
    classes = ", ".join(json.loads(metadata["classes"]))
    normalization = json.loads(metadata["normalization"])
    largest = max(export["onnx"]["max_abs_logit_diff_e6"], export["torch_export"]["max_abs_logit_diff_e6"]) / 1e6
    return f"""# Model card: {stats['dataset']} {metadata['model']} classifier

## Files
- `model.onnx` ({export['onnx_bytes']:,} bytes): one self-contained ONNX file, dynamic batch dimension.
- `model.pt2` ({export['pt2_bytes']:,} bytes): a `torch.export` program (`torch.export.load(path).module()`).

Input `pixels`: float32, N x 1 x 28 x 28, values in [0, 1] (what `torchvision.transforms.ToTensor()` gives),
light digit on a dark background as in MNIST. Normalization (mean {normalization['mean']},
std {normalization['std']}) is inside the graph. Output `logits`: float32 N x 10, classes in order:
{classes}. The class names are also in the ONNX metadata property `classes`.

## Data
{stats['dataset']}: {stats['sizes']['train']} training, {stats['sizes']['val']} validation
(stratified from the official training set), {stats['sizes']['test']} test images.
MD5 of the decompressed IDX files it was trained and tested on:

| file | md5 |
|---|---|
{checksums}

{stats['credit']}

## Training params
| param | value |
|---|---|
{params}

Test-time shifts: {metadata['tta_shifts']} (the exported graph averages the logits of the image and as many one-pixel
shifts of it; `tta_shifts`, a param of the export stage). Not a digit: an image whose likeliest digit has a
probability below {metadata['not_digit_below']} (`not_digit_below`, stored in the ONNX metadata; training saw drawn
letters, symbols and scribbles, answered with no digit in particular).

## Metrics (test set, {stats['sizes']['test']} images, the ONNX file run with onnxruntime)
- accuracy {evaluation['accuracy']:.4f} ({evaluation['errors']} errors), macro F1 {evaluation['f1_macro']:.4f},
  cross-entropy {evaluation['loss']:.4f}, expected calibration error {evaluation['calibration_error']:.4f}
- test digits below the not-a-digit probability: {evaluation['not_digit']:.2%}
- both exports agree with PyTorch on the first {export['images']:,} test images: largest logit difference
  {largest:.1e} (limit {export['limit_e6'] / 1e6:g})

## Intended use and limits
For learning, benchmarking and demonstrating a reproducible pipeline on handwritten digits (or
Fashion-MNIST items). Inputs must look like the training data: one centred item per image, 28x28,
scaled to fit a 20x20 box (`python -m stages.predict` prepares arbitrary images that way). It has not
been evaluated on other handwriting populations, scanned forms or adversarial inputs. It says "not a digit"
for most letters, shapes and scribbles (`bench/not_digits.py`), not for all: a letter that people write as a
digit (O, I, l, g, q) reads as that digit. Do not use it for decisions about people.
"""
