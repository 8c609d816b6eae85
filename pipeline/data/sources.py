"""Where the IDX files come from: official mirrors, local folders, the bundled copy; all checksum-verified."""

from __future__ import annotations

import logging
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pipeline.common.errors import PipelineError
from pipeline.common.params import Param, choice, directory
from pipeline.data.idx import copy_idx
from pipeline.data.raw import FILES

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
PROBE_TIMEOUT_S = 3.0
MAX_ITEMS = 1_000_000
MAX_MD5SUMS_BYTES = 64 * 1024
DIGITS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's published checksums (of the decompressed files), classes and where to look for it."""

    name: str
    md5: dict[str, str]
    classes: tuple[str, ...]
    credit: str
    torchvision_class: str | None = None
    system_dirs: tuple[Path, ...] = ()
    bundled_dir: Path | None = None


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        md5={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
        classes=DIGITS,
        credit="MNIST: Yann LeCun, Corinna Cortes, Christopher J.C. Burges, CC BY-SA 3.0.",
        torchvision_class="MNIST",
        bundled_dir=REPO_ROOT / "data" / "bundled" / "mnist",
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        md5={
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        credit="Fashion-MNIST: Han Xiao, Kashif Rasul, Roland Vollgraf (Zalando Research), MIT licence.",
        torchvision_class="FashionMNIST",
        system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
    ),
}
DATASET_NAMES = (*DATASETS, "custom")
CUSTOM_CREDIT = "Custom dataset: see its own licence."

DOWNLOAD_PARAMS = {
    "dataset": Param(f"one of {', '.join(DATASET_NAMES)}", choice(*DATASET_NAMES),
                     "which dataset to fetch; `custom` reads IDX files and an MD5SUMS file from data_dir"),
    "data_dir": Param("a directory path", directory,
                      "a folder to look in for the IDX files (.gz or not) before system locations; a tracked "
                      "dependency, so changing a file there reruns download (default data/local)"),
}


def read_md5sums(path: Path) -> dict[str, str]:
    """Parse an `md5sum`-style file (checksums of the decompressed IDX files) into {name: md5}."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_MD5SUMS_BYTES + 1)
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found; dataset 'custom' needs MD5SUMS listing {', '.join(FILES)}") from None
    if len(data) > MAX_MD5SUMS_BYTES:
        raise PipelineError(f"{path}: larger than {MAX_MD5SUMS_BYTES:,} bytes; expected one `md5  name` line per file")
    lines = data.decode("utf-8", errors="replace").splitlines()
    sums = {}
    for line in filter(str.strip, lines):
        digest, _, name = line.strip().partition(" ")
        sums[name.strip().lstrip("*").removesuffix(".gz")] = digest.lower()
    missing = [f for f in FILES if f not in sums]
    if missing:
        raise PipelineError(f"{path}: no checksum for {', '.join(missing)}")
    return sums


def dataset_spec(dataset: str, data_dir: str) -> DatasetSpec:
    """The spec of a named dataset; `custom` takes its checksums from data_dir/MD5SUMS."""
    if dataset != "custom":
        return DATASETS[dataset]
    return DatasetSpec("custom", read_md5sums(Path(data_dir) / "MD5SUMS"), DIGITS, CUSTOM_CREDIT)


def manifest(spec: DatasetSpec) -> dict[str, object]:
    """What preprocess and the model card need to know of the dataset, beside the files (never the source)."""
    return {"dataset": spec.name, "classes": list(spec.classes), "credit": spec.credit,
            "md5": {name: spec.md5[name] for name in FILES}}


def idx_shape_rule(name: str) -> Callable[[tuple[int, ...]], str | None]:
    """What an IDX header of file `name` may claim: 28x28 images or labels, at most MAX_ITEMS of them."""
    images = "images" in name

    def rule(shape: tuple[int, ...]) -> str | None:
        if images and (len(shape) != 3 or shape[1:] != (28, 28)):
            return "expected images of 28x28 (count x 28 x 28)"
        if not images and len(shape) != 1:
            return "expected one dimension (labels)"
        if shape[0] > MAX_ITEMS:
            return f"more than {MAX_ITEMS:,} items, the most this pipeline reads"
        return None

    return rule


def copy_verified(spec: DatasetSpec, folder: Path, dest: Path) -> bool:
    """Stream the four files from `folder` (plain or .gz) into `dest`, each checked against its published MD5.

    False (nothing copied) when `folder` lacks one of them; a file that fails a check is a PipelineError.
    """
    paths = {}
    for name in FILES:
        found = [p for p in (folder / name, folder / f"{name}.gz") if p.is_file()]
        if not found:
            return False
        paths[name] = found[0]
    for name, path in paths.items():
        digest = copy_idx(path, dest / name, idx_shape_rule(name))
        if digest != spec.md5[name]:
            raise PipelineError(f"{path}: checksum mismatch for {name}: md5 {digest}, expected {spec.md5[name]}")
    return True


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the URL's host opens within `timeout` (quick offline detection)."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def download_from_mirrors(spec: DatasetSpec, dest: Path) -> bool:
    """Download through torchvision's mirrors and downloader into `dest`; False when no mirror serves every file."""
    if spec.torchvision_class is None:
        return False
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import download_url

    dataset_cls = getattr(tvd, spec.torchvision_class)
    for mirror in dataset_cls.mirrors:
        if not reachable(mirror):
            log.info("mirror %s unreachable, skipping", mirror)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                for filename, gz_md5 in dataset_cls.resources:
                    download_url(mirror + filename, tmp, filename, gz_md5)
            except (OSError, RuntimeError) as exc:
                log.info("mirror %s failed (%s), skipping", mirror, exc)
                continue
            return copy_verified(spec, Path(tmp), dest)
    return False


def candidate_sources(spec: DatasetSpec, data_dir: str, offline: bool) -> list[tuple[str, Callable[[Path], bool]]]:
    """(description, fetcher) pairs in the order they are tried; a fetcher fills a folder or returns False.

    Folders on this machine first (`data_dir`, the system's, the bundled copy), the official mirrors last: every
    source is checked against the same published MD5s, so the first that has the files gives the same bytes,
    and a machine with a copy never touches the network.
    """
    sources: list[tuple[str, Callable[[Path], bool]]] = []
    folders = [Path(data_dir), *spec.system_dirs, *([spec.bundled_dir] if spec.bundled_dir else [])]
    for folder in folders:
        sources.append((str(folder), lambda dest, folder=folder: folder.is_dir() and copy_verified(spec, folder, dest)))
    if not offline and spec.name != "custom":
        sources.append(("official mirrors", lambda dest: download_from_mirrors(spec, dest)))
    return sources


def fetch_dataset(spec: DatasetSpec, data_dir: str, dest: Path, offline: bool = False) -> str:
    """Write the four verified, decompressed IDX files into `dest`; return the source that served them."""
    tried = []
    for description, fetch in candidate_sources(spec, data_dir, offline):
        if fetch(dest):
            return description
        tried.append(description)
    raise PipelineError(f"dataset '{spec.name}': no source has all four files (tried: {'; '.join(tried) or 'none'})")
