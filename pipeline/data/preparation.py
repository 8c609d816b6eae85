"""The preprocess stage's work: IDX files -> stratified train/val/test splits and their stats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.common.errors import ParamError
from pipeline.common.params import MAX_SEED, Param, integer
from pipeline.data.idx import read_idx_images, read_idx_labels
from pipeline.data.prepared import Split, check_split
from pipeline.data.raw import read_manifest

PREPROCESS_PARAMS = {
    "val_size": Param("an integer from 1 to 30000", integer(1, 30000),
                      "images carved from the training set (stratified by class) for validation"),
    "split_seed": Param(f"an integer from 0 to {MAX_SEED}", integer(0, MAX_SEED),
                        "seed of the validation split alone, so that a sweep over `seed` keeps one validation set"),
}


def stratified_split(labels: torch.Tensor, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted (train, val) indices; each class gets its share of `val_size` (largest remainder)."""
    if not 0 < val_size < len(labels):
        raise ParamError(f"'val_size' must be between 1 and {len(labels) - 1}, got {val_size}")
    generator = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(labels, return_counts=True)
    quotas = counts.double() * val_size / len(labels)
    take = quotas.floor().long()
    remainder_order = torch.argsort(quotas - take, descending=True, stable=True)
    take[remainder_order[: val_size - int(take.sum())]] += 1
    val_parts = []
    for cls, n in zip(classes.tolist(), take.tolist(), strict=True):
        members = torch.nonzero(labels == cls).flatten()
        val_parts.append(members[torch.randperm(len(members), generator=generator)[:n]])
    val = torch.cat(val_parts).sort().values
    is_val = torch.zeros(len(labels), dtype=torch.bool)
    is_val[val] = True
    return torch.nonzero(~is_val).flatten(), val


def read_raw_split(raw: Path, prefix: str, num_classes: int) -> Split:
    """Images and labels of one IDX pair (prefix `train` or `t10k`), checked against each other."""
    images = read_idx_images(raw / f"{prefix}-images-idx3-ubyte")
    labels = read_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", num_classes)
    return check_split(images, labels, f"{raw}/{prefix}-*", num_classes)


def class_counts(labels: torch.Tensor, num_classes: int) -> list[int]:
    """How many samples of each class."""
    return torch.bincount(labels, minlength=num_classes).tolist()


def prepare(raw: Path, val_size: int, split_seed: int) -> tuple[dict[str, Split], dict[str, Any]]:
    """Split the raw files into train/val/test and compute the stats the trainer normalizes with."""
    manifest = read_manifest(raw)
    classes = manifest["classes"]
    full, test = read_raw_split(raw, "train", len(classes)), read_raw_split(raw, "t10k", len(classes))
    train_idx, val_idx = stratified_split(full.labels, val_size, split_seed)
    splits = {
        "train": Split(full.images[train_idx], full.labels[train_idx]),
        "val": Split(full.images[val_idx], full.labels[val_idx]),
        "test": test,
    }
    pixels = splits["train"].images.double() / 255
    stats = {
        "dataset": manifest["dataset"],
        "classes": classes,
        "credit": manifest["credit"],
        "sizes": {name: len(split) for name, split in splits.items()},
        "class_counts": {name: class_counts(split.labels, len(classes)) for name, split in splits.items()},
        "mean": round(pixels.mean().item(), 6),
        "std": round(pixels.std().item(), 6),
        "source_md5": manifest["md5"],
    }
    return splits, stats
