"""The HTTP side of `serve`: a drawing page and POST /predict, on the standard library's threaded server.

POST /predict takes an image (any Content-Type image/*, or application/octet-stream), a form upload
(multipart/form-data, the first file) or JSON `{"pixels": [[...], ...]}` (gray levels, rows of a
2-D image, 0-1 or 0-255), and answers `{"label": "7", "probabilities": {"0": ..., ..., "9": ...}}`.
Every bad request gets a 4xx JSON `{"error": "..."}` and the server goes on serving.
"""

from __future__ import annotations

import io
import json
import logging
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common.errors import PipelineError
from pipeline.export.onnx_session import run_logits
from pipeline.inference.digit_image import load_image, scaled_by_range, to_mnist
from pipeline.inference.prediction import softmax

log = logging.getLogger("serve")
PAGE = Path(__file__).with_name("draw_page.html")
MAX_BODY = 10 * 1024 * 1024
MAX_PIXELS = 4_000_000  # a request's image, decoded (a small file can hold a huge, blank image)


class RequestError(Exception):
    """A bad request: its HTTP status and a one-line reason for the client."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def pixels_from_json(body: bytes) -> np.ndarray:
    """`{"pixels": [[...], ...]}` -> a float gray image in [0, 1]."""
    try:
        payload = json.loads(body)
        pixels = np.asarray(payload["pixels"], dtype=np.float64)
    except (ValueError, TypeError, KeyError):
        raise RequestError(HTTPStatus.BAD_REQUEST,
                           'JSON body must be {"pixels": [[...], ...]}: rows of numbers of one 2-D image') from None
    if pixels.ndim != 2 or min(pixels.shape) < 1 or pixels.size > MAX_PIXELS or not np.isfinite(pixels).all():
        raise RequestError(HTTPStatus.BAD_REQUEST, f"'pixels' must be a 2-D array of finite numbers, got shape "
                                                   f"{list(pixels.shape)}")
    return scaled_by_range(pixels)


def image_from_multipart(content_type: str, body: bytes) -> np.ndarray:
    """The first file of a multipart/form-data upload, decoded."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    for part in message.iter_parts():
        if part.get_filename() is not None:
            return load_image(io.BytesIO(part.get_payload(decode=True) or b""), "uploaded file", MAX_PIXELS)
    raise RequestError(HTTPStatus.BAD_REQUEST, "multipart/form-data upload has no file part")


def read_digit(content_type: str, body: bytes) -> np.ndarray:
    """The request body as an image, by its Content-Type."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json":
        return pixels_from_json(body)
    if kind == "multipart/form-data":
        return image_from_multipart(content_type, body)
    if kind.startswith("image/") or kind == "application/octet-stream":
        return load_image(io.BytesIO(body), "request body", MAX_PIXELS)
    raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                       f"Content-Type {kind or '(none)'} is not accepted: send image/*, multipart/form-data or "
                       "application/json")


def predict_digit(session: Any, classes: list[str], image: np.ndarray) -> dict[str, Any]:
    """The label and every class's probability for one image."""
    probs = softmax(run_logits(session, to_mnist(image, "the image")[None, None]))[0]
    return {"label": classes[int(probs.argmax())],
            "probabilities": {name: round(float(p), 6) for name, p in zip(classes, probs, strict=True)}}


def make_handler(session: Any, classes: list[str]) -> type[BaseHTTPRequestHandler]:
    """A request handler bound to one ONNX session."""
    page = PAGE.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        server_version = "mnist-serve"

        def send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def send_json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
            self.send(status, json.dumps(payload).encode(), "application/json")

        def do_GET(self) -> None:
            if self.path.split("?")[0] in ("/", "/index.html"):
                self.send(HTTPStatus.OK, page, "text/html; charset=utf-8")
            else:
                self.send_json(HTTPStatus.NOT_FOUND, {"error": f"no page {self.path}; the drawing page is /"})

        def do_POST(self) -> None:
            try:
                if self.path.split("?")[0] != "/predict":
                    raise RequestError(HTTPStatus.NOT_FOUND, f"no endpoint {self.path}; POST to /predict")
                self.send_json(HTTPStatus.OK, predict_digit(session, classes, self.read_image()))
            except RequestError as exc:
                self.send_json(exc.status, {"error": str(exc)})
            except PipelineError as exc:
                self.send_json(HTTPStatus.UNPROCESSABLE_ENTITY, {"error": str(exc)})

        def read_image(self) -> np.ndarray:
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                raise RequestError(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
            if int(length) > MAX_BODY:
                self.close_connection = True  # the unread body is not drained
                raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                   f"body of {int(length):,} bytes is too large (at most {MAX_BODY:,})")
            body = self.rfile.read(int(length))
            if not body:
                raise RequestError(HTTPStatus.BAD_REQUEST, "empty body: send an image or JSON pixels")
            return read_digit(self.headers.get("Content-Type", ""), body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    return Handler


def make_server(session: Any, classes: list[str], host: str, port: int) -> ThreadingHTTPServer:
    """A threaded HTTP server for the page and the endpoint (port 0 picks a free port)."""
    server = ThreadingHTTPServer((host, port), make_handler(session, classes))
    server.daemon_threads = True
    return server
