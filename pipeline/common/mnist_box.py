"""How MNIST placed its digits: fitted into a 20 x 20 box keeping the aspect ratio, centred by mass in 28 x 28.

Predict prepares every image this way (`inference.digit_image`), and so are the drawn non-digits training sees
(`data.non_digits`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

BOX, CANVAS = 20, 28


def fit_mnist_box(crop: np.ndarray) -> np.ndarray:
    """Ink cropped to its marks (float, light on dark) -> float32 28 x 28 in [0, 1]: fitted into 20 x 20 keeping the
    aspect ratio, contrast stretched, centred by mass."""
    scale = BOX / max(crop.shape)
    height, width = (max(1, round(d * scale)) for d in crop.shape)
    digit = np.asarray(Image.fromarray(crop).resize((width, height), Image.LANCZOS), dtype=np.float32)
    digit = np.clip(digit / max(float(digit.max()), 1e-6), 0, 1)
    total = digit.sum()
    ys, xs = np.indices(digit.shape)
    centre_y, centre_x = (ys * digit).sum() / total, (xs * digit).sum() / total
    top = int(np.clip(round(CANVAS / 2 - centre_y), 0, CANVAS - height))
    left = int(np.clip(round(CANVAS / 2 - centre_x), 0, CANVAS - width))
    canvas = np.zeros((CANVAS, CANVAS), dtype=np.float32)
    canvas[top:top + height, left:left + width] = digit
    return canvas
