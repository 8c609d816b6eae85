"""Labelling image files with the exported ONNX model: prepare each image, run the batch, softmax."""

from __future__ import annotations

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


def predict_files(session: Any, classes: list[str], files: list[Path]) -> list[dict[str, Any]]:
    """One result per file: label and probability, or the error that stopped it (never the others)."""
    results, ready, batch = [], [], []
    for path in files:
        try:
            batch.append(prepare_image(path))
            ready.append(len(results))
            results.append({"file": str(path)})
        except PipelineError as exc:
            results.append({"file": str(path), "error": str(exc)})
        except Exception as exc:  # anything else a strange file provokes is still that file's error alone
            results.append({"file": str(path), "error": f"{path}: cannot be prepared ({type(exc).__name__}: {exc})"})
    if batch:
        probs = softmax(run_logits(session, np.stack(batch).astype(np.float32)))
        for index, row in zip(ready, probs, strict=True):
            best = int(row.argmax())
            results[index].update(label=classes[best], probability=round(float(row[best]), 6))
    return results
