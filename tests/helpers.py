"""Helpers the tests share: tiny datasets, quick configs, random splits."""

from __future__ import annotations

import gzip
import hashlib
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner, Result

from pipeline.data.idx import UINT8, read_idx_images, read_idx_labels
from pipeline.data.prepared import Split
from pipeline.data.raw import FILES, write_manifest
from pipeline.data.sources import CUSTOM_CREDIT, DATASETS, DIGITS
from pipeline.train.config import TrainConfig, load_train_config

REPO = Path(__file__).resolve().parent.parent


def read_bundled_mnist() -> dict[str, torch.Tensor]:
    """The real MNIST tensors from the copy bundled in data/bundled/mnist."""
    bundled = DATASETS["mnist"].bundled_dir
    return {"train_images": read_idx_images(bundled / "train-images-idx3-ubyte.gz"),
            "train_labels": read_idx_labels(bundled / "train-labels-idx1-ubyte.gz"),
            "test_images": read_idx_images(bundled / "t10k-images-idx3-ubyte.gz"),
            "test_labels": read_idx_labels(bundled / "t10k-labels-idx1-ubyte.gz")}


def idx_header(magic: int, *dims: int) -> bytes:
    """An IDX header: the magic number, then one big-endian size per dimension."""
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)


def write_tiny_dataset(folder: Path, arrays: dict[str, torch.Tensor], n_train: int, n_test: int) -> Path:
    """The first n_train/n_test real digits as IDX files plus MD5SUMS (a `custom` dataset)."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = {
        "train-images-idx3-ubyte": arrays["train_images"][:n_train],
        "train-labels-idx1-ubyte": arrays["train_labels"][:n_train],
        "t10k-images-idx3-ubyte": arrays["test_images"][:n_test],
        "t10k-labels-idx1-ubyte": arrays["test_labels"][:n_test],
    }
    sums = []
    for name, array in parts.items():
        write_idx(folder / name, array)
        sums.append(f"{hashlib.md5((folder / name).read_bytes()).hexdigest()}  {name}")
    (folder / "MD5SUMS").write_text("\n".join(sums) + "\n")
    return folder


def make_raw(folder: Path, dataset: Path) -> Path:
    """`folder` laid out as download writes data/raw, from the IDX files of a `custom` dataset folder."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: (dataset / name).read_bytes() for name in FILES}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    write_manifest(folder, {"dataset": "custom", "classes": list(DIGITS), "credit": CUSTOM_CREDIT,
                            "md5": {name: hashlib.md5(data).hexdigest() for name, data in files.items()}})
    return folder


# what makes a run quick and plain; any other key (a new one, say) takes params.yaml's value
QUICK = dict(model="cnn", width=16, optimizer="adamw", lr=0.004, momentum=0.9, nesterov=False, weight_decay=0.0005,
             scheduler="onecycle", label_smoothing=0.1, augment=True, rotate_deg=0.0, zoom=0.0, standardize=True,
             corrupt_fraction=0.0, ema_decay=0.0,
             select_fraction=0.0, select_after=2, batch_size=128, epochs=2, patience=0, seed=3,
             device="cpu")


def quick_config(**overrides: object) -> TrainConfig:
    """A CPU config that trains in about a second on the `prepared` fixture: params.yaml's train params with
    QUICK and `overrides` applied."""
    return replace(load_train_config(REPO / "params.yaml"), **{**QUICK, **overrides})


def small_split(n: int = 64) -> Split:
    """Random uint8 images with labels 0-9, for shape-only tests."""
    generator = torch.Generator().manual_seed(n)
    return Split(torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=generator),
                 torch.arange(n, dtype=torch.int64) % 10)


def invoke(command, *args: object) -> Result:
    """Run a click command in-process with `args` turned into strings."""
    return CliRunner().invoke(command, [str(a) for a in args])


def wait_until(condition: Callable[[], bool], process: subprocess.Popen | None, seconds: float, what: str) -> None:
    """Poll `condition` while `process` (if any) runs, for at most `seconds`; fail naming `what` otherwise."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert process is None or process.poll() is None, f"the process ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.02)


def write_idx(path: Path, array: np.ndarray | torch.Tensor) -> None:
    """Write a uint8 array as IDX (gzipped when the name ends in .gz): the format the pipeline reads."""
    array = np.asarray(array, dtype=np.uint8)
    data = struct.pack(">HBB", 0, UINT8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
