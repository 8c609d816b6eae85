"""Training-time augmentation, vectorized over the batch: every image draws its own transform."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline.data.corruptions import random_corruptions
from pipeline.data.prepared import Normalization

MAX_SHIFT_PX = 2


def random_shift(images: torch.Tensor, background: float) -> torch.Tensor:
    """Shift every image of a batch by its own random whole-pixel offset (up to 2 px each way).

    One `gather` along each padded image's flattened pixels for the whole batch (3.7x faster on a CPU than
    indexing rows and columns, the same values). Whole pixels keep the digits as sharp as the test images,
    and torchvision's v2 transforms draw one offset per call, so a batch would share a single shift.
    """
    n, _, height, width = images.shape
    pad = MAX_SHIFT_PX
    padded = F.pad(images, (pad, pad, pad, pad), value=background)[:, 0]
    dy = torch.randint(0, 2 * pad + 1, (n, 1, 1), device=images.device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1, 1), device=images.device)
    row_length = width + 2 * pad
    window = (torch.arange(height, device=images.device).view(1, height, 1) * row_length
              + torch.arange(width, device=images.device).view(1, 1, width))
    source = (dy * row_length + dx + window).reshape(n, -1)
    return padded.reshape(n, -1).gather(1, source).view(n, 1, height, width)


def random_affine(images: torch.Tensor, background: float, max_degrees: float, max_scale: float) -> torch.Tensor:
    """Rotate each image by its own angle in ±max_degrees and scale it by 1 ± max_scale (bilinear).

    One matrix per image, applied with `affine_grid`/`grid_sample` in a single call for the batch;
    the background stays the background (the images are resampled as offsets from it).
    """
    n = images.shape[0]
    angle = (torch.rand(n, device=images.device) * 2 - 1) * math.radians(max_degrees)
    scale = 1 + (torch.rand(n, device=images.device) * 2 - 1) * max_scale
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    moved = F.grid_sample(images - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return moved.add_(background)


def random_corrupted(images: torch.Tensor, normalization: Normalization, fraction: float) -> torch.Tensor:
    """Normalized images with a share `fraction` of them corrupted (`random_corruptions`, in pixel units)."""
    pixels = random_corruptions(images * normalization.std + normalization.mean, fraction)
    return (pixels - normalization.mean) / normalization.std
