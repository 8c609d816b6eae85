"""Drawn non-digits for training: letters, symbols, shapes and scribbles, placed as MNIST placed its digits.

Training pushes the model's answer on these towards "no digit in particular" (a flat distribution, outlier
exposure), so that predict can say when an image is not a digit. Everything is drawn here from seeded
strokes, or typed in the font Pillow carries (no system fonts, which differ between machines), then placed
as MNIST placed its digits (`common.mnist_box.fit_mnist_box`, as predict does), with pens as wide as MNIST's.
Shapes that are digits to any reader (a ring is a 0, a lone bar a 1) are not drawn; the benchmark of
non-digits (`bench/not_digits.py`) draws its own, different ones, none of them from this module.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from pipeline.common.errors import PipelineError
from pipeline.common.mnist_box import fit_mnist_box

Stroke = list[tuple[float, float]]
CANVAS_PX = 96  # drawn at this size, then prepared down to 28 x 28 as predict does
NON_DIGITS, SEED = 12_000, 20_260_905  # how many the draw stage draws, always the same ones


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, stop: float, points: int = 12) -> Stroke:
    """Points along an ellipse from `start` to `stop` degrees (0 at the right, clockwise in image rows)."""
    angles = np.radians(np.linspace(start, stop, points))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


# letters and symbols as strokes in a unit box (x right, y down); none that is a digit as people write them
# (O, I and l; B, an 8 with a bar; g and q, 9s with a hook or a stem)
GLYPHS: dict[str, list[Stroke]] = {
    "A": [[(0, 1), (0.5, 0), (1, 1)], [(0.22, 0.6), (0.78, 0.6)]],
    "C": [_arc(0.5, 0.5, 0.5, 0.5, 40, 320)],
    "D": [[(0, 0), (0, 1)], [(0, 0), (0.5, 0), *_arc(0.5, 0.5, 0.5, 0.5, -90, 90), (0, 1)]],
    "E": [[(1, 0), (0, 0), (0, 1), (1, 1)], [(0, 0.5), (0.7, 0.5)]],
    "F": [[(1, 0), (0, 0), (0, 1)], [(0, 0.5), (0.7, 0.5)]],
    "G": [[*_arc(0.5, 0.5, 0.5, 0.5, -40, -360), (0.55, 0.5)]],
    "H": [[(0, 0), (0, 1)], [(1, 0), (1, 1)], [(0, 0.5), (1, 0.5)]],
    "J": [[(0.3, 0), (1, 0)], [(0.7, 0), (0.7, 0.75), *_arc(0.4, 0.75, 0.3, 0.25, 0, 180)]],
    "K": [[(0, 0), (0, 1)], [(1, 0), (0, 0.6)], [(0.3, 0.4), (1, 1)]],
    "L": [[(0, 0), (0, 1), (0.8, 1)]],
    "M": [[(0, 1), (0, 0), (0.5, 0.6), (1, 0), (1, 1)]],
    "N": [[(0, 1), (0, 0), (1, 1), (1, 0)]],
    "P": [[(0, 1), (0, 0), (0.6, 0), *_arc(0.6, 0.25, 0.4, 0.25, -90, 90), (0, 0.5)]],
    "Q": [_arc(0.5, 0.5, 0.5, 0.5, 0, 360), [(0.6, 0.7), (1.05, 1.1)]],
    "R": [[(0, 1), (0, 0), (0.6, 0), *_arc(0.6, 0.25, 0.4, 0.25, -90, 90), (0, 0.5)], [(0.45, 0.5), (1, 1)]],
    "S": [_arc(0.5, 0.25, 0.45, 0.25, -30, -270) + _arc(0.5, 0.75, 0.45, 0.25, -90, 150)],
    "T": [[(0, 0), (1, 0)], [(0.5, 0), (0.5, 1)]],
    "U": [[(0, 0), *_arc(0.5, 0.5, 0.5, 0.5, 180, 0), (1, 0)]],
    "V": [[(0, 0), (0.5, 1), (1, 0)]],
    "W": [[(0, 0), (0.25, 1), (0.5, 0.35), (0.75, 1), (1, 0)]],
    "X": [[(0, 0), (1, 1)], [(1, 0), (0, 1)]],
    "Y": [[(0, 0), (0.5, 0.5), (1, 0)], [(0.5, 0.5), (0.5, 1)]],
    "Z": [[(0, 0), (1, 0), (0, 1), (1, 1)]],
    "a": [_arc(0.45, 0.7, 0.45, 0.3, 0, 360), [(0.9, 0.35), (0.9, 1)]],
    "a, two storeys": [[*_arc(0.45, 0.25, 0.4, 0.22, 200, 360), (0.85, 1)], _arc(0.45, 0.72, 0.42, 0.26, 0, 360)],
    "b": [[(0, 0), (0, 1)], _arc(0.45, 0.7, 0.45, 0.3, 0, 360)],
    "e": [[(0, 0.55), (1, 0.55), *_arc(0.5, 0.55, 0.5, 0.45, 0, -300)]],
    "f": [[*_arc(0.75, 0.2, 0.25, 0.2, 0, -180), (0.5, 1)], [(0.2, 0.45), (0.85, 0.45)]],
    "h": [[(0, 0), (0, 1)], [(0, 0.65), *_arc(0.5, 0.65, 0.5, 0.3, 180, 360), (1, 1)]],
    "k": [[(0, 0), (0, 1)], [(0.8, 0.4), (0, 0.75), (0.8, 1)]],
    "m": [[(0, 1), (0, 0.4), *_arc(0.25, 0.55, 0.25, 0.2, 180, 360), (0.5, 1)],
          [(0.5, 0.55), *_arc(0.75, 0.55, 0.25, 0.2, 180, 360), (1, 1)]],
    "n": [[(0, 1), (0, 0.4), *_arc(0.5, 0.6, 0.5, 0.25, 180, 360), (1, 1)]],
    "r": [[(0, 1), (0, 0.3)], [(0, 0.6), *_arc(0.6, 0.55, 0.6, 0.25, 180, 300)]],
    "t": [[(0.4, 0), (0.4, 0.9), (0.7, 1), (0.9, 0.9)], [(0, 0.3), (0.85, 0.3)]],
    "w": [[(0, 0.3), (0.25, 1), (0.5, 0.5), (0.75, 1), (1, 0.3)]],
    "x": [[(0, 0.3), (1, 1)], [(1, 0.3), (0, 1)]],
    "y": [[(0, 0), (0.5, 0.6)], [(1, 0), (0.3, 1)]],
    "+": [[(0.5, 0), (0.5, 1)], [(0, 0.5), (1, 0.5)]],
    "=": [[(0, 0.3), (1, 0.3)], [(0, 0.7), (1, 0.7)]],
    "#": [[(0.35, 0), (0.3, 1)], [(0.7, 0), (0.65, 1)], [(0, 0.35), (1, 0.35)], [(0, 0.68), (1, 0.68)]],
    "*": [[(0.5, 0), (0.5, 1)], [(0.07, 0.25), (0.93, 0.75)], [(0.93, 0.25), (0.07, 0.75)]],
    "%": [[(1, 0), (0, 1)], _arc(0.2, 0.2, 0.17, 0.17, 0, 360), _arc(0.8, 0.8, 0.17, 0.17, 0, 360)],
    "&": [[(1, 1), (0.2, 0.3), *_arc(0.4, 0.2, 0.22, 0.2, 180, 360), (0.1, 0.75),
           *_arc(0.35, 0.78, 0.25, 0.22, 180, 90), (0.95, 0.5)]],
    "@": [_arc(0.5, 0.5, 0.5, 0.5, 30, 360), _arc(0.5, 0.5, 0.22, 0.22, 0, 360)],
    "$": [_arc(0.5, 0.3, 0.4, 0.2, -30, -270) + _arc(0.5, 0.7, 0.4, 0.2, -90, 150), [(0.5, 0), (0.5, 1)]],
    "face": [_arc(0.5, 0.5, 0.5, 0.5, 0, 360), [(0.33, 0.35), (0.34, 0.35)], [(0.67, 0.35), (0.68, 0.35)],
             _arc(0.5, 0.55, 0.25, 0.2, 20, 160)],
    "circled +": [_arc(0.5, 0.5, 0.5, 0.5, 0, 360), [(0.5, 0.15), (0.5, 0.85)], [(0.15, 0.5), (0.85, 0.5)]],
    "?": [[*_arc(0.5, 0.25, 0.4, 0.25, 180, 450), (0.5, 0.75)], [(0.5, 0.92), (0.5, 1)]],
    "<": [[(1, 0), (0, 0.5), (1, 1)]],
    "check": [[(0, 0.6), (0.35, 1), (1, 0)]],
    "arrow": [[(0, 0.5), (1, 0.5)], [(0.65, 0.15), (1, 0.5), (0.65, 0.85)]],
}


def _glyph(rng: np.random.Generator) -> list[Stroke]:
    """A letter or symbol, stretched, slanted and wobbled as a hand draws it, or with serifs as a font has."""
    strokes = list(GLYPHS.values())[rng.integers(len(GLYPHS))]
    aspect = rng.uniform(0.6, 1.3)
    slant = rng.uniform(-0.3, 0.3)
    wobble = rng.uniform(0, 0.04)
    drawn = [[(x * aspect + slant * (1 - y) + rng.normal(0, wobble), y + rng.normal(0, wobble)) for x, y in stroke]
             for stroke in strokes]
    if rng.uniform() < 0.3:  # a short bar across each free end of a stroke
        ends = [end for stroke in drawn if stroke[0] != stroke[-1] for end in (stroke[0], stroke[-1])]
        drawn += [[(x - 0.12, y), (x + 0.12, y)] for x, y in ends]
    return drawn


# typed letters and symbols, in the font Pillow carries (Aileron), so the same on every machine; none of O o I l B g q
TYPED = "ACDEFGHJKLMNPQRSTUVWXYZabcdefhijkmnprstuvwxyz#%&@?$*+=<>"


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's own font at `size` px, loaded once per size."""
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise PipelineError("Pillow was built without FreeType, which drawing the non-digits needs")
    return font


def _typed(rng: np.random.Generator) -> np.ndarray:
    """A typed letter or symbol, slanted and turned a little, sometimes bolder: ink on a dark canvas."""
    font = _font(int(rng.integers(48, 72)))
    image = Image.new("L", (CANVAS_PX, CANVAS_PX), 0)
    ImageDraw.Draw(image).text((CANVAS_PX / 2, CANVAS_PX / 2), TYPED[rng.integers(len(TYPED))], font=font, fill=255,
                               anchor="mm")
    shear, angle = rng.uniform(-0.3, 0.3), rng.uniform(-0.25, 0.25)
    cos, sin = math.cos(angle), math.sin(angle)
    matrix = (cos, -sin + shear, CANVAS_PX / 2 * (1 - cos + sin - shear), sin, cos, CANVAS_PX / 2 * (1 - sin - cos))
    image = image.transform(image.size, Image.AFFINE, matrix, resample=Image.BILINEAR)
    if rng.uniform() < 0.3:
        image = image.filter(ImageFilter.MaxFilter(3))
    return np.asarray(image, dtype=np.float32) / 255


def _polygon(rng: np.random.Generator) -> list[Stroke]:
    """A closed polygon of 3 to 7 random corners, or an open one of 4 to 7 (three could draw a 7)."""
    closed = rng.uniform() < 0.6
    corners = [(rng.uniform(), rng.uniform()) for _ in range(rng.integers(3 if closed else 4, 8))]
    return [corners + corners[:1] if closed else corners]


def _scribble(rng: np.random.Generator) -> list[Stroke]:
    """A wandering line: a random walk whose direction turns smoothly, sometimes lifting the pen once."""
    strokes: list[Stroke] = []
    for _ in range(rng.integers(1, 3)):
        x, y, heading = rng.uniform(), rng.uniform(), rng.uniform(0, 2 * math.pi)
        turn, points = rng.uniform(-0.8, 0.8), [(x, y)]
        for _ in range(rng.integers(15, 45)):
            turn = 0.7 * turn + rng.normal(0, 0.6)
            heading += turn
            x, y = x + 0.08 * math.cos(heading), y + 0.08 * math.sin(heading)
            points.append((x, y))
        strokes.append(points)
    return strokes


def _hatching(rng: np.random.Generator) -> list[Stroke]:
    """Three to seven parallel strokes, sometimes crossed by a second set."""
    strokes: list[Stroke] = []
    for _ in range(1 if rng.uniform() < 0.6 else 2):
        angle, count = rng.uniform(0, math.pi), int(rng.integers(3, 8))
        dx, dy = math.cos(angle), math.sin(angle)
        for offset in np.linspace(-0.5, 0.5, count):
            cx, cy = 0.5 - dy * offset, 0.5 + dx * offset
            strokes.append([(cx - 0.5 * dx, cy - 0.5 * dy), (cx + 0.5 * dx, cy + 0.5 * dy)])
    return strokes


def _wave(rng: np.random.Generator) -> list[Stroke]:
    """A sine wave or a zig-zag of two to five periods, at any angle."""
    periods, angle = rng.uniform(2, 5), rng.uniform(0, math.pi)
    sharp = rng.uniform() < 0.5
    steps = int(periods * 2) + 1 if sharp else 60
    t = np.linspace(0, 1, steps)
    wave = (np.where(np.arange(steps) % 2 == 0, -1.0, 1.0) if sharp else np.sin(2 * math.pi * periods * t))
    amplitude = rng.uniform(0.1, 0.3)
    cos, sin = math.cos(angle), math.sin(angle)
    return [[(0.5 + (u - 0.5) * cos - amplitude * w * sin, 0.5 + (u - 0.5) * sin + amplitude * w * cos)
             for u, w in zip(t, wave, strict=True)]]


def _dots(rng: np.random.Generator) -> list[Stroke]:
    """Four to twelve scattered dots."""
    return [[(x, y), (x + 0.01, y)] for x, y in rng.uniform(size=(rng.integers(4, 13), 2))]


FAMILIES: dict[str, Callable[[np.random.Generator], list[Stroke]]] = {
    "letters and symbols": _glyph, "polygons": _polygon, "scribbles": _scribble, "hatching": _hatching,
    "waves": _wave, "dots": _dots,
}
TYPED_SHARE = 0.3  # of all non-digits, typed (the FAMILIES share the rest by WEIGHTS)
WEIGHTS = np.array([0.45, 0.15, 0.15, 0.1, 0.1, 0.05])  # letters and symbols first: the likeliest non-digits


def draw(strokes: list[Stroke], rng: np.random.Generator) -> np.ndarray:
    """Strokes in any unit box drawn with a random pen on a dark canvas, rotated a little: float ink in [0, 1]."""
    points = np.array([p for stroke in strokes for p in stroke])
    low, span = points.min(0), max(float(np.ptp(points, 0).max()), 1e-3)
    angle = rng.uniform(-0.25, 0.25)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    margin = 0.15 * CANVAS_PX
    image = Image.new("L", (CANVAS_PX, CANVAS_PX), 0)
    pen = ImageDraw.Draw(image)
    width = int(rng.integers(4, 13))  # 1.2 to 3.6 px once fitted into MNIST's box, as its pens
    for stroke in strokes:
        xy = ((np.array(stroke) - low) / span - 0.5) @ rotation.T * (CANVAS_PX - 2 * margin) + CANVAS_PX / 2
        pen.line([tuple(p) for p in xy], fill=255, width=width, joint="curve")
        if len(xy) == 2 and np.allclose(xy[0], xy[1], atol=1.5):
            pen.ellipse([*(xy[0] - width), *(xy[0] + width)], fill=255)
    return np.asarray(image, dtype=np.float32) / 255


def draw_non_digits(count: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """`count` non-digits, uint8 N x 28 x 28 as MNIST stores digits, and the index in FAMILIES of each
    (len(FAMILIES): typed); the same for the same seed."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, 28, 28), dtype=np.uint8)
    weights = np.append(WEIGHTS / WEIGHTS.sum() * (1 - TYPED_SHARE), TYPED_SHARE)
    families = rng.choice(len(weights), size=count, p=weights)  # the last: typed
    makers = list(FAMILIES.values())
    for index, family in enumerate(families):
        ink = _typed(rng) if family == len(makers) else draw(makers[family](rng), rng)
        rows, cols = np.nonzero(ink > 0.1)
        crop = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        images[index] = np.round(fit_mnist_box(crop) * 255).astype(np.uint8)
    return images, families
