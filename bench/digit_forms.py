"""Real MNIST test digits redrawn in the forms people feed `predict`: pens, pages, lighting, files.

Each digit's strokes are traced (skeleton of the upscaled digit; the outline of an area the writer
filled solid, as a pen would draw it) and drawn again with a pen of a chosen width on a canvas of a
chosen size, then the form's paper, lighting or file format is applied. Used by
tests/test_predict_forms.py (a floor per form) and bench/predict_forms.py.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.morphology import skeletonize

SOLID = 2.5  # a disk this many times the digit's median stroke radius fits only in an area filled solid
REFERENCE = 280  # px a side, where the digit's stroke radius is measured (a skeleton's spurs vary with scale)


def _upscaled(digit: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(digit).resize((size, size), Image.BICUBIC)) > 127


def solid_radius(digit: np.ndarray) -> float | None:
    """The radius, as a share of the image's side, of a disk that fits in the digit only where it is filled solid;
    None when no such disk fits anywhere (most digits)."""
    return _solid_radius(np.ascontiguousarray(digit, dtype=np.uint8).tobytes(), digit.shape)


@functools.lru_cache(maxsize=4096)  # each form redraws the same digits: measured once per digit, not per form
def _solid_radius(pixels: bytes, shape: tuple[int, ...]) -> float | None:
    image = _upscaled(np.frombuffer(pixels, dtype=np.uint8).reshape(shape), REFERENCE)
    inside = ndimage.distance_transform_edt(image)
    radius = SOLID * float(np.median(inside[skeletonize(image)]))
    return radius / REFERENCE if inside.max() > radius else None


def strokes(shape: np.ndarray, radius: float | None) -> np.ndarray:
    """The lines a pen follows to redraw `shape` (a boolean image): its skeleton, except in areas filled solid
    (where a disk of `radius` px fits; None: there are none), which the pen outlines instead: the skeleton of a
    filled loop is a line, and a 9 whose loop was filled in would come back as a 7."""
    lines = np.zeros_like(shape)
    box = _box(shape, 2)
    if box is None:
        return lines
    shape = shape[box]
    trace = skeletonize(shape)
    if radius is not None:
        inside = ndimage.distance_transform_edt(shape)
        solid = shape & (ndimage.distance_transform_edt(inside <= radius) <= radius)  # the disks that fit only there
        trace = (trace & ~solid) | (solid & ~ndimage.binary_erosion(solid))
    lines[box] = trace
    return lines


def _box(image: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    """The bounding box of `image`'s nonzero pixels, `margin` pixels wider on each side within the image (None:
    there are none). The traces are computed inside it: the same bits as on the whole image, in a fraction of
    the time (a large page's digit leaves more than half of it empty)."""
    rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
    if rows.size == 0:
        return None
    return (slice(max(rows[0] - margin, 0), rows[-1] + margin + 1),
            slice(max(cols[0] - margin, 0), cols[-1] + margin + 1))


def pen_drawing(digit: np.ndarray, canvas: int, box: int, pen: float,
                offset: tuple[int, int] | None = None) -> np.ndarray:
    """The digit's strokes traced and drawn with a round pen `pen` pixels wide, its 20x20 box scaled to
    `box` pixels, on a `canvas` x `canvas` page (centred, or with its top-left at `offset`): ink in [0, 1]."""
    size = round(box * 28 / 20)
    share = solid_radius(digit)
    trace = strokes(_upscaled(digit, size), None if share is None else share * size)
    ink = np.zeros(trace.shape)
    box = _box(trace, int(np.ceil(pen / 2 + 0.5)) + 1)  # the pen's ink reaches no farther from its lines
    if box is not None:
        ink[box] = np.clip(pen / 2 + 0.5 - ndimage.distance_transform_edt(~trace[box]), 0, 1)
    top, left = offset if offset is not None else ((canvas - size) // 2, (canvas - size) // 2)
    page = np.zeros((canvas, canvas), dtype=np.float32)
    page[top:top + size, left:left + size] = ink[:canvas - top, :canvas - left]
    return page


def on_paper(ink: np.ndarray, paper: float | np.ndarray = 1.0, pen: float = 0.0) -> Image.Image:
    """Ink laid on paper: gray levels from `paper` (a level or an image) towards `pen`, as 8-bit."""
    gray = paper + (pen - paper) * ink
    return Image.fromarray(np.round(np.clip(gray, 0, 1) * 255).astype(np.uint8))


def as_jpeg(image: Image.Image, quality: int) -> Image.Image:
    """The image after a round trip through JPEG at `quality`."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def thin_pen(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A 4 px pen on a 1000 px white page (a drawing app or a photo of paper)."""
    return on_paper(pen_drawing(digit, 1000, 700, 4))


def pens_on_large_page(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A pen from 5 to 15 px wide (drawn per digit) on a 1000 px white page, the digit filling most of it."""
    return on_paper(pen_drawing(digit, 1000, 700, float(rng.uniform(5, 15))))


def thin_pen_small(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A 2 px pen on a 300 px page."""
    return on_paper(pen_drawing(digit, 300, 200, 2))


def thick_pen(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A marker: 24 px strokes on a 280 px page."""
    return on_paper(pen_drawing(digit, 280, 180, 24))


def inverted(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """White chalk on a black board, 400 px."""
    return on_paper(pen_drawing(digit, 400, 260, 14), paper=0.05, pen=0.95)


def small_off_centre(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A 100 px digit somewhere on a 1200 px page, away from the centre."""
    top, left = (int(v) for v in rng.integers(40, 1200 - 180, size=2))
    return on_paper(pen_drawing(digit, 1200, 100, 5, offset=(top, left)))


def low_contrast(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Gray pencil on gray paper: ink at 0.62 on paper at 0.82 (a hazy, faded scan)."""
    return on_paper(pen_drawing(digit, 300, 200, 10), paper=0.82, pen=0.62)


def faint_with_specks(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Light pencil (ink at 0.72 on white) on a 300 px page, with a dark blot 9 px across and a few black
    specks beside the digit: the blot and specks are the darkest marks on the page, the digit is not."""
    ink = pen_drawing(digit, 300, 180, 8)
    ys, xs = np.mgrid[0:300, 0:300]
    corner = rng.integers(0, 4)  # the blot in a corner the digit leaves free
    cy, cx = (30 if corner < 2 else 270), (30 if corner % 2 == 0 else 270)
    blot = np.clip(5 - np.hypot(ys - cy, xs - cx), 0, 1)
    specks = np.zeros_like(ink)
    for y, x in rng.integers(5, 295, size=(6, 2)):
        specks[y:y + 2, x:x + 2] = 1.0
    specks[ink > 0] = 0
    return on_paper(np.maximum(0.28 * ink, np.maximum(blot, specks)), pen=0.0)


def gradient(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Uneven lighting: paper from 0.45 to 1.0 across the page in a random direction."""
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:400, 0:400] / 399
    ramp = (np.cos(angle) * (xs - 0.5) + np.sin(angle) * (ys - 0.5)) / np.sqrt(0.5) + 0.5
    return on_paper(pen_drawing(digit, 400, 260, 10), paper=0.45 + 0.55 * np.clip(ramp, 0, 1), pen=0.1)


def jpeg(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A photo's file: 8 px pen, 300 px, JPEG quality 25."""
    return as_jpeg(on_paper(pen_drawing(digit, 300, 200, 8)), quality=25)


def colour_pen(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A blue ballpoint (30, 70, 200) on cream paper (250, 244, 225), RGB, 500 px, 5 px pen."""
    ink = pen_drawing(digit, 500, 340, 5)[..., None]
    paper, pen = np.array([250, 244, 225]) / 255, np.array([30, 70, 200]) / 255
    return Image.fromarray(np.round((paper + (pen - paper) * ink) * 255).astype(np.uint8), "RGB")


@dataclass(frozen=True)
class Form:
    """One way people hand `predict` a digit: how it is made and the file type it travels in."""

    name: str
    make: Callable[[np.ndarray, np.random.Generator], Image.Image]
    suffix: str = ".png"


FORMS = (
    Form("thin pen, 1000 px", thin_pen),
    Form("5-15 px pens, 1000 px", pens_on_large_page),
    Form("thin pen, 300 px", thin_pen_small),
    Form("thick pen", thick_pen),
    Form("inverted", inverted),
    Form("small, off-centre", small_off_centre),
    Form("low contrast", low_contrast),
    Form("faint, with specks", faint_with_specks),
    Form("gradient", gradient),
    Form("JPEG q25", jpeg, ".jpg"),
    Form("colour pen", colour_pen),
)
