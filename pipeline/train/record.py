"""The train stage's per-epoch record: one TSV per DVC plot, and curves.png for people."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from pipeline.common.figure_file import save_figure

SERIES = ("train_loss", "val_loss", "train_acc", "val_acc", "lr")


def write_record(folder: Path, history: list[dict[str, float]]) -> None:
    """`<series>.tsv` (columns epoch and the series) for each of SERIES, and curves.png, into `folder`."""
    table = pd.DataFrame(history)
    for series in SERIES:
        table[["epoch", series]].to_csv(folder / f"{series}.tsv", sep="\t", index=False)
    plot_learning_curves(history, folder / "curves.png")


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
    save_figure(fig, path)
