"""Read IDX files (the MNIST format), plain or gzipped, with strict header checks."""

from __future__ import annotations

import gzip
import hashlib
import math
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from pipeline.common.errors import PipelineError

UINT8 = 0x08
IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions: count x rows x cols
LABELS_MAGIC = 0x00000801  # uint8, 1 dimension: count
CHUNK = 1 << 20


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


def parse_header(header: bytes, name: str) -> tuple[int, ...]:
    """The dimensions in an IDX header (magic + one 4-byte size per dimension), checked."""
    if len(header) < 4:
        raise PipelineError(f"{name}: too short for an IDX header ({len(header)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", header[:4])
    if zero != 0 or dtype != UINT8 or not 1 <= ndim <= 3:
        magic = struct.unpack(">I", header[:4])[0]
        raise PipelineError(
            f"{name}: bad magic number 0x{magic:08x}, expected 0x{IMAGES_MAGIC:08x} (images) "
            f"or 0x{LABELS_MAGIC:08x} (labels)"
        )
    size = 4 + 4 * ndim
    if len(header) < size:
        raise PipelineError(f"{name}: truncated header ({len(header)} of {size} bytes)")
    shape = struct.unpack(f">{ndim}I", header[4:size])
    if 0 in shape:
        raise PipelineError(f"{name}: dimension of size 0 in header {shape}")
    return shape


def parse_idx(data: bytes, name: str) -> np.ndarray:
    """Parse IDX bytes of unsigned bytes into an array, checking magic, dimensions and size."""
    shape = parse_header(data[:16], name)
    header = 4 + 4 * len(shape)
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise PipelineError(
            f"{name}: {problem}: header says {'x'.join(map(str, shape))} = {expected} bytes, file has {len(data)}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def copy_idx(source: Path, dest: Path, shape_rule: Callable[[tuple[int, ...]], str | None]) -> str:
    """Stream one IDX file (plain or .gz) from `source` to `dest` (decompressed); return its MD5.

    The header is read and checked first (`shape_rule` returns what is wrong with the dimensions, or
    None), then exactly the bytes it announces are copied in chunks while they are hashed, and one byte
    more is asked for to catch trailing data. So memory stays at one chunk and no more is read than
    the header may claim, whatever the file holds (a gzip bomb stops at the first byte too many).
    """
    try:
        with _open(source) as stream, dest.open("wb") as out:
            first = stream.read(4)
            header = first + stream.read(4 * first[3]) if len(first) == 4 else first
            shape = parse_header(header, str(source))
            dims = "x".join(map(str, shape))
            problem = shape_rule(shape)
            if problem:
                raise PipelineError(f"{source}: header says {dims}: {problem}")
            digest = hashlib.md5(header, usedforsecurity=False)
            out.write(header)
            remaining = math.prod(shape)
            expected = len(header) + remaining
            while remaining:
                chunk = stream.read(min(CHUNK, remaining))
                if not chunk:
                    raise PipelineError(f"{source}: truncated: header says {dims} = "
                                        f"{expected} bytes, file ends after {expected - remaining}")
                digest.update(chunk)
                out.write(chunk)
                remaining -= len(chunk)
            if stream.read(1):
                raise PipelineError(f"{source}: has trailing bytes after the {expected} bytes its header announces")
    except FileNotFoundError:
        raise PipelineError(f"{source}: not found") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise PipelineError(f"{source}: corrupt or truncated gzip ({exc})") from None
    return digest.hexdigest()


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
