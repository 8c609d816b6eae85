"""serve: the JSON endpoint, its refusals, the one-line start-up and the drawing page in a real browser."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.prepared import load_split
from pipeline.export.onnx_session import class_names, open_session
from pipeline.inference import serving
from tests.browser import CHROMEDRIVER, CHROMIUM, chromium, draw
from tests.helpers import REPO

pytestmark = pytest.mark.xdist_group("evaluated-and-exported")  # the worker that already has the exported model


@pytest.fixture(scope="module")
def server(exported: Path) -> Iterator[str]:
    """The server on a free port of 127.0.0.1, in a thread of this process."""
    session = open_session(exported / "model.onnx")
    httpd = serving.make_server(session, class_names(session), "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/"
    httpd.shutdown()
    httpd.server_close()


def post(url: str, body: bytes, content_type: str | None) -> tuple[int, dict]:
    """POST `body`; the status and the JSON answer, whatever the status."""
    request = urllib.request.Request(url, data=body, method="POST")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def test_predict_answers_an_image_and_json_pixels_with_the_label_and_ten_probabilities(
        server: str, prepared: Path) -> None:
    test = load_split(prepared / "test.pt")
    digit = 255 - np.kron(test.images[0].numpy(), np.ones((6, 6), dtype=np.uint8))  # dark on light, 168 px
    status, answer = post(server + "predict", png(digit), "image/png")
    assert status == 200, answer
    assert answer["label"] == str(int(test.labels[0]))
    assert list(answer["probabilities"]) == [str(d) for d in range(10)]
    assert abs(sum(answer["probabilities"].values()) - 1) < 1e-4
    assert answer["probabilities"][answer["label"]] == max(answer["probabilities"].values())
    status, from_pixels = post(server + "predict", json.dumps({"pixels": test.images[0].tolist()}).encode(),
                               "application/json")
    assert status == 200 and from_pixels["label"] == answer["label"]
    boundary = "b0undary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + png(digit) + f"\r\n--{boundary}--\r\n".encode()
    status, uploaded = post(server + "predict", form, f"multipart/form-data; boundary={boundary}")
    assert status == 200 and uploaded == answer


def test_bad_requests_get_a_4xx_json_error_and_the_server_keeps_serving(
        server: str, prepared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serving, "MAX_BODY", 50_000)
    cases = {
        "not an image": (b"hello, world", "image/png", 422, "not an image"),
        "wrong content type": (b"hello", "text/plain", 415, "Content-Type text/plain is not accepted"),
        "empty body": (b"", "image/png", 400, "empty body"),
        "too large": (b"\0" * 60_000, "image/png", 413, "too large"),
        "bad JSON": (b'{"pixel": 3}', "application/json", 400, '{"pixels"'),
        "blank image": (png(np.full((40, 40), 255, np.uint8)), "image/png", 422, "no digit found"),
        "too many pixels": (png(np.full((2100, 2100), 255, np.uint8)), "image/png", 422, "pixels is too large"),
    }
    for name, (body, content_type, status, message) in cases.items():
        got, answer = post(server + "predict", body, content_type)
        assert (got, message in answer.get("error", "")) == (status, True), (name, got, answer)
    got, answer = post(server + "nowhere", b"x", "image/png")
    assert got == 404 and "POST to /predict" in answer["error"]
    digit = load_split(prepared / "test.pt").images[1].numpy()
    assert post(server + "predict", png(digit), "image/png")[0] == 200


def test_serve_binds_to_localhost_and_says_where_in_one_line(exported: Path) -> None:
    process = subprocess.Popen([sys.executable, "-m", "stages.serve", "--model", str(exported / "model.onnx"),
                                "--port", "0"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("serving ") and "on http://127.0.0.1:" in line, line
        url = line.split(" on ")[1].split()[0]
        with urllib.request.urlopen(url, timeout=30) as response:
            assert b"<canvas" in response.read()
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver "
                                                            "(.ci/run installs them)")
def test_a_digit_drawn_on_the_page_with_pointer_events_is_read(server: str) -> None:
    from selenium.webdriver.common.by import By

    driver = chromium()
    try:
        driver.get(server)
        assert draw(driver, (5, -95), (5, 95)) == "1"
        assert len(driver.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 10
        driver.find_element(By.ID, "clear").click()
        assert driver.find_element(By.ID, "label").text == ""
        assert not driver.find_elements(By.CSS_SELECTOR, "#bars .bar")
        assert draw(driver, (-70, -85), (70, -85), (-15, 95)) == "7"
    finally:
        driver.quit()
