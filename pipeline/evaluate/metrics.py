"""Test-set evaluation in numpy: accuracy, cross-entropy and calibration, per-class report, confusion matrix, worst
mistakes."""

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


CALIBRATION_BINS = 15  # of the top probability, equal widths (Guo et al., 2017)


def calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error: over bins of the top probability, the gap between its mean and the accuracy,
    weighted by the bin's share of the images."""
    confidence, right = probabilities.max(1), probabilities.argmax(1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, confidence, bins) - np.bincount(which, right.astype(float), bins))
    return float(gap.sum() / max(count.sum(), 1))


def summarize(logits: np.ndarray, labels: np.ndarray, report: dict[str, np.ndarray],
              not_digit_below: float = 0.0) -> dict[str, float | int]:
    """The headline test metrics (cross-entropy in float64, without label smoothing), the calibration error, and
    the share of test digits that predict would call no digit at `not_digit_below`."""
    predicted = logits.argmax(1)
    log_probabilities = log_softmax(logits)
    loss = -log_probabilities[np.arange(len(labels)), labels].mean()
    probabilities = np.exp(log_probabilities)
    return {
        "accuracy": round(float((predicted == labels).mean()), 6),
        "loss": round(float(loss), 6),
        "precision_macro": round(float(report["precision"].mean()), 6),
        "recall_macro": round(float(report["recall"].mean()), 6),
        "f1_macro": round(float(report["f1"].mean()), 6),
        "errors": int((predicted != labels).sum()),
        "calibration_error": round(calibration_error(probabilities, labels), 6),
        "not_digit": round(float((probabilities.max(1) < not_digit_below).mean()), 6),
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
