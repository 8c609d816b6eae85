"""Labelling image files with the exported ONNX model: prepare each image, run the batch, softmax."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common.errors import PipelineError
from pipeline.export.onnx_session import not_digit_below, run_logits, softmax, surest
from pipeline.inference.digit_image import prepare_image

# this project's exported model, wherever predict or serve is run from
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "model.onnx"


def surest_reading(session: Any, readings: np.ndarray) -> np.ndarray:
    """The class probabilities of the reading (of K x 28 x 28, see `digit_image.readings`) that predict takes
    (`surest`: the one the model is surest of)."""
    probabilities = softmax(run_logits(session, readings[:, None].astype(np.float32, copy=False)))
    return probabilities[surest(probabilities)]


def answer(classes: list[str], probabilities: np.ndarray, not_digit_below: float = 0.0) -> dict[str, Any]:
    """What predict (for each file, beside its name) and serve (for each request) answer: the label, its
    probability, every class's, and why the label is null when the likeliest digit's probability is below
    `not_digit_below` (the model's `onnx_session.not_digit_below`): then the image is not a digit."""
    best = int(probabilities.argmax())
    probability = round(float(probabilities[best]), 6)
    refused = probability < not_digit_below
    return {"label": None if refused else classes[best], "probability": probability,
            "probabilities": {name: round(float(p), 6) for name, p in zip(classes, probabilities, strict=True)},
            "reason": f"not a digit: the likeliest, {classes[best]}, has probability {probability:.2f}, below "
                      f"{not_digit_below:g}" if refused else None}


def predict_file(session: Any, classes: list[str], path: Path, not_digit_below: float = 0.0) -> dict[str, Any]:
    """The file's name and its `answer`, or the error that stopped it."""
    try:
        pixels = prepare_image(path)
    except PipelineError as exc:
        return {"file": str(path), "error": str(exc)}
    except Exception as exc:  # anything else a strange file provokes is still that file's error alone
        return {"file": str(path), "error": f"{path}: cannot be prepared ({type(exc).__name__}: {exc})"}
    return {"file": str(path), **answer(classes, surest_reading(session, pixels), not_digit_below)}


def predict_files(session: Any, classes: list[str], files: list[Path]) -> Iterator[dict[str, Any]]:
    """One result per file, each as soon as it is known; a failure is that file's alone."""
    below = not_digit_below(session)
    for path in files:
        yield predict_file(session, classes, path, below)
