"""Write artifacts through a temporary path and an atomic rename, so readers never see half a file."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(path: Path) -> None:
    """Delete temporaries beside `path` left by killed writers (their pid is in the name and is gone)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp*"):
        pid = stale.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def _prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary file beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp_name = tempfile.mkstemp(prefix=_prefix(path), suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o666 & ~_current_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; it replaces `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~_current_umask())
    try:
        yield tmp
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path | str, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text(path: Path | str, text: str) -> None:
    """Write `text` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_npz(path: Path | str, arrays: dict[str, Any]) -> None:
    """Numpy arrays as an uncompressed .npz, atomically and byte-for-byte reproducibly (np.savez stamps each
    member with the time it was written; here every member has the zip format's first date)."""
    import zipfile

    import numpy as np

    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(member, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.ascontiguousarray(array), allow_pickle=False)


def save_torch(path: Path | str, obj: Any) -> None:
    """`torch.save` atomically, byte-for-byte reproducibly.

    torch.save names the archive inside the file after the file it writes to; saving through a
    buffer keeps the random temporary name out, so equal objects give equal bytes (and DVC hashes).
    """
    import torch  # here, so that the stages that write no tensors (robustness) never import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())
