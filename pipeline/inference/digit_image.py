"""Turn a real image of one digit (a scan, a photo of paper, a drawing app's canvas) into an MNIST-style input.

The steps, each undoing one way real images differ from MNIST's:
1. ink: the distance of each pixel from the local background (so uneven lighting, gradients and haze
   go), on the side of the minority (dark pen on paper or chalk on a board), in the strongest colour
   channel (so a yellow or blue pen counts as much as a black one);
2. the digit: connected marks with a real share of the ink, so dust specks and noise are left out,
   and a small digit on a large page is found;
3. stroke width: estimated from the distance transform and thickened or thinned towards MNIST's
   typical width at the 20x20 scale (a thin pen on a large canvas would otherwise arrive faint);
4. MNIST's own preparation: fitted into 20x20 keeping the aspect ratio, contrast stretched, centred by
   mass in 28x28.
"""

from __future__ import annotations

import io
import math
import mmap
import os
import stat
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from pipeline.common.errors import PipelineError
from pipeline.common.mnist_box import BOX, CANVAS, fit_mnist_box
from pipeline.inference.image_budget import check_structure

MAX_PIXELS = 40_000_000
MAX_ASPECT = 20  # no photo, scan or canvas of a digit is more elongated than this
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")  # what people send; others are never decoded
WORK_PIXELS = 4_000_000  # a larger image is averaged down to this before it is prepared (serve's own limit)
WORK_SIDE = 128  # a larger digit is reduced (keeping every stroke) before its strokes are reshaped: 6x the box
COARSE_SIDE = 256  # a larger image is first looked at on a copy this size (block means)
COARSE_EXTENT = 64  # and if the digit spans this much there, that copy is all the work needs
STROKE_WIDTH = 2.4  # MNIST's median stroke width, in pixels of the 20x20 box (docs/predict-and-serve.md, step 3)
BACKGROUND_SIDE = 128  # the background is estimated on a copy this size
LEVEL_SIDE = 256  # the marks that set the ink level are found on a copy at most this size
NOISE_FLOOR = 0.12  # ink weaker than this share of the strongest is noise, haze or JPEG ringing
MARK = 0.3  # ink above this share of the strongest counts as part of a mark
MIN_SHARE = 0.08  # a mark with less than this share of the largest mark's ink is a speck
SOFT_SHARE = 0.6  # ink is blurred when its faint pixels outnumber its solid ones by this (sharp strokes: < 0.45)
THIN_PEN = 0.4  # a stroke under this share of MNIST's width (at the box's scale) is a thin pen, not blur,
FAR_FAINT = 0.05  # when no more than this share of its faint edge lies beyond the pixels touching its core
WHOLE_FRAME = 0.6  # marks that span this share of the image's longer side are read as the whole image too
BAND = 0.3  # a mark across the whole image no wider than this share of it is a band or a frame, not a digit
MIN_EXTENT = 0.02  # a digit spans at least this share of the image's longer side (and 4 pixels)
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # Pillow's 16/32-bit integer and float gray


def scaled_by_range(values: np.ndarray) -> np.ndarray:
    """16-bit, 32-bit and float gray levels to [0, 1] by their range (8-bit conversion would clip them).

    Non-negative whole numbers are divided by the smallest of 2^8-1, 2^16-1, 2^32-1 that holds their
    maximum; values already in [0, 1] stay; anything else is stretched from its minimum to its maximum.
    """
    values = np.nan_to_num(values, nan=0.0)
    low, high = float(values.min()), float(values.max())
    if low >= 0 and np.array_equal(values, np.round(values)) and 1 < high <= 2**32 - 1:
        top = next(limit for limit in (2**8 - 1, 2**16 - 1, 2**32 - 1) if high <= limit)
        return (values / top).astype(np.float32)
    if low >= 0 and high <= 1:
        return values.astype(np.float32)
    # in halves, exactly: the range of finite values as far apart as +-1e308 would overflow to infinity
    return ((values / 2 - low / 2) / max(high / 2 - low / 2, 1e-12)).astype(np.float32)


def decode_image(source: bytes | BinaryIO, name: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image's bytes as float32 in [0, 1]: H x W for gray, H x W x 3 for colour; transparency is laid
    over white. Only FORMATS are decoded, and only after their header says the size is within `max_pixels`
    and MAX_ASPECT (Pillow's own bomb check stays on), and after `check_structure` found nothing costlier than
    a digit needs. Errors name the image as `name`."""
    _check_structure(source, name)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=FORMATS) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise PipelineError(f"{name}: image of {width}x{height} pixels is too large "
                                    f"(at most {max_pixels:,} pixels)")
            if max(width, height) > MAX_ASPECT * max(1, min(width, height)):
                raise PipelineError(f"{name}: image of {width}x{height} pixels is too elongated for a digit "
                                    f"(at most {MAX_ASPECT}:1)")
            factor = math.ceil(math.sqrt(width * height / WORK_PIXELS))
            if factor > 1:  # a JPEG decodes at 1/2, 1/4 or 1/8 scale at once (DCT scaling)
                image.draft(image.mode, (width // factor, height // factor))
            image = _at_most_work_pixels(ImageOps.exif_transpose(image))
            if image.mode in WIDE_MODES:
                return scaled_by_range(np.asarray(image, dtype=np.float64))
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                white = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(white, image.convert("RGBA"))
            mode = "L" if image.mode in ("1", "L", "LA", "P") and _is_gray(image) else "RGB"
            pixels = np.asarray(image.convert(mode), dtype=np.float32)
            pixels /= 255  # in place: a 4 MP colour image is 48 MB as float32
            return pixels
    except UnidentifiedImageError:
        raise PipelineError(f"{name}: not an image of an accepted format ({', '.join(FORMATS)})") from None
    except Image.DecompressionBombError:
        raise PipelineError(f"{name}: image is too large (at most {max_pixels:,} pixels)") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise PipelineError(f"{name}: unreadable or truncated image ({str(exc)[:120]})") from None


def _check_structure(source: bytes | BinaryIO, name: str) -> None:
    if isinstance(source, bytes):
        return check_structure(source, name)
    if os.fstat(source.fileno()).st_size > 0:  # a file is checked in place, mapped, not read into memory
        with mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            check_structure(mapped, name)


def load_image(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The image in the regular file at `path` (a FIFO, device or socket is refused at once, never read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once instead of waiting for a writer
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found") from None
    except IsADirectoryError:
        raise PipelineError(f"{path}: is a directory, not an image") from None
    except OSError as exc:
        raise PipelineError(f"{path}: cannot be opened ({exc.strerror})") from None
    try:  # checked on the bare descriptor, which is closed on every refusal (fdopen of a directory keeps it)
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise PipelineError(f"{path}: is a directory, not an image")
        if not stat.S_ISREG(mode):
            raise PipelineError(f"{path}: not a regular file (a FIFO, device or socket); give an image file")
        os.set_blocking(fd, True)
        file = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with file:
        return decode_image(file, str(path), max_pixels)


def _at_most_work_pixels(image: Image.Image) -> Image.Image:
    """An image over WORK_PIXELS averaged down by a whole factor, before it becomes float32 (a 40 MP photo
    would take 480 MB as colour floats). Palettes and 16-bit levels are converted first, as averaging their
    codes would be wrong."""
    factor = math.ceil(math.sqrt(image.width * image.height / WORK_PIXELS))
    if factor <= 1:
        return image
    if image.mode in ("1", "P", "PA"):
        image = image.convert("RGBA")
    elif image.mode.startswith("I;16"):
        image = image.convert("I")
    return image.reduce(factor)


def _is_gray(image: Image.Image) -> bool:
    """Whether a 1/L/LA/P image holds only gray levels (a palette may hold colours)."""
    if image.mode != "P":
        return True
    rgb = np.asarray(image.convert("RGB"))
    return bool((rgb == rgb[..., :1]).all())


def _background(channel: np.ndarray, dark_ink: bool) -> np.ndarray:
    """The paper (or board) without the strokes: a grey closing (opening for light ink) wider than a stroke.

    Computed on a small copy and scaled back, so it costs the same on any image; a closing keeps
    linear gradients and smooth lighting as they are, and removes everything narrower than its window.
    """
    height, width = channel.shape
    factor = max(1.0, max(height, width) / BACKGROUND_SIDE)
    small_size = (max(1, round(width / factor)), max(1, round(height / factor)))
    small = np.asarray(Image.fromarray(channel).resize(small_size, Image.BOX))
    window = max(3, max(small.shape) // 4)
    close = ndimage.grey_closing if dark_ink else ndimage.grey_opening
    flat = ndimage.uniform_filter(close(small, size=window, mode="nearest"), size=window // 2 + 1, mode="nearest")
    return np.asarray(Image.fromarray(flat).resize((width, height), Image.BILINEAR))


# Paeth's 19 compare-exchanges that leave the median of 9 values in the middle slot
MEDIAN9 = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8), (4, 7), (3, 6),
           (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))


def _median3(values: np.ndarray) -> np.ndarray:
    """A 3x3 median (edges repeated), which removes single-pixel noise; images under 3 pixels stay as they are.

    The same values as scipy's median_filter(size=3, mode="nearest"), 2.5 times faster: a sorting network over
    the nine shifted copies, each step a vectorized minimum and maximum. Its callers pass copies at most
    LEVEL_SIDE a side, so the nine copies stay small (256 KB each).
    """
    if min(values.shape) < 3:
        return values
    padded = np.pad(values, 1, mode="edge")
    height, width = values.shape
    slots = [padded[dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3)]
    for low, high in MEDIAN9:
        slots[low], slots[high] = np.minimum(slots[low], slots[high]), np.maximum(slots[low], slots[high])
    return slots[4]


def small_gray(image: np.ndarray) -> np.ndarray:
    """The image's gray levels on a copy at most LEVEL_SIDE a side (block means)."""
    gray = image if image.ndim == 2 else image.mean(axis=2)
    return _mean_reduced(gray, math.ceil(max(gray.shape) / LEVEL_SIDE))


def has_dark_ink(small: np.ndarray) -> bool:
    """Whether the ink is darker than the paper, from `small_gray`'s copy (which side the ink is on needs no more
    detail): the minority side of the median."""
    smooth = _median3(small)
    middle = float(np.median(smooth))
    return middle - float(smooth.min()) >= float(smooth.max()) - middle


def ink_map(image: np.ndarray, dark_ink: bool) -> np.ndarray:
    """How much ink each pixel holds, in [0, 1] relative to the strongest stroke; background is 0. `dark_ink`:
    which side the ink is on (`has_dark_ink`)."""
    # full-size arrays are let go as soon as they are used: a 4 MP image stays under +150 MB
    channels = [image] if image.ndim == 2 else [image[..., c] for c in range(image.shape[2])]
    ink = np.zeros(image.shape[:2], dtype=np.float32)
    for channel in channels:
        background = _background(channel, dark_ink)
        # contrast relative to the local paper, as lighting multiplies: a stroke in shade counts as one in light
        if dark_ink:
            contrast = background - channel
            contrast /= np.maximum(background, 0.05)
        else:
            contrast = channel - background
            contrast /= np.maximum(1 - background, 0.05)
        np.maximum(ink, contrast, out=ink)
        del background, contrast
    peak = ink_level(ink)
    if peak <= 0:
        return np.zeros_like(ink)
    return np.clip((ink / peak - NOISE_FLOOR) / (1 - NOISE_FLOOR), 0, 1)


def ink_level(ink: np.ndarray) -> float:
    """The strongest ink of the heaviest mark: the digit's own level, so that a dark blot or speck beside a
    faint pencil digit neither sets it (the digit would fall under the thresholds) nor becomes the digit."""
    # block maxima, so that no mark fades, at most LEVEL_SIDE a side; then single-pixel noise goes
    small = _median3(reduced(ink, math.ceil(max(ink.shape) / LEVEL_SIDE)))
    top = float(small.max())
    if not top > 0:  # blank, or not a number at all
        return 0.0
    marks, mass = weighed_marks(small, NOISE_FLOOR * top)
    return float(ndimage.maximum(small, marks, index=int(mass.argmax()) + 1))


def weighed_marks(ink: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The connected marks of ink above `threshold` (labels 1, 2, ...) and each one's ink added up.

    The sums run over the marked pixels only: ndimage.sum_labels would copy the whole image twice.
    """
    marked = ink > threshold
    marks, count = ndimage.label(marked, structure=np.ones((3, 3)))
    return marks, np.bincount(marks[marked], weights=ink[marked], minlength=count + 1)[1:]


def digit_region(ink: np.ndarray, name: str) -> tuple[slice, slice]:
    """The bounding box of the marks that make the digit: every connected mark with a real share of the ink."""
    marks, mass = weighed_marks(ink, MARK)
    if mass.size == 0:
        raise PipelineError(f"{name}: no digit found (blank image)")
    boxes = [box for box, share in zip(ndimage.find_objects(marks), mass >= MIN_SHARE * mass.max(), strict=True)
             if share]  # the kept marks' bounding boxes: their union is the digit's, with no full-size mask
    digits = [box for box in boxes if not _is_band(box, ink.shape)]
    boxes = digits or boxes
    top, bottom = min(b[0].start for b in boxes), max(b[0].stop for b in boxes)
    left, right = min(b[1].start for b in boxes), max(b[1].stop for b in boxes)
    extent = max(bottom - top, right - left)
    if extent < max(4, MIN_EXTENT * max(ink.shape)):
        raise PipelineError(f"{name}: no digit found (only marks of {extent} pixels on a "
                            f"{ink.shape[1]}x{ink.shape[0]} image, too small to be a digit)")
    return slice(top, bottom), slice(left, right)


def _is_band(box: tuple[slice, slice], shape: tuple[int, ...]) -> bool:
    """Whether a mark's box runs from edge to edge of the image and is narrow across (a lit or inverted band at
    the side, a ruled line, a frame's side): such a mark is left out when the image has others."""
    rows, cols = box
    height, width = shape[:2]
    across = rows.start == 0 and rows.stop == height and cols.stop - cols.start <= BAND * width
    along = cols.start == 0 and cols.stop == width and rows.stop - rows.start <= BAND * height
    return across or along


def stroke_width(mask: np.ndarray) -> float:
    """The median stroke width of a binary drawing, in pixels: twice the distance to the edge along the ridges."""
    inside = ndimage.distance_transform_edt(mask)
    ridge = mask & (inside >= ndimage.maximum_filter(inside, size=3))
    return 2 * float(np.median(inside[ridge])) - 0.5 if ridge.any() else 0.0


def _blurred(crop: np.ndarray, solid: np.ndarray, thin: bool) -> bool:
    """Whether the ink is soft (focus, motion, noise): its faint pixels outnumber its solid ones by SOFT_SHARE. A
    `thin` pen's anti-aliased edge outnumbers its core too, but hugs it: no more than FAR_FAINT of it lies beyond
    the pixels that touch the core."""
    faint = (crop > 0.1) & ~solid
    faint_count = np.count_nonzero(faint)
    if faint_count <= SOFT_SHARE * np.count_nonzero(solid):
        return False
    if not thin:
        return True
    beyond = faint & ~ndimage.binary_dilation(solid, structure=np.ones((3, 3), bool))
    return np.count_nonzero(beyond) > FAR_FAINT * faint_count


def normalize_stroke(crop: np.ndarray, scale: float) -> np.ndarray:
    """Thicken or thin the strokes so that, once scaled by `scale`, they are about MNIST's width.

    Works on the signed distance to the stroke's edge, so any change of width costs the same and the
    new edge is anti-aliased. Strokes within 25% of the target width are left untouched.
    """
    solid = crop >= 0.5
    mask = np.pad(solid, 1)  # a margin, so that strokes touching the crop's border have an edge there
    width = stroke_width(mask)
    target = STROKE_WIDTH / scale
    if _blurred(crop, solid, thin=0 < width < THIN_PEN * target):
        return crop  # blurred ink (focus, motion, noise): a width measured on its core would break the strokes
    if width <= 0 or abs(width - target) <= 0.25 * target:  # no solid stroke to measure: left as it is
        return crop
    grow = max((target - width) / 2, -0.2 * width)  # thinning stops short of breaking strokes: 40% at most
    mask = np.pad(mask, max(0, int(np.ceil(grow))) + 1)
    signed = ndimage.distance_transform_edt(mask) - ndimage.distance_transform_edt(~mask)
    return np.clip(signed + grow + 0.5, 0, 1).astype(np.float32)


def _mean_reduced(values: np.ndarray, factor: int) -> np.ndarray:
    """`values` (gray, or colour channels last) made `factor` times smaller by the mean of each block (partial
    blocks at the edges); 1: as it is."""
    if factor <= 1:
        return values
    if values.ndim == 3:
        return np.stack([_mean_reduced(values[..., c], factor) for c in range(values.shape[2])], axis=2)
    return np.asarray(Image.fromarray(values.astype(np.float32, copy=False), "F").reduce(factor))


def reduced(ink: np.ndarray, factor: int) -> np.ndarray:
    """`ink` made `factor` times smaller by the maximum of each block, so that no stroke fades (1: as it is).

    Reshaping strokes costs the square of a crop's long side; reduced to WORK_SIDE it stays bounded.
    """
    if factor <= 1:
        return ink
    return _block_extreme(ink, factor, np.maximum, "constant")  # blank past the edges


def _block_extreme(values: np.ndarray, factor: int, extreme: np.ufunc, pad: str) -> np.ndarray:
    """`values` made `factor` times smaller by `extreme` (np.maximum or np.minimum) of each block, partial blocks
    at the edges padded by numpy's `pad` mode: the extreme of strided views, columns then rows (the same values as
    a 4-D reshape's, 2-4x faster)."""
    height, width = (math.ceil(side / factor) * factor for side in values.shape)
    padded = np.pad(values, ((0, height - values.shape[0]), (0, width - values.shape[1])), mode=pad)
    columns = extreme.reduce([padded[:, offset::factor] for offset in range(factor)])
    return extreme.reduce([columns[offset::factor] for offset in range(factor)])


def digit_ink(image: np.ndarray, name: str, dark_ink: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """The digit's ink (darker than the paper when `dark_ink`), cropped, at most WORK_SIDE a side; the ink map it
    was cropped from; and the extent of its marks there. The map is of a copy of the image at most COARSE_SIDE a
    side when the digit spans at least COARSE_EXTENT there (a drawing that fills its canvas: a quarter of the
    work or less), of the whole image otherwise (a small digit on a large page keeps its detail)."""
    coarse = math.ceil(max(image.shape[:2]) / COARSE_SIDE)
    if coarse > 1:
        ink = ink_map(_stroke_reduced(image, coarse, dark_ink), dark_ink)
        crop, extent = _cropped_digit(ink, name)
        if extent >= COARSE_EXTENT:
            return crop, ink, extent
    ink = ink_map(image, dark_ink)
    crop, extent = _cropped_digit(ink, name)
    return crop, ink, extent


def _stroke_reduced(image: np.ndarray, factor: int, dark_ink: bool) -> np.ndarray:
    """`image` made `factor` times smaller, each block halfway between its mean and its inkiest value: a pen
    thinner than a block keeps at least half its darkness (a block mean alone fades it, and the digit breaks)."""
    if image.ndim == 3:
        return np.stack([_stroke_reduced(image[..., c], factor, dark_ink) for c in range(image.shape[2])], axis=2)
    inkiest = _block_extreme(image, factor, np.minimum if dark_ink else np.maximum, "edge")
    return (_mean_reduced(image, factor) + inkiest) / 2


def _cropped_digit(ink: np.ndarray, name: str) -> tuple[np.ndarray, int]:
    """The digit's ink cropped and reduced to at most WORK_SIDE a side, and its extent before that."""
    rows, cols = digit_region(ink, name)
    extent = max(rows.stop - rows.start, cols.stop - cols.start)
    return reduced(ink[rows, cols], math.ceil(extent / WORK_SIDE)), extent


def to_mnist(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Any image of one digit -> float32 28 x 28 in [0, 1], light ink on dark, prepared as MNIST's digits were."""
    return _as_mnist(digit_ink(image, name, has_dark_ink(small_gray(image)))[0], name)


def readings(image: np.ndarray, name: str = "image") -> np.ndarray:
    """The ways to read an image of one digit, float32 K x 28 x 28 in [0, 1]: the digit as `to_mnist` prepares
    it and, when its marks span most of the image (a line across it, blots or a lit band beside the digit join
    them, or a blur spreads it), the whole image as well (`whole_image`). Predict takes the reading the model is
    surer of (`onnx_session.surest`)."""
    gray = small_gray(image)
    dark_ink = has_dark_ink(gray)
    crop, ink, extent = digit_ink(image, name, dark_ink)
    digit = _as_mnist(crop, name)
    if extent < WHOLE_FRAME * max(ink.shape):
        return digit[None]
    return np.stack([digit, whole_image(gray, dark_ink)])


def whole_image(gray: np.ndarray, dark_ink: bool) -> np.ndarray:
    """The whole image (`small_gray`'s copy) fitted into 28 x 28 as it is, light ink on dark and stretched to
    [0, 1]: no local background estimate, which takes the core out of wide or blurred strokes (lighting is left to
    the model, whose input is standardized)."""
    if dark_ink:
        gray = 1 - gray
    low = float(gray.min())
    gray = ((gray - low) / max(float(gray.max()) - low, 1e-6)).astype(np.float32)
    side = max(gray.shape)
    square = np.zeros((side, side), dtype=np.float32)
    top, left = (side - gray.shape[0]) // 2, (side - gray.shape[1]) // 2
    square[top:top + gray.shape[0], left:left + gray.shape[1]] = gray
    return np.asarray(Image.fromarray(square).resize((CANVAS, CANVAS), Image.BOX if side > CANVAS else
                                                     Image.BILINEAR), dtype=np.float32)


def _as_mnist(crop: np.ndarray, name: str) -> np.ndarray:
    """The digit's cropped ink prepared as MNIST's digits were: strokes to MNIST's width, fitted into 20 x 20
    keeping the aspect ratio, contrast stretched, centred by mass in 28 x 28."""
    crop = normalize_stroke(crop, BOX / max(crop.shape))
    kept_rows, kept_cols = np.nonzero(crop > MARK)
    if kept_rows.size == 0:
        raise PipelineError(f"{name}: no digit found (only faint marks)")
    return fit_mnist_box(crop[kept_rows.min():kept_rows.max() + 1, kept_cols.min():kept_cols.max() + 1])


def prepare_image(path: Path) -> np.ndarray:
    """A file on disk -> its `readings`, float32 K x 28 x 28 in [0, 1], ready for the exported model."""
    return readings(load_image(path), str(path))
