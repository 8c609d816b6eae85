"""Labelling image files with the exported ONNX model: prepare each image, run the batch, softmax."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common.errors import PipelineError
from pipeline.export.onnx_session import run_logits
from pipeline.inference.digit_image import prepare_image

# this project's exported model, wherever predict or serve is run from
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "model.onnx"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def predict_file(session: Any, classes: list[str], path: Path) -> dict[str, Any]:
    """The label and probability for one file, or the error that stopped it."""
    try:
        pixels = prepare_image(path)
    except PipelineError as exc:
        return {"file": str(path), "error": str(exc)}
    except Exception as exc:  # anything else a strange file provokes is still that file's error alone
        return {"file": str(path), "error": f"{path}: cannot be prepared ({type(exc).__name__}: {exc})"}
    row = softmax(run_logits(session, pixels[None].astype(np.float32)))[0]
    best = int(row.argmax())
    return {"file": str(path), "label": classes[best], "probability": round(float(row[best]), 6)}


def predict_files(session: Any, classes: list[str], files: list[Path]) -> Iterator[dict[str, Any]]:
    """One result per file, each as soon as it is known; a failure is that file's alone."""
    for path in files:
        yield predict_file(session, classes, path)
