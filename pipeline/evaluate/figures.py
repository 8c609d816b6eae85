"""The evaluate stage's figures: confusion heatmap and the most confident mistakes."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from pipeline.common.figure_file import save_figure


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
    """A grid of misclassified images, each titled 'true -> predicted (p)'.

    One mosaic in one axes: a subplot per image would cost over a second of layout.
    """
    rows = max(1, -(-len(images) // columns))
    side, gap, title = images.shape[-1] if len(images) else 28, 4, 12  # pixels of a tile, between, above
    mosaic = np.zeros((rows * (side + gap + title), columns * (side + gap)))
    fig, ax = plt.subplots(figsize=(columns * 1.3, rows * 1.5))
    for index, (image, true, pred, p) in enumerate(zip(images, actual, predicted, confidence, strict=False)):
        top, left = (index // columns) * (side + gap + title) + title, (index % columns) * (side + gap)
        mosaic[top:top + side, left:left + side] = image
        ax.text(left + side / 2, top - 2, f"{true}→{pred} ({p:.2f})", ha="center", va="bottom", fontsize=8,
                color="firebrick")
    ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
    ax.axis("off")
    ax.set_title("most confident mistakes: true→predicted (probability)", fontsize=10)
    save_figure(fig, path)
