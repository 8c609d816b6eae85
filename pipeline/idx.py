"""Read and write IDX files (the MNIST format), plain or gzipped, with strict header checks."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import PipelineError

UINT8 = 0x08
IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions: count x rows x cols
LABELS_MAGIC = 0x00000801  # uint8, 1 dimension: count


def read_bytes(path: Path) -> bytes:
    """The file's content, decompressed when it ends in .gz; corrupt gzip is a PipelineError."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise PipelineError(f"{path}: corrupt or truncated gzip ({exc})") from None


def parse_idx(data: bytes, name: str) -> np.ndarray:
    """Parse IDX bytes of unsigned bytes into an array, checking magic, dimensions and size."""
    if len(data) < 4:
        raise PipelineError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != UINT8 or not 1 <= ndim <= 3:
        magic = struct.unpack(">I", data[:4])[0]
        raise PipelineError(
            f"{name}: bad magic number 0x{magic:08x}, expected 0x{IMAGES_MAGIC:08x} (images) "
            f"or 0x{LABELS_MAGIC:08x} (labels)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise PipelineError(f"{name}: truncated header ({len(data)} of {header} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if 0 in shape:
        raise PipelineError(f"{name}: dimension of size 0 in header {shape}")
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise PipelineError(
            f"{name}: {problem}: header says {'x'.join(map(str, shape))} = {expected} bytes, file has {len(data)}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_images(path: Path) -> torch.Tensor:
    """Images as a uint8 tensor N x rows x cols."""
    array = parse_idx(read_bytes(path), str(path))
    if array.ndim != 3:
        raise PipelineError(f"{path}: expected 3 dimensions (images), found {array.ndim}")
    return torch.from_numpy(array.copy())


def read_idx_labels(path: Path, num_classes: int = 10) -> torch.Tensor:
    """Labels as an int64 tensor N, each in [0, num_classes)."""
    array = parse_idx(read_bytes(path), str(path))
    if array.ndim != 1:
        raise PipelineError(f"{path}: expected 1 dimension (labels), found {array.ndim}")
    if array.max() >= num_classes:
        raise PipelineError(f"{path}: label {int(array.max())} out of range 0-{num_classes - 1}")
    return torch.from_numpy(array.astype(np.int64))


def write_idx(path: Path, array: np.ndarray | torch.Tensor) -> None:
    """Write a uint8 array as IDX (gzipped when the name ends in .gz)."""
    array = np.asarray(array, dtype=np.uint8)
    data = struct.pack(">HBB", 0, UINT8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
