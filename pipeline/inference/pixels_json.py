"""A request's JSON body `{"pixels": [[...], ...]}` read as a gray image, and the error a bad request gets."""

from __future__ import annotations

import json

import numpy as np

from pipeline.inference.digit_image import scaled_by_range

USAGE = 'JSON body must be {"pixels": [[...], ...]}: rows of numbers of one 2-D image'


class RequestError(Exception):
    """A bad request: its HTTP status and a one-line reason for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def pixels_from_json(body: bytes, max_pixels: int, max_bytes: int) -> np.ndarray:
    """`{"pixels": [[...], ...]}` -> a float gray image in [0, 1] (at most `max_bytes` of JSON are parsed)."""
    if len(body) > max_bytes:
        raise RequestError(413, f"JSON body of {len(body):,} bytes is too large (at most {max_bytes:,}; "
                                "send a large image as PNG)")
    try:
        payload = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise RequestError(400, "JSON nested too deeply: " + USAGE) from None
    except ValueError as exc:  # malformed JSON, NaN or Infinity, bytes that are not UTF-8
        raise RequestError(400, f"malformed JSON ({str(exc)[:80]}): {USAGE}") from None
    rows = payload.get("pixels") if isinstance(payload, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(row, list) and row for row in rows):
        raise RequestError(400, USAGE)
    if len(rows) * max(len(row) for row in rows) > max_pixels:
        raise RequestError(413, f"'pixels' holds more than {max_pixels:,} values")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for row in rows for v in row):
        raise RequestError(400, f"'pixels' must hold numbers only: {USAGE}")
    try:
        pixels = np.asarray(rows, dtype=np.float64)
    except (ValueError, OverflowError):  # ragged rows; an integer too large for a float
        raise RequestError(400, "'pixels' must be rows of equal length of numbers a float can hold") from None
    if not np.isfinite(pixels).all():
        raise RequestError(400, "'pixels' must be finite numbers")
    return scaled_by_range(pixels)
