"""Test-set evaluation in numpy: accuracy and cross-entropy, per-class report, confusion matrix, worst mistakes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pipeline.common.atomic import atomic_path


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts with actual classes as rows and predictions as columns."""
    return np.bincount(actual * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_report(matrix: np.ndarray, classes: list[str]) -> dict[str, np.ndarray]:
    """Precision, recall, F1, support and errors (its images read as another class) of each class, as columns."""
    true_pos = np.diag(matrix).astype(float)
    predicted, support = matrix.sum(0), matrix.sum(1)
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, support, out=np.zeros_like(true_pos), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(true_pos), where=denom > 0)
    return {"class": np.array(classes), "precision": precision.round(6), "recall": recall.round(6),
            "f1": f1.round(6), "support": support, "errors": support - np.diag(matrix)}


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def summarize(logits: np.ndarray, labels: np.ndarray, report: dict[str, np.ndarray]) -> dict[str, float | int]:
    """The headline test metrics (cross-entropy in float64, without label smoothing)."""
    predicted = logits.argmax(1)
    loss = -log_softmax(logits)[np.arange(len(labels)), labels].mean()
    return {
        "accuracy": round(float((predicted == labels).mean()), 6),
        "loss": round(float(loss), 6),
        "precision_macro": round(float(report["precision"].mean()), 6),
        "recall_macro": round(float(report["recall"].mean()), 6),
        "f1_macro": round(float(report["f1"].mean()), 6),
        "errors": int((predicted != labels).sum()),
    }


def worst_mistakes(logits: np.ndarray, labels: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the `count` most confident wrong predictions, and their probabilities."""
    probs = np.exp(log_softmax(logits))
    predicted, confidence = probs.argmax(1), probs.max(1)
    wrong = np.flatnonzero(predicted != labels)
    order = np.argsort(-confidence[wrong], kind="stable")[:count]
    return wrong[order], confidence[wrong[order]]


def write_csv(path: Path, columns: dict[str, list | np.ndarray]) -> None:
    """Columns of equal length as a CSV file with a header row, atomically."""
    names = list(columns)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(zip(*(np.asarray(columns[name]).tolist() for name in names), strict=True))
