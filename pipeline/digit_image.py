"""Turn an arbitrary image of one digit into an MNIST-style 28x28 input (numpy and Pillow only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.errors import PipelineError

MAX_PIXELS = 40_000_000
BOX, CANVAS = 20, 28
INK_THRESHOLD = 0.2
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # Pillow's 16/32-bit integer and float gray


def scaled_by_range(values: np.ndarray) -> np.ndarray:
    """16-bit, 32-bit and float gray levels to [0, 1] by their range (8-bit conversion would clip them).

    Non-negative whole numbers are divided by the smallest of 2^8-1, 2^16-1, 2^32-1 that holds their
    maximum; values already in [0, 1] stay; anything else is stretched from its minimum to its maximum.
    """
    values = np.nan_to_num(values, nan=0.0)
    low, high = float(values.min()), float(values.max())
    if low >= 0 and np.array_equal(values, np.round(values)) and high > 1:
        top = next(limit for limit in (2**8 - 1, 2**16 - 1, 2**32 - 1) if high <= limit)
        return (values / top).astype(np.float32)
    if low >= 0 and high <= 1:
        return values.astype(np.float32)
    return ((values - low) / max(high - low, 1e-12)).astype(np.float32)


def load_grayscale(path: Path) -> np.ndarray:
    """The image as float32 gray levels in [0, 1]; transparency is laid over white."""
    Image.MAX_IMAGE_PIXELS = None  # we check the size ourselves, before decoding
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise PipelineError(f"{path}: image of {image.width}x{image.height} pixels is too large "
                                    f"(at most {MAX_PIXELS:,} pixels)")
            image = ImageOps.exif_transpose(image)
            if image.mode in WIDE_MODES:
                gray = scaled_by_range(np.asarray(image, dtype=np.float64))
            else:
                if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
                    image = Image.alpha_composite(white, image.convert("RGBA"))
                gray = np.asarray(image.convert("L"), dtype=np.float32) / 255
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found") from None
    except IsADirectoryError:
        raise PipelineError(f"{path}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise PipelineError(f"{path}: not an image Pillow can read (PNG, JPEG, ...)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PipelineError(f"{path}: unreadable or truncated image ({exc})") from None
    return gray


def to_mnist(gray: np.ndarray, name: str = "image") -> np.ndarray:
    """MNIST's preparation: light ink on dark, fit into 20x20 keeping aspect, centred by mass in 28x28."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    ink = gray - background if background < 0.5 else background - gray
    ink = np.clip(ink / max(ink.max(), 1e-6), 0, 1)
    rows, cols = np.nonzero(ink > INK_THRESHOLD)
    if len(rows) == 0:
        raise PipelineError(f"{name}: no digit found (blank image)")
    crop = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    scale = BOX / max(crop.shape)
    height, width = (max(1, round(d * scale)) for d in crop.shape)
    resized = Image.fromarray((crop * 255).astype(np.uint8)).resize((width, height), Image.LANCZOS)
    digit = np.asarray(resized, dtype=np.float32) / 255
    total = digit.sum()
    if total == 0:
        raise PipelineError(f"{name}: no digit found (the marks are too small to survive scaling to 20x20)")
    ys, xs = np.indices(digit.shape)
    centre_y, centre_x = (ys * digit).sum() / total, (xs * digit).sum() / total
    top = int(np.clip(round(CANVAS / 2 - centre_y), 0, CANVAS - height))
    left = int(np.clip(round(CANVAS / 2 - centre_x), 0, CANVAS - width))
    canvas = np.zeros((CANVAS, CANVAS), dtype=np.float32)
    canvas[top:top + height, left:left + width] = digit
    return canvas


def prepare_image(path: Path) -> np.ndarray:
    """A file on disk -> float32 1 x 28 x 28 in [0, 1], ready for the exported model."""
    return to_mnist(load_grayscale(path), str(path))[None]
