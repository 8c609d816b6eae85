"""Running a model over many images in PyTorch: pixels from uint8 images, and logits in cache-sized batches."""

from __future__ import annotations

import torch
from torch import nn

# small enough that a batch's activations (x5 with test-time shifts) stay in cache: 1.25-1.5x faster than 1000 on CPU
BATCH = 250


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x 28 x 28 -> float32 N x 1 x 28 x 28 in [0, 1] (what ToTensor() gives)."""
    return images.unsqueeze(1).float().div_(255)


@torch.inference_mode()
def predict_logits(model: nn.Module, pixels: torch.Tensor, batch: int = BATCH) -> torch.Tensor:
    """Logits for every image, in batches."""
    return torch.cat([model(pixels[i:i + batch]) for i in range(0, len(pixels), batch)])
