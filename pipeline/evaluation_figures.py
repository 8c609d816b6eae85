"""The evaluate stage's figures: confusion heatmap and the most confident mistakes."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from pipeline.figure_file import save_figure


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path) -> None:
    """Confusion-matrix heatmap, counts written in the cells."""
    fig, ax = plt.subplots(figsize=(7, 6))
    shown = np.log1p(matrix)
    ax.imshow(shown, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                    color="white" if shown[i, j] > shown.max() * 0.6 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"confusion matrix ({int(matrix.sum() - np.trace(matrix))} errors of {int(matrix.sum())})")
    save_figure(fig, path)


def plot_misclassified(images: np.ndarray, actual: list[str], predicted: list[str],
                       confidence: list[float], path: Path, columns: int = 8) -> None:
    """A grid of misclassified images, each titled 'true -> predicted (p)'."""
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.3, rows * 1.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, true, pred, p in zip(axes.flat, images, actual, predicted, confidence, strict=False):
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(f"{true}→{pred} ({p:.2f})", fontsize=8, color="firebrick")
    fig.suptitle("most confident mistakes: true→predicted (probability)", fontsize=10)
    save_figure(fig, path)
