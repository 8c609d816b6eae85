"""The HTTP side of `serve`: a drawing page and POST /predict, as a FastAPI app on uvicorn.

POST /predict takes an image (image/* or application/octet-stream), a form upload (multipart/form-data,
the first file) or JSON `{"pixels": [[...], ...]}` (gray levels, rows of a 2-D image, 0-1 or 0-255), and
answers `{"label": "7", "probability": 0.91, "probabilities": {"0": ..., "9": ...}, "reason": null}` (what
predict --json prints for a file, beside its name; `"label": null` and a reason when the image is not a digit).
Anything the client got wrong gets a
4xx JSON `{"error": "..."}`, a fault of the server a 500 JSON (its traceback goes to the log); no request
is left without an answer. The limits on what a request may cost are in `Limits`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import anyio
import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.common.errors import PipelineError
from pipeline.inference.pixels_json import RequestError
from pipeline.inference.prediction import answer, surest_reading
from pipeline.inference.preparers import Preparers
from pipeline.inference.settings import Limits

log = logging.getLogger("serve")
PAGE = Path(__file__).with_name("draw_page.html")
IMAGE_TYPES = ("image/", "application/octet-stream")




RETRY_SECONDS = 1  # what a 503 asks the client to wait before trying again


def error(status: int, message: str) -> JSONResponse:
    """The JSON answer to a refused request; after a body that was not read whole, the connection closes."""
    headers = {"connection": "close"} if status in (408, 413) else {}
    if status == 503:
        headers["retry-after"] = str(RETRY_SECONDS)
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


class BodyLimit:
    """ASGI middleware: the body may be at most `max_body` bytes, counted while it is read, so a huge upload
    costs no memory. (Its deadline is the HTTP protocol's: `http11`.)"""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and int(length) > self.max_body:  # h11 has checked that it is digits
            return await error(413, f"body of {int(length):,} bytes is too large (at most {self.max_body:,})")(
                scope, receive, send)
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
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


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class SameOrigin:
    """ASGI middleware: a request whose Origin is another site's is refused (403), and so, on a server bound to
    loopback, is a Host that is not a loopback name (a web page could reach it by DNS rebinding otherwise)."""

    def __init__(self, app: ASGIApp, loopback_only: bool) -> None:
        self.app, self.loopback_only = app, loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        name = urlsplit(f"//{host}").hostname or ""
        if self.loopback_only and name not in LOOPBACK_NAMES:
            return await error(403, f"this server answers only to the Host names {', '.join(LOOPBACK_NAMES)} "
                                    "(serve --host binds it to another address)")(scope, receive, send)
        origin = headers.get(b"origin")
        if origin is not None and origin != b"null" and urlsplit(origin.decode("latin-1")).netloc != host:
            return await error(403, f"requests from the page {origin.decode('latin-1')[:100]} are refused: "
                                    "only this server's own page may call it")(scope, receive, send)
        await self.app(scope, receive, send)


class Prediction(BaseModel):
    """The answer to POST /predict: the label (null when the image is not a digit, with the reason), its
    probability and every class's (`prediction.answer`, what predict --json prints for a file too)."""

    label: str | None
    probability: float
    probabilities: dict[str, float]
    reason: str | None


def predict_digit(served: Service, readings: np.ndarray) -> Prediction:
    """The answer for one digit's prepared readings (K x 28 x 28)."""
    return Prediction(**answer(served.classes, surest_reading(served.session, readings), served.not_digit_below))


@dataclass(frozen=True)
class Service:
    """What the routes work with, made once when the app is made: the model and its class names, the limits,
    the preparing processes, the turns that admit requests and the threads that run the model."""

    session: Any
    classes: list[str]
    limits: Limits
    preparers: Preparers
    turns: asyncio.Semaphore
    model_threads: anyio.CapacityLimiter
    page: str
    not_digit_below: float


def service(request: Request) -> Service:
    return request.app.state.service


Served = Annotated[Service, Depends(service)]
router = APIRouter()


@router.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
async def drawing_page(served: Served) -> str:
    return served.page


@router.post("/predict", summary="Label one digit image", response_model=Prediction,
             responses={400: {}, 403: {}, 408: {}, 413: {}, 415: {}, 422: {}, 503: {}})
async def predict(request: Request, served: Served) -> Prediction:
    """Send the image as the body (image/*), as a form upload, or JSON `{"pixels": [[...], ...]}`."""
    limits = served.limits
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        read = functools.partial(_read_upload, request, limits)
    elif kind == "application/json" or kind.startswith(IMAGE_TYPES):
        read = functools.partial(_read_body, request, kind)
    else:
        raise RequestError(415, f"Content-Type {kind or '(none)'} is not accepted: send image/*, "
                                "multipart/form-data or application/json")
    try:  # admission before the body is read: what waits here holds no upload in memory
        await asyncio.wait_for(served.turns.acquire(), limits.queue_seconds)
    except TimeoutError:
        async for _ in request.stream():  # read and drop the upload, so that the answer is not lost to a reset
            pass
        raise RequestError(503, f"busy: {limits.concurrent} requests ahead for {limits.queue_seconds:g} s; "
                                f"try again in {RETRY_SECONDS} s") from None
    try:
        readings = await served.preparers.prepare(*await read())
        return await anyio.to_thread.run_sync(predict_digit, served, readings, limiter=served.model_threads)
    finally:
        served.turns.release()


async def bad_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestError)
    return error(exc.status, str(exc))


async def unreadable(request: Request, exc: Exception) -> JSONResponse:
    return error(422, str(exc))


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    where = "the drawing page is GET /; predictions are POST /predict"
    return error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}; {where}")


async def client_left(request: Request, exc: Exception) -> JSONResponse:
    # the client's choice (or its deadline, answered by the protocol): one line, and an answer nobody reads
    log.info("%s %s: the body did not arrive (the client hung up, or its time ran out)", request.method,
             request.url.path)
    return error(400, "the body did not arrive")


async def fault(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return error(500, f"the server failed on this request ({type(exc).__name__}); it is logged")


HANDLERS = {RequestError: bad_request, PipelineError: unreadable, HTTPException: http_error,
            ClientDisconnect: client_left, Exception: fault}


def make_app(session: Any, classes: list[str], limits: Limits | None = None,
             not_digit_below: float = 0.0) -> FastAPI:
    """The app: GET / (the drawing page), POST /predict, and the OpenAPI description at /openapi.json; its
    preparing processes start with it and stop with it. An image whose likeliest digit is less probable than
    `not_digit_below` is answered as no digit.

    No /docs or /redoc: FastAPI's pages load their scripts from CDNs, so offline they are blank. No redirect
    of /predict/ to /predict either: Starlette builds its Location from the client's Host header.
    """
    limits = limits or Limits()
    served = Service(session, classes, limits,
                     Preparers(limits.preparers, limits.prepare_seconds, limits.max_pixels, limits.max_json),
                     asyncio.Semaphore(limits.concurrent), anyio.CapacityLimiter(limits.preparers), PAGE.read_text(),
                     not_digit_below)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await served.preparers.start()
        try:
            yield
        finally:
            await served.preparers.close()

    app = FastAPI(title="MNIST digit classifier", description=__doc__, version="1", docs_url=None, redoc_url=None,
                  redirect_slashes=False, lifespan=lifespan)
    app.state.service = served
    app.add_middleware(BodyLimit, max_body=limits.max_body)
    app.add_middleware(SameOrigin, loopback_only=limits.loopback_only)
    for kind, handler in HANDLERS.items():
        app.add_exception_handler(kind, handler)
    app.include_router(router)
    return app


async def _read_body(request: Request, kind: str) -> tuple[str, bytearray]:
    body = bytearray()  # grown in place: Starlette's request.body() joins its chunks, two copies at the peak
    async for chunk in request.stream():
        body += chunk
    if not body:
        raise RequestError(400, "empty body: send an image or JSON pixels")
    return ("json" if kind == "application/json" else "image"), body


async def _read_upload(request: Request, limits: Limits) -> tuple[str, bytes | bytearray]:
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


def app_for_model(model: Path, limits: Limits) -> FastAPI:
    """The app for the exported model at `model`: what each server process builds at start-up."""
    from pipeline.export.onnx_session import class_names, not_digit_below, open_session

    session = open_session(model, threads=1)
    return make_app(session, class_names(session), limits, not_digit_below(session))
