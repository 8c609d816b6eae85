"""The prepared folder read with numpy alone (a stage that needs no PyTorch, evaluate, reads the test split
without importing it): split files and stats.json.

A split file is an uncompressed `.npz` with `images` (uint8 N x 28 x 28) and `labels` (int64 N); it is never
unpickled.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common.atomic import write_npz
from pipeline.common.errors import PipelineError
from pipeline.common.json_file import read_json

IMAGE_SHAPE = (28, 28)
SUFFIX = ".npz"


def check_arrays(images: np.ndarray, labels: np.ndarray, name: str, num_classes: int = 10) -> None:
    """Refuse, in one line naming `name`, arrays that are not uint8 N x 28 x 28 images with N int64 labels in
    0..num_classes-1."""
    if images.dtype != np.uint8 or images.ndim != 3 or tuple(images.shape[1:]) != IMAGE_SHAPE:
        raise PipelineError(f"{name}: images must be uint8 N x 28 x 28, got {images.dtype} {tuple(images.shape)}")
    if labels.dtype != np.int64 or labels.ndim != 1:
        raise PipelineError(f"{name}: labels must be int64 N, got {labels.dtype} {tuple(labels.shape)}")
    if len(images) != len(labels):
        raise PipelineError(f"{name}: {len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise PipelineError(f"{name}: no samples")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise PipelineError(f"{name}: labels must be in 0-{num_classes - 1}, found {labels.min()}-{labels.max()}")


def save_arrays(path: Path | str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write a split file atomically; equal arrays give equal bytes."""
    write_npz(path, {"images": images, "labels": labels})


def load_arrays(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """The checked images and labels of the split file at `path`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if {"images", "labels"} - set(data.files):
                raise PipelineError(f"{path}: not a prepared split (expected arrays 'images' and 'labels')")
            images, labels = data["images"], data["labels"]
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found (`dvc repro` makes it: the preprocess stage a split, the draw stage "
                            "the non-digits)") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise PipelineError(f"{path}: not a prepared split ({type(exc).__name__})") from None
    check_arrays(images, labels, str(path))
    return images, labels


def read_stats(folder: Path | str) -> dict[str, Any]:
    """The preprocess stage's stats.json in `folder` (dataset, classes, sizes, mean/std, source checksums)."""
    path = Path(folder) / "stats.json"
    stats = read_json(path, "the preprocess stage")
    for key in ("mean", "std", "classes"):
        if key not in stats:
            raise PipelineError(f"{path}: missing '{key}'")
    return stats
