"""serve: the JSON endpoint, every hostile request answered, bounded work, the bound address, and the drawing
page in a real browser. The server is the real command (`python -m stages.serve`), with a 1 s client timeout."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from click.testing import CliRunner
from PIL import Image

from pipeline.data.prepared import load_split
from pipeline.inference import serving
from pipeline.inference.settings import PREPARER_MB, SERVER_MB, SETTINGS, env_name, option_name
from tests.browser import CHROMEDRIVER, CHROMIUM, chromium, draw
from tests.helpers import REPO
from tests.hostile_images import bmp_of_runs, jpeg_of_scans, png_of_chunks
from tests.http_raw import Answer, answers_until_closed, exchange, read_answer, receive, request

TIMEOUT = 1.0


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    line: str
    limits: dict[str, str]  # as the server printed them at start-up


@contextmanager
def running_server(model: Path, timeout: float | None, *options: str,
                   env: dict[str, str] | None = None) -> Iterator[Server]:
    """`python -m stages.serve --port 0 [--timeout TIMEOUT] [options]` on `model`, stopped afterwards."""
    command = [sys.executable, "-m", "stages.serve", "--model", str(model), "--port", "0"]
    command += ["--timeout", str(timeout)] if timeout is not None else []
    command += [] if "--access-log" in options else ["--no-access-log"]  # nobody reads stderr while it runs
    process = subprocess.Popen([*command, *options], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    try:
        line = process.stdout.readline()  # the server prints it once it is bound; EOF if it dies
        assert line.startswith("serving "), process.stderr.read() if process.poll() is not None else line
        limits = process.stdout.readline().removeprefix("limits: ").strip()
        yield Server(process, int(line.split(" on http://127.0.0.1:")[1].split("/")[0]), line,
                     dict(item.split("=") for item in limits.split(", ")))
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(exported: Path) -> Iterator[Server]:
    """The server most tests share, with a 1 s client timeout."""
    with running_server(exported / "model.onnx", TIMEOUT) as shared:
        yield shared


@pytest.fixture
def fresh_server(exported: Path) -> Iterator[Server]:
    """A server of its own, whose peak memory no other test has raised (warmed up by one page load)."""
    with running_server(exported / "model.onnx", 30) as own:
        assert exchange(own.port, request("GET", "/")).status == 200
        yield own


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def digit(prepared: Path) -> tuple[bytes, str]:
    """A test digit drawn dark on light at 168 px, as PNG, and its label."""
    test = load_split(prepared / "test.npz")
    return png(255 - np.kron(test.images[0].numpy(), np.ones((6, 6), dtype=np.uint8))), str(int(test.labels[0]))


def predict(server: Server, body: bytes, content_type: str | None = "image/png") -> Answer:
    return exchange(server.port, request("POST", "/predict", body, content_type))


def still_serving(server: Server, digit: tuple[bytes, str]) -> None:
    answer = predict(server, digit[0])
    assert answer.status == 200 and answer.json()["label"] == digit[1]


def form(boundary: str, parts: list[tuple[str, bytes]]) -> bytes:
    body = b"".join(f"--{boundary}\r\n{headers}\r\n\r\n".encode() + data + b"\r\n" for headers, data in parts)
    return body + f"--{boundary}--\r\n".encode()


def test_predict_answers_an_image_a_form_upload_and_json_pixels(server: Server, digit: tuple[bytes, str],
                                                                prepared: Path) -> None:
    answer = predict(server, digit[0]).json()
    assert answer["label"] == digit[1] and list(answer["probabilities"]) == [str(d) for d in range(10)]
    assert abs(sum(answer["probabilities"].values()) - 1) < 1e-4
    pixels = load_split(prepared / "test.npz").images[0].tolist()
    assert predict(server, json.dumps({"pixels": pixels}).encode(), "application/json").json()["label"] == digit[1]
    upload = form("b0undary", [('Content-Disposition: form-data; name="file"; filename="d.png"', digit[0])])
    assert predict(server, upload, "multipart/form-data; boundary=b0undary").json() == answer


@pytest.mark.parametrize(("sample", "label"), [("three.png", "3"), ("seven.jpg", "7")])
def test_predict_and_serve_give_one_answer_of_one_shape_for_the_readmes_samples(
        server: Server, exported: Path, sample: str, label: str) -> None:
    path = REPO / "docs" / "samples" / sample  # the images the README's predict lines read
    done = subprocess.run([sys.executable, "-m", "stages.predict", "--json", "--model", str(exported / "model.onnx"),
                           str(path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    [printed] = json.loads(done.stdout)
    served = predict(server, path.read_bytes(), "image/jpeg" if path.suffix == ".jpg" else "image/png").json()
    assert set(printed) == {"file", *served} and set(served) == {"label", "probability", "probabilities", "reason"}
    assert {key: printed[key] for key in served} == served
    assert served["label"] == label and served["probability"] == max(served["probabilities"].values())
    assert served["reason"] is None


def refusing_everything(model: Path, out: Path) -> Path:
    """A copy of `model` whose not-a-digit probability no image reaches."""
    import onnx

    proto = onnx.load(model)
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, "not_digit_below": "1"})
    onnx.save(proto, out)
    return out


def test_predict_and_serve_call_an_image_not_a_digit_in_one_shape_below_the_models_probability(
        exported: Path, tmp_path: Path) -> None:
    strict = refusing_everything(exported / "model.onnx", tmp_path / "strict.onnx")
    sample = REPO / "docs" / "samples" / "three.png"
    text = subprocess.run([sys.executable, "-m", "stages.predict", "--model", str(strict), str(sample)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert text.returncode == 0 and re.fullmatch(rf"{re.escape(str(sample))}: not a digit \(likeliest \d at "
                                                 r"0\.\d{3}\)\n", text.stdout), text.stdout
    done = subprocess.run([sys.executable, "-m", "stages.predict", "--json", "--model", str(strict), str(sample)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    [printed] = json.loads(done.stdout)
    with running_server(strict, TIMEOUT) as own:
        served = predict(own, sample.read_bytes()).json()
    assert {key: printed[key] for key in served} == served and set(printed) == {"file", *served}
    assert served["label"] is None and served["reason"].startswith("not a digit: the likeliest, ")


def test_the_docs_and_the_page_are_served(server: Server) -> None:
    page = exchange(server.port, request("GET", "/"))
    assert page.status == 200 and b"<canvas" in page.body
    spec = exchange(server.port, request("GET", "/openapi.json")).json()
    assert "/predict" in spec["paths"]
    for blank_offline in ("/docs", "/redoc"):  # FastAPI's pages load their scripts from CDNs: not served
        assert exchange(server.port, request("GET", blank_offline)).status == 404


def float_tiff(value: float) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 40), value, dtype=np.float32), mode="F").save(buffer, "TIFF")
    return buffer.getvalue()


def ico_declaring(side: int) -> bytes:
    """An ICO whose directory claims one `side` x `side` PNG image (the bytes are not there)."""
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, 40, 22)
    png_header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", side, side)
    return struct.pack("<HHH", 0, 1, 1) + entry + png_header + b"\x08\x06\x00\x00\x00" + b"\0" * 44


HOSTILE = {  # name: (body, content type, status, part of the error)
    "pixels above 2^32-1": (b'{"pixels": [[0, 5e9]]}', "application/json", 422, "no digit found"),
    "pixels of +-1e308": (b'{"pixels": [[1e308, -1e308, 0]]}', "application/json", 422, "no digit found"),
    "a 400-digit integer": (b'{"pixels": [[' + b"9" * 400 + b"]]}", "application/json", 400, "a float can hold"),
    "deeply nested JSON": (b"[" * 100_000, "application/json", 400, "nested too deeply"),
    "NaN in JSON": (b'{"pixels": [[NaN]]}', "application/json", 400, "malformed JSON"),
    "not an image": (b"hello, world", "image/png", 422, "not an image of an accepted format"),
    "wrong content type": (b"hello", "text/plain", 415, "Content-Type text/plain is not accepted"),
    "no content type": (b"hello", None, 415, "Content-Type (none)"),
    "empty body": (b"", "image/png", 400, "empty body"),
    "a float TIFF holding 5e9": (float_tiff(5e9), "image/tiff", 422, "no digit found"),
    "an ICO declaring 200000x200000": (ico_declaring(0), "image/x-icon", 422, "not an image of an accepted format"),
    "a 1x15000 PNG": (png(np.zeros((1, 15000), np.uint8)), "image/png", 422, "too elongated"),
    "a PNG of 2100x2100": (png(np.full((2100, 2100), 255, np.uint8)), "image/png", 422, "pixels is too large"),
    "a blank image": (png(np.full((40, 40), 255, np.uint8)), "image/png", 422, "no digit found"),
    "filename*0* in a form": (form("x", [("Content-Disposition: form-data; name=\"f\"; filename*0*=UTF-8''a.png",
                                          b"not a png")]), "multipart/form-data; boundary=x", 400, "no file part"),
    "a nested multipart": (form("x", [("Content-Type: multipart/mixed; boundary=y\r\nContent-Disposition: form-data; "
                                       "name=\"f\"", form("y", [("Content-Type: text/plain", b"hi")]) * 200)]),
                           "multipart/form-data; boundary=x", 400, "no file part"),
    "50,000 parts": (form("x", [(f'Content-Disposition: form-data; name="f{i}"', b"v") for i in range(50_000)]),
                     "multipart/form-data; boundary=x", 400, "upload refused: Too many fields"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_each_bad_body_gets_its_4xx_json_error_and_the_server_keeps_serving(
        server: Server, digit: tuple[bytes, str], name: str) -> None:
    body, content_type, status, message = HOSTILE[name]
    answer = predict(server, body, content_type)
    assert (answer.status, message in answer.json()["error"]) == (status, True), (answer.status, answer.body)
    still_serving(server, digit)


RAW = {  # name: (raw bytes, status, part of the error)
    "Content-Length: ²": ("POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ²\r\n\r\n".encode(), 400,
                          "invalid HTTP request"),
    "a 5,000-digit Content-Length": (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                                     b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n", 400, "invalid HTTP request"),
    "a Content-Length over 10 MB": (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                                    b"Content-Length: 10485761\r\n\r\n", 413, "10,485,761 bytes is too large"),
    "a TLS hello": (bytes.fromhex("160301020001000200030394") + b"\0" * 500, 400, "invalid HTTP request"),
    "a 100 KB header": (request("GET", "/", extra=f"X-Big: {'a' * 100_000}\r\n"), 431, "headers over 16,384 bytes"),
    "PUT": (request("PUT", "/predict", b"x", "image/png"), 405, "PUT /predict: Method Not Allowed"),
    "OPTIONS": (request("OPTIONS", "/"), 405, "Method Not Allowed"),
    "an unknown path": (request("GET", "/nowhere"), 404, "GET /nowhere: Not Found"),
}


@pytest.mark.parametrize("name", list(RAW))
def test_each_malformed_request_gets_a_json_answer_not_a_dropped_connection(
        server: Server, digit: tuple[bytes, str], name: str) -> None:
    raw, status, message = RAW[name]
    answer = exchange(server.port, raw)
    assert (answer.status, message in answer.json()["error"]) == (status, True), (answer.status, answer.body)
    still_serving(server, digit)


def test_a_chunked_body_is_refused_as_soon_as_it_passes_10_mb(server: Server, digit: tuple[bytes, str]) -> None:
    size = 10 * 2**20 + 1  # no Content-Length: the limit is enforced on what arrives
    head = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer = exchange(server.port, head + f"{size:x}\r\n".encode() + b"\0" * size)
    assert answer.status == 413 and "over 10,485,760 bytes" in answer.json()["error"]
    still_serving(server, digit)


def test_head_gets_the_pages_headers_and_no_body(server: Server) -> None:
    deadline = time.monotonic() + 30
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request("HEAD", "/") + request("GET", "/nowhere"))  # pipelined on one connection
        data = b""
        while b'"}' not in data:  # until the second answer's JSON body has come
            data += receive(sock, deadline)
    head, rest = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 ") and b"content-type: text/html" in head.lower(), head
    assert int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]) > 1000  # the page's size ...
    assert rest.startswith(b"HTTP/1.1 404 "), rest[:200]  # ... and none of its bytes: the next answer follows


def test_a_trailing_slash_and_a_websocket_upgrade_get_json_answers_not_a_redirect_or_an_empty_403(
        server: Server) -> None:
    slash = exchange(server.port, request("POST", "/predict/", b"x", "image/png"))
    assert slash.status == 404 and "location" not in slash.headers and "error" in slash.json()
    upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" \
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    answer = exchange(server.port, request("GET", "/ws", extra=upgrade))
    assert answer.status == 404 and "error" in answer.json()


@pytest.mark.parametrize("what", ["silence", "headers trickled", "a body announced and never sent"])
def test_slow_and_idle_clients_are_answered_408_and_closed(server: Server, digit: tuple[bytes, str],
                                                           what: str) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        if what == "headers trickled":  # a byte every tenth of the timeout, until the server answers
            for byte in b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n":
                if select.select([sock], [], [], TIMEOUT / 10)[0]:
                    break
                sock.sendall(bytes([byte]))
        elif what == "a body announced and never sent":
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                         b"Content-Length: 900\r\n\r\n")
        answer = read_answer(sock, started + 10)
        assert answer.status == 408 and f"within {TIMEOUT:g} s" in answer.json()["error"], answer
        sock.settimeout(5)
        assert sock.recv(1) == b""  # and closed
    still_serving(server, digit)


def test_forty_idle_connections_are_all_closed_by_the_deadline(server: Server, digit: tuple[bytes, str]) -> None:
    sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(40)]
    try:
        still_serving(server, digit)  # idle connections hold no worker
        deadline = time.monotonic() + TIMEOUT + 5
        answers = [read_answer(sock, deadline) for sock in sockets]
        assert {a.status for a in answers} == {408}
        assert all(sock.recv(1) == b"" for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()


def test_the_server_stays_within_a_few_hundred_megabytes(server: Server, digit: tuple[bytes, str]) -> None:
    for body, content_type, _, _ in HOSTILE.values():
        predict(server, body, content_type)
    still_serving(server, digit)
    assert peak_mb(server.process.pid) <= ceiling_mb(server.process.pid), f"{peak_mb(server.process.pid)} MB"


def peak_mb(pid: int) -> int:
    """Peak resident memory so far of a process and all its descendants (the image preparers, the workers),
    added up, in MB: the sum of their peaks (VmHWM) bounds the peak of their sum."""
    return sum(_peak_kb(each) for each in [pid, *descendants(pid)]) // 1024


def ceiling_mb(pid: int) -> int:
    """The memory the docs promise for the server process `pid`: each server process (one, or the workers under
    their supervisor) SERVER_MB, and each of their preparers PREPARER_MB."""
    processes = [pid, *descendants(pid)]
    preparers = sum("pipeline.inference.preparers" in Path(f"/proc/{p}/cmdline").read_text() for p in processes)
    return SERVER_MB * (len(processes) - preparers) + PREPARER_MB * preparers


def descendants(pid: int) -> list[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):  # a process that ended while we looked
            continue
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _peak_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def uploads_at_once(server: Server, clients: int, raw: bytes) -> list[Answer]:
    """`clients` connections sending `raw` at the same time; every answer, each read with a deadline."""
    answers: list[Answer] = []

    def client() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
            sock.sendall(raw)
            answers.append(read_answer(sock, time.monotonic() + 120))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return answers


@pytest.mark.complete  # a crowd of uploads
def test_a_crowd_of_uploads_is_admitted_before_it_is_buffered_so_memory_has_a_ceiling(
        fresh_server: Server, digit: tuple[bytes, str]) -> None:
    base = peak_mb(fresh_server.process.pid)
    raw = request("POST", "/predict", b"\xff" * int(9.5 * 2**20), "image/png")  # not an image: read whole, 422
    for clients, statuses in ((100, {422}), (300, {422, 503})):  # past its queue's time, a crowd hears "busy"
        answers = uploads_at_once(fresh_server, clients, raw)
        assert len(answers) == clients and {a.status for a in answers} <= statuses, {a.status for a in answers}
        assert all(a.json()["error"] for a in answers)
        grown = peak_mb(fresh_server.process.pid) - base
        assert grown <= 300, f"{clients} clients at once: +{grown} MB"
    still_serving(fresh_server, digit)


def test_a_4_megapixel_colour_photo_costs_at_most_150_mb(fresh_server: Server, prepared: Path) -> None:
    from bench.digit_forms import pen_drawing

    ink = pen_drawing(load_split(prepared / "test.npz").images[0].numpy(), 2000, 1400, 20)[..., None]
    paper, pen = np.array([250, 244, 225]) / 255, np.array([30, 70, 200]) / 255  # a blue pen on cream paper
    photo = Image.fromarray(np.round((paper + (pen - paper) * ink) * 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")
    base = peak_mb(fresh_server.process.pid)
    answer = predict(fresh_server, buffer.getvalue())
    assert answer.status == 200 and answer.json()["label"] == "7"
    assert peak_mb(fresh_server.process.pid) - base <= 150, f"+{peak_mb(fresh_server.process.pid) - base} MB"


def listening_address(pid: int, port: int) -> str:
    """The address a process's socket really listens on, from the kernel's table (not from what it printed)."""
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, local_port = local.split(":")
        if state == "0A" and int(local_port, 16) == port:  # 0A: LISTEN
            return socket.inet_ntoa(struct.pack("<I", int(address, 16)))
    raise AssertionError(f"nothing listens on port {port}")


def test_serve_binds_to_localhost_by_default_and_prints_the_bound_address(server: Server) -> None:
    assert server.line == f"serving {server.process.args[4]} on http://127.0.0.1:{server.port}/ (Ctrl-C stops)\n"
    assert listening_address(server.process.pid, server.port) == "127.0.0.1"


class BrokenSession:
    def run(self, *args: object) -> list:
        raise RuntimeError("the model blew up")


@contextmanager
def in_process_server(app: object) -> Iterator[int]:
    """`app` on uvicorn in a thread of this process (so that caplog sees its log); yields its port."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="info")
    sock = config.bind_socket()
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_a_fault_of_the_server_is_a_500_json_answer_with_the_traceback_logged(
        digit: tuple[bytes, str], caplog: pytest.LogCaptureFixture) -> None:
    with in_process_server(serving.make_app(BrokenSession(), [str(d) for d in range(10)])) as port, \
            caplog.at_level(logging.ERROR, logger="serve"):
        answer = exchange(port, request("POST", "/predict", digit[0], "image/png"))
    assert answer.status == 500
    assert answer.json() == {"error": "the server failed on this request (RuntimeError); it is logged"}
    assert "the model blew up" in caplog.text and "Traceback" in caplog.text


class HeldSession:
    """A model that answers only once `release` is set, and says when a request has reached it."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def run(self, *args: object) -> list:
        self.entered.set()
        assert self.release.wait(60), "never released"
        return [np.zeros((1, 10), np.float32)]


def test_a_request_that_finds_no_turn_gets_a_json_503_with_retry_after_and_the_admitted_one_finishes(
        digit: tuple[bytes, str]) -> None:
    session = HeldSession()
    app = serving.make_app(session, [str(d) for d in range(10)], serving.Limits(concurrent=1, queue_seconds=0.2))
    with in_process_server(app) as port:
        admitted: list[Answer] = []
        first = threading.Thread(target=lambda: admitted.append(
            exchange(port, request("POST", "/predict", digit[0], "image/png"))))
        first.start()
        try:
            assert session.entered.wait(30), "the first request never reached the model"
            refused = exchange(port, request("POST", "/predict", digit[0], "image/png"))  # its turn never comes
        finally:
            session.release.set()
            first.join(timeout=60)
    assert refused.status == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"].startswith("busy: 1 requests ahead for 0.2 s")
    assert admitted[0].status == 200 and admitted[0].json()["label"] == "0"


def test_a_client_that_hangs_up_mid_upload_is_one_line_of_log_not_a_fault(
        exported: Path, caplog: pytest.LogCaptureFixture) -> None:
    from pipeline.export.onnx_session import class_names, open_session

    session = open_session(exported / "model.onnx")
    caplog.set_level(logging.INFO)
    with in_process_server(serving.make_app(session, class_names(session))) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(request("POST", "/predict", b"\x89PNG" + b"\0" * 80, "image/png")
                         .replace(b"Content-Length: 84", b"Content-Length: 100000"))  # 84 of 100,000 bytes, then gone
        deadline = time.monotonic() + 30
        while "the body did not arrive" not in caplog.text:  # the server's own line: the hang-up is handled
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.02)
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.slow  # a real browser
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver "
                                                            "(.ci/run installs them)")
def test_a_digit_drawn_on_the_page_with_pointer_events_is_read_and_a_refusal_says_not_a_digit(
        server: Server, exported: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    with chromium() as driver:  # one browser for both servers: it starts in seconds
        driver.get(f"http://127.0.0.1:{server.port}/")
        assert draw(driver, (5, -95), (5, 95)) == "1"
        assert len(driver.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 10
        driver.find_element(By.ID, "clear").click()
        assert driver.find_element(By.ID, "label").text == ""
        assert not driver.find_elements(By.CSS_SELECTOR, "#bars .bar")
        assert draw(driver, (-70, -85), (70, -85), (-15, 95)) == "7"

        with running_server(refusing_everything(exported / "model.onnx", tmp_path / "strict.onnx"), TIMEOUT) as own:
            driver.get(f"http://127.0.0.1:{own.port}/")
            assert draw(driver, (5, -95), (5, 95)) == "not a digit"
            label = driver.find_element(By.ID, "label")
            assert "none" in label.get_attribute("class") and label.get_attribute("title").startswith("not a digit:")
            assert len(driver.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 10  # the probabilities still shown


# --- what a request may cost: its image's structure, and a hard limit on its preparation -------------------

@pytest.mark.parametrize(("name", "body", "message"), [
    ("a JPEG of 3,000 scans", jpeg_of_scans(3000), "JPEG of more than 64 scans is refused"),
    ("a PNG of 100,000 chunks", png_of_chunks(100_000), "PNG of more than 4,096 chunks is refused"),
    ("a run-length BMP of 4 million runs", bmp_of_runs(2000), "run-length BMP of more than 1,048,576 bytes"),
])
def test_an_image_whose_structure_costs_more_than_a_digit_needs_is_refused_before_decoding(
        server: Server, digit: tuple[bytes, str], name: str, body: bytes, message: str) -> None:
    answer = predict(server, body, "image/*")
    assert answer.status == 422 and message in answer.json()["error"], answer
    still_serving(server, digit)


def test_a_digit_is_answered_while_decoder_bombs_arrive_beside_it(server: Server, digit: tuple[bytes, str]) -> None:
    bombs = [jpeg_of_scans(3000), png_of_chunks(100_000)]
    answers: dict[str, Answer] = {}
    threads = [threading.Thread(target=lambda i=i, b=b: answers.update({f"bomb {i}": predict(server, b)}))
               for i, b in enumerate(bombs)]
    for thread in threads:
        thread.start()
    answers["digit"] = predict(server, digit[0])
    for thread in threads:
        thread.join(timeout=120)
    assert answers["digit"].status == 200 and answers["digit"].json()["label"] == digit[1]
    assert [answers[f"bomb {i}"].status for i in range(2)] == [422, 422]


def test_a_preparation_over_its_time_is_stopped_and_a_fresh_process_takes_its_place(
        digit: tuple[bytes, str]) -> None:
    from pipeline.inference.pixels_json import RequestError
    from pipeline.inference.preparers import Preparers

    page = png(np.full((2000, 2000), 255, np.uint8))  # 4 MP: far more than a millisecond of work anywhere

    async def scenario() -> tuple[set[int], set[int], np.ndarray]:
        preparers = Preparers(1, seconds=0.001, max_pixels=4_000_000, max_json=2**20)
        await preparers.start()
        try:
            before = preparers.pids()
            with pytest.raises(RequestError, match="took more than 0.001 s to prepare and was stopped"):
                await preparers.prepare("image", page)
            preparers.seconds = 60
            prepared = await preparers.prepare("image", digit[0])
            return before, preparers.pids(), prepared
        finally:
            await preparers.close()

    before, after, prepared = asyncio.run(scenario())
    assert before.isdisjoint(after) and len(after) == 1
    assert prepared.shape[1:] == (28, 28) and prepared.max() == 1  # the readings of the digit


# --- HTTP framing ---------------------------------------------------------------------------------------

def test_content_length_with_transfer_encoding_is_refused_and_nothing_after_it_is_served(server: Server) -> None:
    smuggled = request("GET", "/nowhere")
    raw = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: 5\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(raw)
        answers = answers_until_closed(sock, time.monotonic() + 30)
    assert [a.status for a in answers] == [400], answers  # one answer, then the connection closed
    assert "both Content-Length and Transfer-Encoding" in answers[0].json()["error"]


def test_pipelined_requests_are_answered_in_order_on_one_connection(server: Server, digit: tuple[bytes, str]) -> None:
    last = request("GET", "/nowhere").replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request("GET", "/") + request("POST", "/predict", digit[0], "image/png") + last)
        answers = answers_until_closed(sock, time.monotonic() + 30)
    assert [a.status for a in answers] == [200, 200, 404]
    assert answers[1].json()["label"] == digit[1]


def test_an_answer_given_before_the_body_is_read_reaches_the_client_and_its_next_request_works(
        server: Server, digit: tuple[bytes, str]) -> None:
    import http.client

    client = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        for path, method in [("/nowhere", "POST"), ("/predict", "PUT")]:  # answered 404 and 405 unread
            client.request(method, path, b"\0" * 2_000_000, {"Content-Type": "image/png"})
            early = client.getresponse()
            assert early.status in (404, 405) and "error" in json.loads(early.read())
            client.request("POST", "/predict", digit[0], {"Content-Type": "image/png"})
            answer = client.getresponse()
            assert answer.status == 200 and json.loads(answer.read())["label"] == digit[1]
    finally:
        client.close()


def tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of `sock` (1: established)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="reads the TCP state (Linux)")
def test_a_client_that_pipelines_and_never_reads_is_disconnected(server: Server, digit: tuple[bytes, str]) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(request("GET", "/") * 200)  # 200 pages of 4 KB asked for, none read
        deadline = time.monotonic() + 60
        while tcp_state(sock) == 1:
            assert time.monotonic() < deadline, "still connected after 60 s"
            select.select([], [], [], 0.05)
    still_serving(server, digit)


def test_past_the_connection_cap_a_new_connection_gets_a_json_503(exported: Path, digit: tuple[bytes, str]) -> None:
    with running_server(exported / "model.onnx", 30, "--max-connections", "2") as capped:
        held = [socket.create_connection(("127.0.0.1", capped.port), timeout=30) for _ in range(2)]
        try:
            refused = exchange(capped.port, request("GET", "/"))
        finally:
            for sock in held:
                sock.close()
        assert refused.status == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"].startswith("busy: 2 connections are open")
        deadline = time.monotonic() + 30
        while (answer := predict(capped, digit[0])).status == 503:  # until the server has seen the two close
            assert time.monotonic() < deadline, answer
        assert answer.status == 200 and answer.json()["label"] == digit[1]


def test_a_body_in_thousands_of_tiny_chunks_is_refused(server: Server, digit: tuple[bytes, str]) -> None:
    head = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer = exchange(server.port, head + b"1\r\n\0\r\n" * 5000 + b"0\r\n\r\n")
    assert answer.status == 400 and "more than 4,096 chunks" in answer.json()["error"]
    still_serving(server, digit)


@pytest.mark.parametrize(("header", "message"), [
    ("Origin: http://evil.example\r\n", "requests from the page http://evil.example are refused"),
    ("Origin: http://127.0.0.1:1\r\n", "requests from the page http://127.0.0.1:1 are refused"),
])
def test_a_request_from_another_sites_page_is_refused(server: Server, digit: tuple[bytes, str], header: str,
                                                      message: str) -> None:
    host = f"Host: 127.0.0.1:{server.port}".encode()  # as a browser sends it

    def from_page(origin: str) -> Answer:
        raw = request("POST", "/predict", digit[0], "image/png", extra=origin)
        return exchange(server.port, raw.replace(b"Host: 127.0.0.1", host))

    answer = from_page(header)
    assert answer.status == 403 and message in answer.json()["error"]
    same = from_page(f"Origin: http://127.0.0.1:{server.port}\r\n")  # the server's own page
    assert same.status == 200 and same.json()["label"] == digit[1]


def test_a_host_name_that_is_not_loopback_is_refused_by_a_local_server(server: Server) -> None:
    rebound = request("GET", "/").replace(b"Host: 127.0.0.1", b"Host: attacker.example")
    answer = exchange(server.port, rebound)
    assert answer.status == 403 and "answers only to the Host names localhost" in answer.json()["error"]
    assert exchange(server.port, request("GET", "/").replace(b"Host: 127.0.0.1", b"Host: localhost:80")).status == 200


def test_two_workers_serve_and_the_whole_server_stays_under_its_ceiling(exported: Path,
                                                                        digit: tuple[bytes, str]) -> None:
    with running_server(exported / "model.onnx", 30, "--workers", "2") as two:
        raw = request("POST", "/predict", b"\xff" * int(9.5 * 2**20), "image/png")
        answers = uploads_at_once(two, 50, raw)
        assert len(answers) == 50 and {a.status for a in answers} == {422}
        for _ in range(8):
            still_serving(two, digit)
        assert len(descendants(two.process.pid)) >= 6  # two server processes, each with two preparers
        assert peak_mb(two.process.pid) <= ceiling_mb(two.process.pid), f"{peak_mb(two.process.pid)} MB"


# a value for each setting that is not its default, as the command line and the environment spell it
SET_TO = {"max_body": "200000", "max_json": "100000", "max_pixels": "90000", "max_header_bytes": "8192",
          "max_chunks": "64", "client_seconds": "7.5", "concurrent": "3", "queue_seconds": "4", "preparers": "1",
          "prepare_seconds": "2.5", "max_connections": "50"}


def test_every_limit_is_set_by_its_option_or_its_variable_and_the_option_wins(exported: Path) -> None:
    assert set(SET_TO) == set(SETTINGS)  # a new setting gets a value here
    names = sorted(SET_TO)
    by_option, by_variable = names[::2], names[1::2]
    options = [part for name in by_option for part in (option_name(name), SET_TO[name])]
    env = {**os.environ, **{env_name(name): SET_TO[name] for name in by_variable},
           env_name("max_body"): "999999"}  # max_body is also given as an option, which wins
    with running_server(exported / "model.onnx", None, *options, env=env) as own:
        assert own.limits == SET_TO, own.limits
        too_big = b"x" * 200_001  # over the max_body the option set, under the variable's
        answer = exchange(own.port, request("POST", "/predict", too_big, "image/png"))
        assert answer.status == 413 and b"at most 200,000" in answer.body, answer
        answer = exchange(own.port, request("POST", "/predict", png(np.zeros((400, 400), np.uint8)), "image/png"))
        assert answer.status == 422 and b"at most 90,000 pixels" in answer.body, answer  # 160,000 pixels


@pytest.mark.parametrize(("options", "variables", "message"), [
    (["--concurrent", "0"], {}, "--concurrent: input should be greater than or equal to 1 (got '0')"),
    (["--timeout", "soon"], {}, "--client-seconds: input should be a valid number"),
    ([], {"MNIST_SERVE_MAX_PIXELS": "-5"}, "MNIST_SERVE_MAX_PIXELS: input should be greater than or equal to 784"),
    ([], {"MNIST_SERVE_CONCURENT": "2"}, "MNIST_SERVE_CONCURENT: not a setting of serve (did you mean "
                                          "MNIST_SERVE_CONCURRENT?)"),
])
def test_a_bad_limit_stops_serve_at_start_up_in_one_line(exported: Path, options: list[str],
                                                          variables: dict[str, str], message: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from stages import serve

    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(serve.main, ["--model", str(exported / "model.onnx"), "--port", "0", *options])
    assert result.exit_code == 2 and result.stdout == "", result.output
    assert result.stderr.startswith(f"Error: {message}") and result.stderr.count("\n") == 1, result.stderr


def test_a_command_whose_group_is_not_installed_says_which_to_install_in_one_line(tmp_path: Path) -> None:
    """As in a serving-only install (CI builds a real one: tools/serve_install_check.py): PyYAML hidden."""
    (tmp_path / "yaml").mkdir()
    (tmp_path / "yaml" / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'yaml'\", name='yaml')")
    done = subprocess.run([sys.executable, "-m", "stages.train", "--help"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == ("[train] needs the 'pipeline' packages, and yaml is not installed: pip install -c "
                           "constraints.txt -e '.[pipeline]' (from the project's folder)\n"), done.stderr


def test_the_access_log_has_a_line_per_answer_and_can_be_silenced(exported: Path, digit: tuple[bytes, str],
                                                                 tmp_path: Path) -> None:
    for flag, lines in (("--access-log", 2), ("--no-access-log", 0)):
        log_file = tmp_path / f"{flag}.log"
        with log_file.open("w") as stderr:
            process = subprocess.Popen([sys.executable, "-m", "stages.serve", "--model", str(exported / "model.onnx"),
                                        "--port", "0", flag], cwd=REPO, stdout=subprocess.PIPE, stderr=stderr,
                                       text=True)
            try:
                port = int(process.stdout.readline().split(" on http://127.0.0.1:")[1].split("/")[0])
                assert exchange(port, request("POST", "/predict", digit[0], "image/png")).status == 200
                assert exchange(port, request("GET", "/nowhere")).status == 404
            finally:
                process.terminate()
                process.wait(timeout=30)
        logged = [line for line in log_file.read_text().splitlines() if '" ' in line]
        assert len(logged) == lines, log_file.read_text()
        if lines:
            assert re.fullmatch(r'\[serve\] 127\.0\.0\.1:\d+ "POST /predict" 200 in \d+ ms', logged[0]), logged
            assert re.fullmatch(r'\[serve\] 127\.0\.0\.1:\d+ "GET /nowhere" 404 in \d+ ms', logged[1]), logged


def test_a_port_in_use_is_one_line_naming_the_address_and_the_way_out(server: Server, exported: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "stages.serve", "--model", str(exported / "model.onnx"), "--port",
                           str(server.port)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (f"Error: 127.0.0.1:{server.port}: already in use; stop what listens there, or pick "
                           "another --port (--port 0 takes a free one)\n"), done.stderr
