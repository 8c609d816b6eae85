"""The prepared dataset: compact tensor splits on disk and their stats, loaded as one `PreparedData`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.common.atomic import save_torch
from pipeline.common.errors import PipelineError

IMAGE_SHAPE = (28, 28)


@dataclass(frozen=True)
class Split:
    """uint8 images N x 28 x 28 and int64 labels N."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def check_split(images: torch.Tensor, labels: torch.Tensor, name: str, num_classes: int = 10) -> Split:
    """Validate dtypes, shapes, matching counts and label range."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 3 \
            or tuple(images.shape[1:]) != IMAGE_SHAPE:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise PipelineError(f"{name}: images must be uint8 N x 28 x 28, got {got}")
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.ndim != 1:
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise PipelineError(f"{name}: labels must be int64 N, got {got}")
    if len(images) != len(labels):
        raise PipelineError(f"{name}: {len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise PipelineError(f"{name}: no samples")
    if labels.min() < 0 or labels.max() >= num_classes:
        found = f"{int(labels.min())}-{int(labels.max())}"
        raise PipelineError(f"{name}: labels must be in 0-{num_classes - 1}, found {found}")
    return Split(images, labels)


def save_split(path: Path, split: Split) -> None:
    """Save a split as {'images', 'labels'} with torch.save, atomically."""
    save_torch(path, {"images": split.images.contiguous(), "labels": split.labels.contiguous()})


def load_split(path: Path | str) -> Split:
    """Load and validate a split saved by `save_split` (weights_only: no code is ever unpickled)."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found (run the preprocess stage)") from None
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise PipelineError(f"{path}: not a prepared split ({type(exc).__name__})") from None
    if not isinstance(data, dict) or {"images", "labels"} - data.keys():
        raise PipelineError(f"{path}: not a prepared split (expected keys 'images' and 'labels')")
    return check_split(data["images"], data["labels"], str(path))


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
        path = Path(folder) / "stats.json"
        try:
            stats = json.loads(path.read_text())
        except FileNotFoundError:
            raise PipelineError(f"{path}: not found (run the preprocess stage)") from None
        except json.JSONDecodeError as exc:
            raise PipelineError(f"{path}: not valid JSON ({exc})") from None
        for key in ("mean", "std", "classes"):
            if key not in stats:
                raise PipelineError(f"{path}: missing '{key}'")
        return cls(Path(folder), Normalization(stats["mean"], stats["std"]), list(stats["classes"]), stats)

    def split(self, name: str) -> Split:
        """One split ("train", "val" or "test"), loaded and checked."""
        return load_split(self.folder / f"{name}.pt")
