"""The IDX reader: round trips, and every malformed file rejected with a message naming it."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from pipeline.common.errors import PipelineError
from pipeline.data.idx import read_idx_images, read_idx_labels
from tests.helpers import idx_header, write_idx


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_images_round_trip(tmp_path: Path, name: str) -> None:
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / name, images)
    assert np.array_equal(read_idx_images(tmp_path / name).numpy(), images)


def test_labels_round_trip(tmp_path: Path) -> None:
    labels = np.array([0, 9, 3, 3, 7], dtype=np.uint8)
    write_idx(tmp_path / "labels.gz", labels)
    read = read_idx_labels(tmp_path / "labels.gz")
    assert read.dtype.is_floating_point is False and read.tolist() == labels.tolist()


def write_bytes(tmp_path: Path, data: bytes, name: str = "bad-idx3-ubyte") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("data", "message"), [
    (idx_header(0x00000D03, 1, 28, 28) + bytes(784), "bad magic number 0x00000d03"),
    (idx_header(0x00000803, 2, 28, 28) + bytes(784), "truncated: header says 2x28x28"),
    (idx_header(0x00000803, 1, 28, 28) + bytes(790), "has trailing bytes"),
    (idx_header(0x00000803, 1, 28), "truncated header"),
    (b"\x00\x00", "too short"),
    (idx_header(0x00000803, 0, 28, 28), "dimension of size 0"),
])
def test_malformed_images_rejected(tmp_path: Path, data: bytes, message: str) -> None:
    path = write_bytes(tmp_path, data)
    with pytest.raises(PipelineError, match=message) as error:
        read_idx_images(path)
    assert str(path) in str(error.value)


def test_labels_file_given_as_images_rejected(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, idx_header(0x00000801, 3) + bytes(3))
    with pytest.raises(PipelineError, match="expected 3 dimensions"):
        read_idx_images(path)


def test_label_out_of_range_rejected(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, idx_header(0x00000801, 3) + bytes([1, 12, 3]))
    with pytest.raises(PipelineError, match="label 12 out of range 0-9"):
        read_idx_labels(path)


def test_truncated_gzip_rejected(tmp_path: Path) -> None:
    data = gzip.compress(idx_header(0x00000803, 1, 28, 28) + bytes(784))
    path = write_bytes(tmp_path, data[: len(data) // 2], "x-idx3-ubyte.gz")
    with pytest.raises(PipelineError, match="corrupt or truncated gzip"):
        read_idx_images(path)


def test_garbled_gzip_rejected(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, b"\x1f\x8b" + bytes(range(200)), "x-idx3-ubyte.gz")
    with pytest.raises(PipelineError, match="corrupt or truncated gzip"):
        read_idx_images(path)


def test_missing_file_named(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="nothing-here: not found"):
        read_idx_images(tmp_path / "nothing-here")
