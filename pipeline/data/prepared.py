"""The prepared dataset: compact split files on disk and their stats, loaded as one `PreparedData`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.common.errors import PipelineError
from pipeline.data.prepared_arrays import SUFFIX, check_arrays, load_arrays, read_stats, save_arrays


@dataclass(frozen=True)
class Split:
    """uint8 images N x 28 x 28 and int64 labels N."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def check_split(images: torch.Tensor, labels: torch.Tensor, name: str, num_classes: int = 10) -> Split:
    """Validate dtypes, shapes, matching counts and label range (`prepared_arrays.check_arrays`)."""
    for value, what in ((images, "images"), (labels, "labels")):
        if not isinstance(value, torch.Tensor):
            raise PipelineError(f"{name}: {what} must be a tensor, got {type(value).__name__}")
    check_arrays(images.numpy(), labels.numpy(), name, num_classes)
    return Split(images, labels)


def save_split(path: Path, split: Split) -> None:
    """Save a split as a split file (`prepared_arrays.save_arrays`), atomically."""
    save_arrays(path, split.images.numpy(), split.labels.numpy())


def load_split(path: Path | str) -> Split:
    """Load and check a split saved by `save_split` (numpy arrays, never unpickled), as tensors."""
    images, labels = load_arrays(path)
    return Split(torch.from_numpy(images), torch.from_numpy(labels))


@dataclass(frozen=True)
class Normalization:
    """The training pixels' mean and standard deviation, in [0, 1] units: what a network's input is scaled by."""

    mean: float
    std: float


@dataclass(frozen=True)
class PreparedData:
    """The preprocess stage's output as one value: the folder of its splits, their normalization, the class
    names, and the rest of its stats.json (dataset, sizes, class counts, source checksums)."""

    folder: Path
    normalization: Normalization
    classes: list[str]
    stats: dict[str, Any]

    @classmethod
    def load(cls, folder: Path | str) -> PreparedData:
        """The prepared data in `folder`, from its stats.json (the splits are loaded when asked for)."""
        stats = read_stats(folder)
        return cls(Path(folder), Normalization(stats["mean"], stats["std"]), list(stats["classes"]), stats)

    def split(self, name: str) -> Split:
        """One split ("train", "val" or "test"), loaded and checked."""
        return load_split(self.folder / f"{name}{SUFFIX}")
