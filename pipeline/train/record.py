"""The train stage's per-epoch record: one TSV per chart, rewritten after every epoch, and curves.png.

The TSVs and `metrics/train.json` are rewritten atomically after each epoch, so that `dvc exp show`, `dvc
plots show` and the VS Code DVC extension see a running experiment's progress; the final files are the
same bytes an unwatched run writes. A run that is interrupted leaves its partial record behind; `dvc repro`
deletes it before the next run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib.pyplot as plt

from pipeline.common.atomic import write_json, write_text
from pipeline.common.figure_file import save_figure

# one TSV per chart: its columns after `epoch`, each from a key of the epoch's record; dvc.yaml draws loss and
# accuracy with docs/plots/train_val.json, which puts the train and val columns into one chart and shades the
# epochs whose `trained_on` is the selected subset (selective backprop: their training loss is the hard images')
CHARTS = {"loss": {"train": "train_loss", "val": "val_loss"}, "acc": {"train": "train_acc", "val": "val_acc"},
          "lr": {"lr": "lr"}}
SUBSET_CHARTS = ("loss", "acc")


def trained_on(record: dict[str, float]) -> str:
    """What the epoch's training numbers were measured on: all images, or a selective epoch's subset."""
    return "selected subset" if record.get("selective") else "all images"
# where DVC's VS Code extension looks for DVCLive's "an epoch is done" signal (DVC sets DVC_ROOT for stages,
# and for queued runs points it at the repository the queue belongs to)
STEP_SIGNAL = Path(".dvc", "tmp", "exps", "run", "DVCLIVE_STEP_COMPLETED")


def summary(history: list[dict[str, float]], best_epoch: int, parameters: int,
            platform: dict[str, str | int]) -> dict[str, object]:
    """`metrics/train.json`: the kept epoch's validation numbers, the epoch reached, the size and platform."""
    best = history[best_epoch - 1]
    return {"val_loss": best["val_loss"], "val_acc": best["val_acc"], "best_epoch": best_epoch,
            "epochs_run": len(history), "parameters": parameters, "platform": platform}


def write_progress(metrics: Path, folder: Path, history: list[dict[str, float]], best_epoch: int,
                   parameters: int, platform: dict[str, str | int]) -> None:
    """The record so far: each chart's TSV in `folder`, then `metrics`; each file replaced atomically."""
    for chart, columns in CHARTS.items():
        subset = chart in SUBSET_CHARTS
        rows = ["\t".join(("epoch", *columns, *(["trained_on"] if subset else [])))]
        rows += ["\t".join([str(r["epoch"]), *(repr(float(r[key])) for key in columns.values()),
                            *([trained_on(r)] if subset else [])]) for r in history]
        write_text(folder / f"{chart}.tsv", "\n".join(rows) + "\n")
    write_json(metrics, summary(history, best_epoch, parameters, platform))
    signal_epoch_done(len(history))


def _step_signal() -> Path | None:
    """Where the signal goes: under the repository DVC runs this stage for; None outside `dvc repro`/`exp run`."""
    root = os.environ.get("DVC_ROOT")
    return Path(root) / STEP_SIGNAL if root else None


def signal_epoch_done(epoch: int) -> None:
    """Tell DVC's VS Code extension that an epoch ended, as DVCLive does."""
    signal = _step_signal()
    if signal is not None:
        signal.parent.mkdir(parents=True, exist_ok=True)
        write_text(signal, json.dumps({"pid": os.getpid(), "step": epoch}, sort_keys=True))


def clear_epoch_signal() -> None:
    """Remove this run's signal at the end, as DVCLive does."""
    signal = _step_signal()
    if signal is not None:
        signal.unlink(missing_ok=True)


def plot_learning_curves(history: list[dict[str, float]], path: Path) -> None:
    """Train/val loss and accuracy per epoch, and the learning rate, for people (DVC draws the TSVs)."""
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for split in ("train", "val"):
        axes[0].plot(epochs, [r[f"{split}_loss"] for r in history], marker="o", label=split)
        axes[1].plot(epochs, [100 * r[f"{split}_acc"] for r in history], marker="o", label=split)
    axes[2].plot(epochs, [r["lr"] for r in history], marker="o", color="gray")
    titles = ("loss (with label smoothing)", "accuracy %", "learning rate at epoch end")
    selected = [r["epoch"] for r in history if r.get("selective")]
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if selected:  # training numbers there are the selected (hardest) images', not all images'
            ax.axvspan(min(selected) - 0.5, max(selected) + 0.5, color="tab:orange", alpha=0.08,
                       label="trained on a selected subset")
    axes[0].legend()
    axes[1].legend()
    save_figure(fig, path)
