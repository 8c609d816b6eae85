"""The robustness suite on disk: suite.npz (its arrays) and suite.json (its index), read without PyTorch."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common.atomic import atomic_dir, write_json, write_npz
from pipeline.common.errors import PipelineError

IMAGES_FILE, INDEX_FILE = "suite.npz", "suite.json"
MAX_READINGS = 2  # predict reads an image at most two ways (`digit_image.readings`)


@dataclass(frozen=True)
class Suite:
    """Per corruption C, the same N test digits: `images` C x N x 28 x 28 uint8 (what a 28 x 28 PNG holds),
    `prepared` C x N x 2 x 28 x 28 float32 (predict's readings of each), `readings` C x N (how many of those
    there are: 0 where predict found no digit), `labels` N, and `index`: each corruption's name, family, level
    and whether training applies its kind."""

    images: np.ndarray
    prepared: np.ndarray
    readings: np.ndarray
    labels: np.ndarray
    index: dict[str, Any]


def save_suite(folder: Path, suite: Suite) -> None:
    """The suite as suite.npz (arrays) and suite.json (its index), replacing `folder` atomically."""
    with atomic_dir(folder) as tmp:
        write_npz(tmp / IMAGES_FILE, {"images": suite.images, "prepared": suite.prepared,
                                      "readings": suite.readings, "labels": suite.labels})
        write_json(tmp / INDEX_FILE, suite.index)


def load_suite(folder: Path) -> Suite:
    """The suite the corrupt stage wrote to `folder`."""
    try:
        index = json.loads((folder / INDEX_FILE).read_text())
        with np.load(folder / IMAGES_FILE, allow_pickle=False) as arrays:
            return Suite(arrays["images"], arrays["prepared"], arrays["readings"], arrays["labels"], index)
    except FileNotFoundError as exc:
        raise PipelineError(f"{exc.filename}: not found (run the corrupt stage)") from None
    except (KeyError, ValueError, OSError) as exc:
        raise PipelineError(f"{folder}: not a robustness suite ({type(exc).__name__}: {exc})") from None
