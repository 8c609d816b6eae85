"""Making the robustness suite: a fixed, seeded sample of the test digits under every corruption, as the model sees
them directly and as predict's preparation hands them to it. Run once, by the corrupt stage."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.common.errors import PipelineError
from pipeline.data.corruptions import SUITE
from pipeline.data.prepared import Split
from pipeline.inference.digit_image import readings
from pipeline.robustness.suite_file import MAX_READINGS, Suite


def sample(count: int, size: int, seed: int) -> torch.Tensor:
    """A fixed, seeded choice of `size` of `count` test images (all of them when `size` >= `count`)."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return order[:size].sort().values


def prepared_for_predict(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """uint8 N x 28 x 28 through predict's preparation: its readings as float32 N x 2 x 28 x 28 (zeros where
    there are fewer), how many each has (0 where no digit was found), and how many had no digit found."""
    out = np.zeros((len(images), MAX_READINGS, *images.shape[1:]), dtype=np.float32)
    counts = np.zeros(len(images), dtype=np.uint8)
    for i, image in enumerate(images):
        try:
            found = readings(image.astype(np.float32) / 255)
        except PipelineError:  # "no digit found": scored as a wrong answer
            continue
        out[i, :len(found)], counts[i] = found, len(found)
    return out, counts, int((counts == 0).sum())


def make_suite(test: Split, size: int, seed: int) -> Suite:
    """Every corruption of SUITE applied to the same `size` test digits, each with its own seeded generator."""
    chosen = sample(len(test), size, seed)
    clean = test.images[chosen].float().div(255).unsqueeze(1)
    images, prepared, counts, entries = [], [], [], []
    for number, entry in enumerate(SUITE):
        generator = torch.Generator().manual_seed(seed * 1_000 + number)
        corrupted = entry.corrupt(clean, entry.level, generator)
        pixels = corrupted[:, 0].mul(255).round_().to(torch.uint8).numpy()
        ready, count, refused = prepared_for_predict(pixels)
        images.append(pixels)
        prepared.append(ready)
        counts.append(count)
        entries.append({"name": entry.name, "family": entry.family, "level": entry.level, "trained": entry.trained,
                        "predict_found_no_digit": refused})
    index = {"images_per_corruption": len(chosen), "seed": seed, "test_indices": chosen.tolist(),
             "corruptions": entries}
    return Suite(np.stack(images), np.stack(prepared), np.stack(counts), test.labels[chosen].numpy(), index)
