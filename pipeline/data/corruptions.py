"""Common corruptions of digit images, vectorized over a batch: the robustness suite and training's augmentations.

Every corruption takes float pixels N x 1 x 28 x 28 in [0, 1] (light ink on dark, as MNIST) and a severity
`level`, and returns new pixels in [0, 1]; the randomness (a line's angle, the noise) is drawn per image from
`generator` (None: torch's global generator, which training seeds per epoch).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Corruption = Callable[[torch.Tensor, float, "torch.Generator | None"], torch.Tensor]


def _rand(x: torch.Tensor, *shape: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype)


def _coordinates(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres as rows and columns, shaped to broadcast against N x 1 x H x W."""
    height, width = x.shape[-2:]
    rows = torch.arange(height, device=x.device, dtype=x.dtype).view(1, 1, height, 1)
    cols = torch.arange(width, device=x.device, dtype=x.dtype).view(1, 1, 1, width)
    return rows, cols


# lighting
def offset(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Every pixel brighter by `level`: a grey background."""
    return (x + level).clamp_(0, 1)


def low_contrast(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The range squeezed to `level` around mid-grey."""
    return x * level + (1 - level) / 2


def gradient(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A linear ramp of light from 0 to `level` across the image, in a random direction per image."""
    rows, cols = _coordinates(x)
    angle = _rand(x, len(x), 1, 1, 1, generator=generator) * 2 * math.pi
    ramp = torch.cos(angle) * cols + torch.sin(angle) * rows
    low = ramp.amin(dim=(2, 3), keepdim=True)
    ramp = (ramp - low) / (ramp.amax(dim=(2, 3), keepdim=True) - low)
    return (x + level * ramp).clamp_(0, 1)


def fog(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A smooth random haze up to `level`: 4 x 4 random values, upsampled."""
    haze = F.interpolate(_rand(x, len(x), 1, 4, 4, generator=generator), size=x.shape[-2:], mode="bicubic",
                         align_corners=False)
    return (x + level * haze.clamp_(0, 1)).clamp_(0, 1)


def invert(x: torch.Tensor, level: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dark ink on light paper."""
    return 1 - x


def invert_sides(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The `level` leftmost and rightmost columns inverted: white bands at the sides."""
    band = max(1, int(level))
    out = x.clone()
    out[..., :band] = 1 - x[..., :band]
    out[..., -band:] = 1 - x[..., -band:]
    return out


# noise
def gaussian_noise(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Additive Gaussian noise of standard deviation `level`."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + level * noise).clamp_(0, 1)


def shot_noise(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Poisson noise: `level` photons at full light, on a dim floor so that the background is noisy too."""
    light = (0.1 + 0.9 * x) * level
    return (torch.poisson(light, generator=generator) / level - 0.1).clamp_(0, 1)


def salt_and_pepper(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A share `level` of the pixels set to black or white, half each."""
    draw = _rand(x, *x.shape, generator=generator)
    out = x.clone()
    out[draw < level / 2] = 0
    out[(draw >= level / 2) & (draw < level)] = 1
    return out


# blur
def _gaussian_kernel(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    radius = max(1, math.ceil(2.5 * sigma))
    steps = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    kernel = torch.exp(-(steps**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def gaussian_blur(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A Gaussian blur of standard deviation `level` pixels (separable, edges repeated)."""
    kernel = _gaussian_kernel(level, x.device, x.dtype)
    radius = len(kernel) // 2
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))


def _translated(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Each image moved by its own (dy, dx) pixels, bilinear, with a dark border."""
    height, width = x.shape[-2:]
    theta = torch.zeros(len(x), 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2], theta[:, 1, 2] = -2 * dx / width, -2 * dy / height
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def motion_blur(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The image averaged along a `level`-pixel track at a random angle per image."""
    angle = _rand(x, len(x), generator=generator) * math.pi
    steps = torch.linspace(-level / 2, level / 2, max(2, round(level)) + 1, device=x.device, dtype=x.dtype)
    return torch.stack([_translated(x, t * torch.sin(angle), t * torch.cos(angle)) for t in steps]).mean(0)


def glass_blur(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each pixel taken from a random neighbour up to `level` pixels away, then a light blur."""
    n, _, height, width = x.shape
    reach = int(level)
    jitter = torch.randint(-reach, reach + 1, (2, n, 1, height, width), generator=generator, device=x.device)
    rows, cols = _coordinates(x)
    src_rows = (rows.long() + jitter[0]).clamp_(0, height - 1)
    src_cols = (cols.long() + jitter[1]).clamp_(0, width - 1)
    flat = x.reshape(n, 1, -1)
    moved = flat.gather(2, (src_rows * width + src_cols).reshape(n, 1, -1)).view_as(x)
    return gaussian_blur(moved, 0.7)


# occlusion
def _segment_distance(rows: torch.Tensor, cols: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Each pixel's distance to the segment from `start` to `end` (N x 2 as row, column), N x 1 x H x W."""
    sy, sx = start[:, 0].view(-1, 1, 1, 1), start[:, 1].view(-1, 1, 1, 1)
    ey, ex = end[:, 0].view(-1, 1, 1, 1), end[:, 1].view(-1, 1, 1, 1)
    dy, dx = ey - sy, ex - sx
    along = (((rows - sy) * dy + (cols - sx) * dx) / (dy**2 + dx**2).clamp_min(1e-6)).clamp(0, 1)
    return torch.hypot(rows - sy - along * dy, cols - sx - along * dx)


def _stroke(distance: torch.Tensor, width: float) -> torch.Tensor:
    """Ink of a stroke `width` pixels wide from the distance to its centre line (anti-aliased edge)."""
    return (width / 2 + 0.5 - distance).clamp_(0, 1)


def _random_points(x: torch.Tensor, count: int, generator: torch.Generator | None) -> torch.Tensor:
    """`count` random points per image inside it, N x count x 2 (row, column)."""
    return _rand(x, len(x), count, 2, generator=generator) * (x.shape[-1] - 1)


def _edge_points(x: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A random chord of the image per image: a point on the left edge and one on the right, N x 2 each."""
    side = x.shape[-1] - 1
    heights = _rand(x, len(x), 2, generator=generator) * side
    zeros, sides = torch.zeros_like(heights[:, 0]), torch.full_like(heights[:, 0], side)
    return torch.stack([heights[:, 0], zeros], 1), torch.stack([heights[:, 1], sides], 1)


def line(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A straight ink line `level` pixels wide across the image, from the left edge to the right."""
    rows, cols = _coordinates(x)
    start, end = _edge_points(x, generator)
    return torch.maximum(x, _stroke(_segment_distance(rows, cols, start, end), level))


def dotted_line(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A dotted ink line across: dots `level` pixels wide, a dot's width apart."""
    rows, cols = _coordinates(x)
    start, end = _edge_points(x, generator)
    dots = torch.remainder(cols, 2 * level) < level
    return torch.maximum(x, _stroke(_segment_distance(rows, cols, start, end), level) * dots)


def zigzag(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A zig-zag ink line of 4 segments through random points, `level` pixels wide."""
    rows, cols = _coordinates(x)
    points = _random_points(x, 5, generator)
    distance = torch.stack([_segment_distance(rows, cols, points[:, i], points[:, i + 1]) for i in range(4)]).amin(0)
    return torch.maximum(x, _stroke(distance, level))


def blots(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """`level` round ink blots of 1.5 to 3 px radius at random places (mud spatter)."""
    rows, cols = _coordinates(x)
    count = int(level)
    centres = _random_points(x, count, generator)
    radii = 1.5 + 1.5 * _rand(x, len(x), count, generator=generator)
    ink = torch.zeros_like(x)
    for i in range(count):
        distance = torch.hypot(rows - centres[:, i, 0].view(-1, 1, 1, 1), cols - centres[:, i, 1].view(-1, 1, 1, 1))
        ink = torch.maximum(ink, (radii[:, i].view(-1, 1, 1, 1) + 0.5 - distance).clamp_(0, 1))
    return torch.maximum(x, ink)


def stripes(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Every `level`-th row (or column, at random per image) erased: the digit seen through blinds."""
    rows, cols = _coordinates(x)
    across = _rand(x, len(x), 1, 1, 1, generator=generator) < 0.5
    phase = torch.floor(_rand(x, len(x), 1, 1, 1, generator=generator) * level)
    erased = torch.where(across, torch.remainder(rows + phase, level) < 1, torch.remainder(cols + phase, level) < 1)
    return x * ~erased


# outline
def outline(x: torch.Tensor, level: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Only the strokes' edges: the Sobel gradient's magnitude, scaled so that each image's strongest is 1."""
    sobel = torch.tensor([[1, 0, -1], [2, 0, -2], [1, 0, -1]], device=x.device, dtype=x.dtype)
    kernels = torch.stack([sobel, sobel.T]).unsqueeze(1)
    edges = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels).square().sum(1, keepdim=True).sqrt()
    return (edges / edges.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)).clamp_(0, 1)


# geometry
def _affine(x: torch.Tensor, matrix: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """Each image resampled through its own 2 x 2 `matrix` about the centre (N x 2 x 2), then moved by `shift`
    (N x 2, in pixels, x then y), bilinear with a dark border."""
    theta = torch.zeros(len(x), 2, 3, device=x.device, dtype=x.dtype)
    theta[:, :, :2] = torch.linalg.inv(matrix)
    if shift is not None:
        theta[:, :, 2] = -(theta[:, :, :2] @ (2 * shift / x.shape[-1]).unsqueeze(-1)).squeeze(-1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _signs(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.where(_rand(x, len(x), generator=generator) < 0.5, -1.0, 1.0).to(x.dtype)


def rotate(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotated by `level` degrees, clockwise or anticlockwise at random per image."""
    angle = math.radians(level) * _signs(x, generator)
    cos, sin = torch.cos(angle), torch.sin(angle)
    return _affine(x, torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1))


def scale(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scaled by `level` about the centre."""
    return _affine(x, torch.eye(2, device=x.device, dtype=x.dtype).expand(len(x), 2, 2) * level)


def shear(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sheared horizontally by `level`, to the left or right at random per image."""
    matrix = torch.eye(2, device=x.device, dtype=x.dtype).repeat(len(x), 1, 1)
    matrix[:, 0, 1] = level * _signs(x, generator)
    return _affine(x, matrix)


def shift(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Moved `level` pixels in a random direction per image."""
    angle = _rand(x, len(x), generator=generator) * 2 * math.pi
    identity = torch.eye(2, device=x.device, dtype=x.dtype).expand(len(x), 2, 2)
    return _affine(x, identity, level * torch.stack([torch.cos(angle), torch.sin(angle)], 1))


# what training's augmentations draw from (`corrupt_fraction`), each with the range of its level; the others are
# held out. Offset, contrast and inversion are not here: the standardized input is invariant to them.
TRAINING: dict[Corruption, tuple[float, float]] = {
    gradient: (0.2, 1.0),
    gaussian_noise: (0.05, 0.45),
    salt_and_pepper: (0.02, 0.2),
    gaussian_blur: (0.5, 1.5),
    line: (1.0, 2.5),
    invert_sides: (2, 8),
    shift: (1.0, 3.0),
    scale: (0.6, 1.0),
}


def random_corruptions(pixels: torch.Tensor, fraction: float) -> torch.Tensor:
    """A share `fraction` of the images, drawn at random, each under one corruption of TRAINING drawn at random;
    each corruption's images share one level, drawn from its range (torch's global generator throughout)."""
    chosen = torch.rand(len(pixels), device=pixels.device) < fraction
    kinds = torch.randint(0, len(TRAINING), (len(pixels),), device=pixels.device)
    levels = torch.rand(len(TRAINING)).tolist()
    out = pixels.clone()
    for number, (corrupt, (low, high)) in enumerate(TRAINING.items()):
        group = torch.nonzero(chosen & (kinds == number)).squeeze(1)
        if len(group):
            out[group] = corrupt(pixels[group], low + (high - low) * levels[number], None)
    return out


@dataclass(frozen=True)
class SuiteEntry:
    """One corruption of the suite at its fixed severity."""

    name: str
    family: str
    corrupt: Corruption
    level: float

    @property
    def trained(self) -> bool:
        """Whether training's augmentations apply this kind of corruption (else it is held out)."""
        return self.corrupt in TRAINING


SUITE: tuple[SuiteEntry, ...] = (
    SuiteEntry("offset", "lighting", offset, 0.5),
    SuiteEntry("low_contrast", "lighting", low_contrast, 0.3),
    SuiteEntry("gradient", "lighting", gradient, 0.8),
    SuiteEntry("fog", "lighting", fog, 0.7),
    SuiteEntry("invert", "lighting", invert, 1.0),
    SuiteEntry("invert_sides", "lighting", invert_sides, 6),
    SuiteEntry("gaussian_noise", "noise", gaussian_noise, 0.35),
    SuiteEntry("shot_noise", "noise", shot_noise, 4.0),
    SuiteEntry("salt_and_pepper", "noise", salt_and_pepper, 0.17),
    SuiteEntry("gaussian_blur", "blur", gaussian_blur, 1.2),
    SuiteEntry("motion_blur", "blur", motion_blur, 6.0),
    SuiteEntry("glass_blur", "blur", glass_blur, 1),
    SuiteEntry("line", "occlusion", line, 2.0),
    SuiteEntry("dotted_line", "occlusion", dotted_line, 2.0),
    SuiteEntry("zigzag", "occlusion", zigzag, 2.0),
    SuiteEntry("blots", "occlusion", blots, 4),
    SuiteEntry("stripes", "occlusion", stripes, 4),
    SuiteEntry("outline", "outline", outline, 1.0),
    SuiteEntry("rotate", "geometry", rotate, 23.0),
    SuiteEntry("scale", "geometry", scale, 0.7),
    SuiteEntry("shear", "geometry", shear, 0.4),
    SuiteEntry("shift", "geometry", shift, 3.0),
)
