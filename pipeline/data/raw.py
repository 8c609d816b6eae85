"""The raw dataset on disk (download's output, preprocess's input): four IDX files and a manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.common.errors import PipelineError
from pipeline.common.json_file import read_json

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MANIFEST = "dataset.json"


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest (name, classes, credit, MD5s) beside the IDX files in `folder`."""
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest download wrote beside the IDX files."""
    path = folder / MANIFEST
    manifest = read_json(path, "the download stage")
    missing = [key for key in ("dataset", "classes", "credit", "md5") if key not in manifest]
    if missing:
        raise PipelineError(f"{path}: missing {', '.join(missing)} (run the download stage)")
    return manifest
