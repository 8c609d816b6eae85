"""PNG figures a person looks at: learning curves, confusion heatmap, worst misclassified digits."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from pipeline.atomic import atomic_path


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_learning_curves(history: list[dict[str, float]], path: Path) -> None:
    """Train/val loss and accuracy per epoch, and the learning rate."""
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for split in ("train", "val"):
        axes[0].plot(epochs, [r[f"{split}_loss"] for r in history], marker="o", label=split)
        axes[1].plot(epochs, [100 * r[f"{split}_acc"] for r in history], marker="o", label=split)
    axes[2].plot(epochs, [r["lr"] for r in history], marker="o", color="gray")
    titles = ("loss (with label smoothing)", "accuracy %", "learning rate at epoch end")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    _save(fig, path)


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
    _save(fig, path)


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
    _save(fig, path)
