"""preprocess stage: IDX files -> uint8/int64 tensor splits (train/val/test) and their stats."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import torch

from pipeline.atomic import atomic_dir, write_json
from pipeline.cli import reports_errors, setup_logging
from pipeline.idx import read_idx_images, read_idx_labels
from pipeline.params import describe, load_params
from pipeline.prepared import Split, check_split, save_split, stratified_split
from pipeline.sources import FILES, dataset_spec, md5_hex

KEYS = ("dataset", "data_dir", "val_size", "seed")
log = logging.getLogger("preprocess")


def read_raw_split(raw: Path, prefix: str) -> Split:
    """Images and labels of one IDX pair (prefix `train` or `t10k`), checked against each other."""
    images = read_idx_images(raw / f"{prefix}-images-idx3-ubyte")
    labels = read_idx_labels(raw / f"{prefix}-labels-idx1-ubyte")
    return check_split(images, labels, f"{raw}/{prefix}-*")


def class_counts(labels: torch.Tensor, num_classes: int) -> list[int]:
    """How many samples of each class."""
    return torch.bincount(labels, minlength=num_classes).tolist()


def prepare(raw: Path, val_size: int, seed: int, dataset: str,
            classes: tuple[str, ...]) -> tuple[dict[str, Split], dict]:
    """Split the raw files into train/val/test and compute the stats the trainer normalizes with."""
    full, test = read_raw_split(raw, "train"), read_raw_split(raw, "t10k")
    train_idx, val_idx = stratified_split(full.labels, val_size, seed)
    splits = {
        "train": Split(full.images[train_idx], full.labels[train_idx]),
        "val": Split(full.images[val_idx], full.labels[val_idx]),
        "test": test,
    }
    pixels = splits["train"].images.double() / 255
    stats = {
        "dataset": dataset,
        "classes": list(classes),
        "sizes": {name: len(split) for name, split in splits.items()},
        "class_counts": {name: class_counts(split.labels, len(classes)) for name, split in splits.items()},
        "mean": round(pixels.mean().item(), 6),
        "std": round(pixels.std().item(), 6),
        "source_md5": {name: md5_hex((raw / name).read_bytes()) for name in FILES},
    }
    return splits, stats


@click.command(help=f"""Turn the IDX files in RAW into tensor splits in OUT.

Writes train.pt, val.pt, test.pt ({{'images': uint8 Nx28x28, 'labels': int64 N}}) and
stats.json (split sizes, class counts, training mean/std, class names).

\b
Params read from params.yaml:
{describe(KEYS)}""")
@click.option("--params", "params_file", default="params.yaml", show_default=True, type=click.Path(path_type=Path))
@click.option("--raw", default="data/raw", show_default=True, type=click.Path(path_type=Path))
@click.option("--out", default="data/prepared", show_default=True, type=click.Path(path_type=Path))
@reports_errors
def main(params_file: Path, raw: Path, out: Path) -> None:
    setup_logging("preprocess")
    params = load_params(KEYS, params_file)
    classes = dataset_spec(params["dataset"], params["data_dir"]).classes
    splits, stats = prepare(raw, params["val_size"], params["seed"], params["dataset"], classes)
    with atomic_dir(out) as tmp:
        for name, split in splits.items():
            save_split(tmp / f"{name}.pt", split)
        write_json(tmp / "stats.json", stats)
    log.info("train %d / val %d / test %d, mean %.4f std %.4f -> %s",
             *stats["sizes"].values(), stats["mean"], stats["std"], out)


if __name__ == "__main__":
    main()
