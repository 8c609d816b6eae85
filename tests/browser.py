"""Headless Chromium through Selenium, drawing on the serve page; `python -m tests.browser OUT.png` takes the
README's screenshot with this project's model."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium driven by Debian's chromedriver (no Selenium Manager, no network), quit on leaving.

    Its temporary files (the profile's singleton socket, which Chromium leaves behind when chromedriver ends it)
    go to a folder of its own, removed with it, instead of piling up in the system's /tmp.
    """
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=760,620"):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="chromium-") as own_tmp:
        service = webdriver.ChromeService(executable_path=CHROMEDRIVER, env={**os.environ, "TMPDIR": own_tmp})
        driver = webdriver.Chrome(options=options, service=service)
        try:
            yield driver
        finally:
            driver.quit()


def draw(driver: Any, *points: tuple[int, int]) -> str:
    """Press on the pad at the first point (offsets from its centre), drag through the rest with several
    pointer moves per segment, release, and return the label the page shows once it has answered.

    Each move lasts 20 ms, not Selenium's default 250 ms: a stroke of 16 moves took 4 s of waiting."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    pad, label = driver.find_element(By.ID, "pad"), driver.find_element(By.ID, "label")
    actions = ActionChains(driver, duration=20).move_to_element_with_offset(pad, *points[0]).click_and_hold()
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        for step in range(1, 9):
            actions.move_by_offset(round((x1 - x0) * step / 8) - round((x1 - x0) * (step - 1) / 8),
                                   round((y1 - y0) * step / 8) - round((y1 - y0) * (step - 1) / 8))
    actions.release().perform()
    WebDriverWait(driver, 20).until(lambda d: label.text and d.execute_script("return !inFlight && !pending"))
    return label.text


THREE = ((-60, -80), (0, -100), (60, -70), (10, -5), (70, 50), (0, 100), (-65, 70))


def main(out: Path) -> None:
    import uvicorn

    from pipeline.export.onnx_session import class_names, open_session
    from pipeline.inference.prediction import DEFAULT_MODEL
    from pipeline.inference.serving import make_app

    session = open_session(DEFAULT_MODEL)
    config = uvicorn.Config(make_app(session, class_names(session)), host="127.0.0.1", port=0, log_level="warning")
    sock = config.bind_socket()
    sock.listen(config.backlog)
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    try:
        with chromium() as driver:
            driver.get(f"http://127.0.0.1:{sock.getsockname()[1]}/")
            print("the page reads", draw(driver, *THREE))
            driver.save_screenshot(str(out))
    finally:
        server.should_exit = True


if __name__ == "__main__":
    main(Path(sys.argv[1]))
