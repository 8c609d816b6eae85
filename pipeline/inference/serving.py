"""The HTTP side of `serve`: a drawing page and POST /predict, as a FastAPI app on uvicorn.

POST /predict takes an image (image/* or application/octet-stream), a form upload (multipart/form-data,
the first file) or JSON `{"pixels": [[...], ...]}` (gray levels, rows of a 2-D image, 0-1 or 0-255), and
answers `{"label": "7", "probabilities": {"0": ..., ..., "9": ...}}`. Anything the client got wrong gets a
4xx JSON `{"error": "..."}`, a fault of the server a 500 JSON (its traceback goes to the log); no request
is left without an answer. The limits on what a request may cost are in `Limits`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.common.errors import PipelineError
from pipeline.export.onnx_session import run_logits
from pipeline.inference.digit_image import decode_image, scaled_by_range, to_mnist
from pipeline.inference.http_protocol import CLIENT_SECONDS, TIMEOUT_VARIABLE
from pipeline.inference.prediction import softmax

log = logging.getLogger("serve")
PAGE = Path(__file__).with_name("draw_page.html")
IMAGE_TYPES = ("image/", "application/octet-stream")


@dataclass(frozen=True)
class Limits:
    """What one request may cost, and how many may run at once."""

    max_body: int = 10 * 1024 * 1024  # bytes, counted while the body is read
    max_pixels: int = 4_000_000  # a request's image, checked before it is decoded
    body_seconds: float = CLIENT_SECONDS  # to send the whole body
    # requests admitted at once: reading their bodies, preparing and predicting. The rest wait before their
    # bodies are read (the client's upload stalls in TCP), so bodies in memory never exceed this many
    concurrent: int = 8
    queue_seconds: float = 10.0  # how long a request waits for its turn before a 503
    threads: int = 2  # threads that prepare images and run the model


class RequestError(Exception):
    """A bad request: its HTTP status and a one-line reason for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def pixels_from_json(body: bytes, max_pixels: int) -> np.ndarray:
    """`{"pixels": [[...], ...]}` -> a float gray image in [0, 1]."""
    usage = 'JSON body must be {"pixels": [[...], ...]}: rows of numbers of one 2-D image'
    try:
        payload = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise RequestError(400, "JSON nested too deeply: " + usage) from None
    except ValueError as exc:  # malformed JSON, NaN or Infinity, bytes that are not UTF-8
        raise RequestError(400, f"malformed JSON ({str(exc)[:80]}): {usage}") from None
    rows = payload.get("pixels") if isinstance(payload, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(row, list) and row for row in rows):
        raise RequestError(400, usage)
    if len(rows) * max(len(row) for row in rows) > max_pixels:
        raise RequestError(413, f"'pixels' holds more than {max_pixels:,} values")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for row in rows for v in row):
        raise RequestError(400, f"'pixels' must hold numbers only: {usage}")
    try:
        pixels = np.asarray(rows, dtype=np.float64)
    except (ValueError, OverflowError):  # ragged rows; an integer too large for a float
        raise RequestError(400, "'pixels' must be rows of equal length of numbers a float can hold") from None
    if not np.isfinite(pixels).all():
        raise RequestError(400, "'pixels' must be finite numbers")
    return scaled_by_range(pixels)


def predict_digit(session: Any, classes: list[str], image: np.ndarray) -> dict[str, Any]:
    """The label and every class's probability for one image."""
    probs = softmax(run_logits(session, to_mnist(image, "the image")[None, None]))[0]
    return {"label": classes[int(probs.argmax())],
            "probabilities": {name: round(float(p), 6) for name, p in zip(classes, probs, strict=True)}}


RETRY_SECONDS = 1  # what a 503 asks the client to wait before trying again


def error(status: int, message: str) -> JSONResponse:
    """The JSON answer to a refused request; after a body that was not read whole, the connection closes."""
    headers = {"connection": "close"} if status in (408, 413) else {}
    if status == 503:
        headers["retry-after"] = str(RETRY_SECONDS)
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


class BodyLimit:
    """ASGI middleware: the body may be at most `max_body` bytes and must arrive within `seconds`.

    Both are enforced while reading, so a huge or a stalled upload costs neither memory nor a worker.
    """

    def __init__(self, app: ASGIApp, max_body: int, seconds: float) -> None:
        self.app, self.max_body, self.seconds = app, max_body, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and int(length) > self.max_body:  # h11 has checked that it is digits
            return await error(413, f"body of {int(length):,} bytes is too large (at most {self.max_body:,})")(
                scope, receive, send)
        received, deadline = 0, asyncio.get_running_loop().time() + self.seconds
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), max(remaining, 0.001))
            except TimeoutError:
                raise RequestError(408, f"the body did not arrive within {self.seconds:g} s") from None
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise RequestError(413, f"body over {self.max_body:,} bytes is too large")
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except RequestError as exc:
            if started:
                raise
            await error(exc.status, str(exc))(scope, receive, send)


def make_app(session: Any, classes: list[str], limits: Limits = Limits()) -> FastAPI:
    """The app: GET / (the drawing page), POST /predict, and the OpenAPI description at /openapi.json.

    No /docs or /redoc: FastAPI's pages load their scripts from CDNs, so offline they are blank. No redirect
    of /predict/ to /predict either: Starlette builds its Location from the client's Host header.
    """
    page = PAGE.read_text()
    app = FastAPI(title="MNIST digit classifier", description=__doc__, version="1", docs_url=None, redoc_url=None,
                  redirect_slashes=False)
    app.add_middleware(BodyLimit, max_body=limits.max_body, seconds=limits.body_seconds)
    turns = asyncio.Semaphore(limits.concurrent)
    workers = anyio.CapacityLimiter(limits.threads)

    @app.exception_handler(RequestError)
    async def bad_request(request: Request, exc: RequestError) -> JSONResponse:
        return error(exc.status, str(exc))

    @app.exception_handler(PipelineError)
    async def unreadable(request: Request, exc: PipelineError) -> JSONResponse:
        return error(422, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        where = "the drawing page is GET /; predictions are POST /predict"
        return error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}; {where}")

    @app.exception_handler(ClientDisconnect)
    async def client_left(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # the client's choice, not a fault: one line, and an answer nobody will read
        log.info("%s %s: the client hung up before its body arrived", request.method, request.url.path)
        return error(400, "the client hung up before its body arrived")

    @app.exception_handler(Exception)
    async def fault(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error(500, f"the server failed on this request ({type(exc).__name__}); it is logged")

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    async def drawing_page() -> str:
        return page

    @app.post("/predict", summary="Label one digit image",
              responses={400: {}, 408: {}, 413: {}, 415: {}, 422: {}, 503: {}})
    async def predict(request: Request) -> dict[str, Any]:
        """Send the image as the body (image/*), as a form upload, or JSON `{"pixels": [[...], ...]}`."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            read = functools.partial(_read_upload, request, limits)
        elif kind == "application/json" or kind.startswith(IMAGE_TYPES):
            read = functools.partial(_read_body, request, kind)
        else:
            raise RequestError(415, f"Content-Type {kind or '(none)'} is not accepted: send image/*, "
                                    "multipart/form-data or application/json")
        try:  # admission before the body is read: what waits here holds no upload in memory
            await asyncio.wait_for(turns.acquire(), limits.queue_seconds)
        except TimeoutError:
            async for _ in request.stream():  # read and drop the upload, so that the answer is not lost to a reset
                pass
            raise RequestError(503, f"busy: {limits.concurrent} requests ahead for {limits.queue_seconds:g} s; "
                                    f"try again in {RETRY_SECONDS} s") from None
        try:
            image_source = await read()
            return await anyio.to_thread.run_sync(_prepare_and_predict, session, classes, image_source, limits,
                                                  limiter=workers)
        finally:
            turns.release()

    return app


async def _read_body(request: Request, kind: str) -> tuple[str, bytes]:
    body = await request.body()
    if not body:
        raise RequestError(400, "empty body: send an image or JSON pixels")
    return ("json" if kind == "application/json" else "image"), body


async def _read_upload(request: Request, limits: Limits) -> tuple[str, bytes]:
    try:
        form = await request.form(max_files=1, max_fields=16, max_part_size=limits.max_body)
    except MultiPartException as exc:
        raise RequestError(400, f"multipart/form-data upload refused: {exc.message}") from None
    except HTTPException as exc:  # how Starlette reports the parser's refusals inside an app
        raise RequestError(400, f"multipart/form-data upload refused: {exc.detail}") from None
    try:
        for value in form.values():
            if not isinstance(value, str):
                return "image", await value.read()
    finally:
        await form.close()
    raise RequestError(400, "multipart/form-data upload has no file part")


def _prepare_and_predict(session: Any, classes: list[str], source: tuple[str, bytes],
                         limits: Limits) -> dict[str, Any]:
    kind, body = source
    image = pixels_from_json(body, limits.max_pixels) if kind == "json" else \
        decode_image(body, "the image", limits.max_pixels)
    return predict_digit(session, classes, image)



MODEL_VARIABLE = "MNIST_SERVE_MODEL"


def app_from_environment() -> FastAPI:
    """The app for the model named by MNIST_SERVE_MODEL (and the client timeout in MNIST_SERVE_TIMEOUT): what
    each uvicorn worker process builds, since workers are started afresh."""
    from pipeline.export.onnx_session import class_names, open_session

    session = open_session(Path(os.environ[MODEL_VARIABLE]), threads=1)
    seconds = float(os.environ.get(TIMEOUT_VARIABLE, CLIENT_SECONDS))
    return make_app(session, class_names(session), Limits(body_seconds=seconds))
