"""Shared fixtures: tiny IDX datasets cut from the bundled MNIST, prepared splits and a quickly trained model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from pipeline.idx import read_idx_images, read_idx_labels
from pipeline.model_file import save_model
from pipeline.preparation import prepare
from pipeline.prepared import save_split
from pipeline.sources import DATASETS
from tests.helpers import make_raw, quick_config, write_tiny_dataset

REPO = Path(__file__).resolve().parent.parent
BUNDLED = DATASETS["mnist"].bundled_dir
os.environ["MNIST_OFFLINE"] = "1"  # tests never touch the network


@pytest.fixture(scope="session")
def mnist_arrays() -> dict[str, torch.Tensor]:
    """The real MNIST tensors, read once from the bundled copy."""
    return {
        "train_images": read_idx_images(BUNDLED / "train-images-idx3-ubyte.gz"),
        "train_labels": read_idx_labels(BUNDLED / "train-labels-idx1-ubyte.gz"),
        "test_images": read_idx_images(BUNDLED / "t10k-images-idx3-ubyte.gz"),
        "test_labels": read_idx_labels(BUNDLED / "t10k-labels-idx1-ubyte.gz"),
    }


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory, mnist_arrays: dict[str, torch.Tensor]) -> Path:
    """1,000 training and 300 test digits as a custom IDX dataset."""
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"), mnist_arrays, 1000, 300)


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    """The tiny dataset as download lays out data/raw (IDX files and dataset.json)."""
    return make_raw(tmp_path_factory.mktemp("tiny-raw"), tiny_dataset)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory, mnist_arrays: dict[str, torch.Tensor]) -> Path:
    """Prepared splits from 8,000 real training digits (500 for validation) and 2,000 test digits."""
    dataset = write_tiny_dataset(tmp_path_factory.mktemp("dataset"), mnist_arrays, 8000, 2000)
    raw = make_raw(tmp_path_factory.mktemp("raw"), dataset)
    out = tmp_path_factory.mktemp("prepared")
    splits, stats = prepare(raw, 500, 0)
    for name, split in splits.items():
        save_split(out / f"{name}.pt", split)
    (out / "stats.json").write_text(json.dumps(stats))
    return out


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory, prepared: Path) -> Path:
    """models/model.pt of a CNN trained for 3 epochs on the `prepared` fixture (about 97% accurate)."""
    from pipeline.distributed import ProcessInfo
    from pipeline.prepared import load_split, load_stats
    from pipeline.training import fit

    folder = tmp_path_factory.mktemp("model")
    stats = load_stats(prepared)
    cfg = quick_config(epochs=3, augment=False)
    result = fit(cfg, load_split(prepared / "train.pt"), load_split(prepared / "val.pt"), stats["mean"], stats["std"],
                 ProcessInfo(), folder / "checkpoint.pt", {"run": "fixture"})
    save_model(folder / "model.pt", cfg.model, result.model, stats["mean"], stats["std"], stats["classes"],
               {"epochs": cfg.epochs})
    return folder / "model.pt"
