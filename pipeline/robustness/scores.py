"""Scoring a model on the robustness suite: accuracy per corruption, per family and on average, for the model
fed directly and through predict's preparation. numpy and onnxruntime only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.export.onnx_session import softmax, surest
from pipeline.robustness.suite_file import Suite

Logits = Callable[[np.ndarray], np.ndarray]  # float32 N x 1 x 28 x 28 in [0, 1] -> N x 10


def accuracies(logits_of: Logits, images: np.ndarray, labels: np.ndarray) -> list[float]:
    """Accuracy on each corruption's images (C x N x 28 x 28, uint8 or [0, 1] floats), in one batched run."""
    pixels = images.astype(np.float32)
    if images.dtype == np.uint8:
        pixels /= 255
    count, size = images.shape[:2]
    predicted = logits_of(pixels.reshape(count * size, 1, 28, 28)).argmax(1).reshape(count, size)
    return [float(v) for v in (predicted == labels[None]).mean(1)]


def predict_accuracies(logits_of: Logits, suite: Suite) -> list[float]:
    """Accuracy on each corruption's images as predict reads them: of each image's readings, the one predict
    takes (`surest`); an image with none, where predict found no digit, is wrong."""
    count, size, most = suite.prepared.shape[:3]
    present = np.arange(most)[None, None] < suite.readings[..., None]  # C x N x K
    probabilities = np.zeros((count, size, most, 10), dtype=np.float32)
    probabilities[present] = softmax(logits_of(suite.prepared[present][:, None]))
    right = np.zeros((count, size), dtype=bool)
    for c, n in zip(*np.nonzero(suite.readings), strict=True):
        row = probabilities[c, n, :suite.readings[c, n]]
        right[c, n] = row[surest(row)].argmax() == suite.labels[n]
    return [float(v) for v in right.mean(1)]


def summary(index: dict[str, Any], per_corruption: list[float]) -> dict[str, Any]:
    """One path's scores: the mean over all corruptions, over those training never sees, per family, and each."""
    entries = index["corruptions"]
    held_out = [a for a, e in zip(per_corruption, entries, strict=True) if not e["trained"]]
    families: dict[str, list[float]] = {}
    for accuracy, entry in zip(per_corruption, entries, strict=True):
        families.setdefault(entry["family"], []).append(accuracy)
    return {"mean": round(float(np.mean(per_corruption)), 4),
            "held_out_mean": round(float(np.mean(held_out)), 4) if held_out else None,
            "family": {name: round(float(np.mean(values)), 4) for name, values in families.items()},
            "corruption": {e["name"]: round(a, 4) for e, a in zip(entries, per_corruption, strict=True)}}


def path_summaries(logits_of: Logits, suite: Suite) -> dict[str, dict[str, Any]]:
    """`summary` of both paths: "direct" (the corrupted images as they are) and "predict" (predict's readings)."""
    return {"direct": summary(suite.index, accuracies(logits_of, suite.images, suite.labels)),
            "predict": summary(suite.index, predict_accuracies(logits_of, suite))}
